"""Where the time of the training step (training/01_step's `BatchedTrainer.step`, the one step) goes on a GPU, and how the scan's chunk length changes it.

    python3 tools/profile_gpu.py [R] [preset]        # profile table of R runs sharing an eager step
    python3 tools/profile_gpu.py chunks [R]           # graphed step time for chunk lengths 16, 32, 64
    python3 tools/profile_gpu.py parts [R]            # compiled step: data vs step, R and 2R runs, profile table
    python3 tools/profile_gpu.py presets [R]          # eager against compiled graphed step: mamba, 1- and 2-layer transformer
    python3 tools/profile_gpu.py groups [w5 L4 tf2 d32]  # whole sweep groups alone (train_batched): warm-up and compile, then the rest
"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from markov_laplace.training.loop import train_batched
from markov_laplace.training.step import BatchedTrainer
from markov_laplace.bench import time_ms
from markov_laplace.models.registry import build
from markov_laplace.tasks.markov.task import TaskConfig
from markov_laplace.training.config import TrainConfig

task, cfg = TaskConfig(order=1, length=512), TrainConfig(batch=64, device='cuda')
model = lambda preset, s, **over: build(preset, seed=s, **({'d_conv': 5} if preset == 'mamba' else {}), **over)


def trainer(n, preset='mamba', **kw):
    "n runs (seeds 0..n-1) of the preset sharing one step; kw: model overrides (over=...) and BatchedTrainer options."
    over = kw.pop('over', {})
    return BatchedTrainer([model(preset, s, **over) for s in range(n)], task, cfg, list(range(n)), **kw)


def profile_table(tr, activities, rows, width):
    "Kernel table of three steps after five warm-up steps."
    for _ in range(5): tr.step()
    torch.cuda.synchronize()
    with profile(activities=activities) as p:
        for _ in range(3): tr.step()
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by='self_cuda_time_total', row_limit=rows, max_name_column_width=width))


def group(name, over, orders, seeds, length=512, steps=8000, preset='mamba', device='cuda'):
    "One sweep group alone, trained by `train_batched` as a sweep trains it (compiled, prefetch 50): its seconds, the first five steps apart."
    gcfg = TrainConfig(steps=steps, batch=64, device=device)
    runs, marks = [(k, s) for k in orders for s in seeds], {}
    def mark(step):  # after the fifth step: setup, the step-0 evaluation, compilation and the capture are done
        if step == 5: torch.cuda.synchronize(); marks['warm'] = time.perf_counter()
    t0 = time.perf_counter()
    train_batched([build(preset, seed=s, **over) for _, s in runs], [TaskConfig(order=k, length=length) for k, _ in runs], gcfg,
                  [s for _, s in runs], prefetch=50, compile=True, progress=False, callback=mark)
    torch.cuda.synchronize()
    total, rest, R = time.perf_counter() - t0, time.perf_counter() - marks['warm'], len(runs)
    print(f"{name} R={R}: total {total:.1f} s = setup, first evaluation and first 5 steps (compile, capture) {total - rest:.1f} "
          f"+ {steps - 5} steps with their evaluations {rest:.1f} ({1e3 * rest / (steps - 5) / R:.3f} ms per run-step)", flush=True)

GROUPS = {'w5': ('Fig 3b, w = 5', dict(d_conv=5), [1, 2, 3, 4], [0, 1, 2], 'mamba'),
          'L4': ('Fig 9, 4 layers', dict(n_layers=4), [1], [0, 1, 2], 'mamba'),
          'tf2': ('Fig 1, 2-layer transformer', dict(n_layers=2), [1, 2, 3, 4], [0, 1, 2], 'transformer'),
          'd32': ('Fig 6, d = 32', dict(d_model=32, d_state=32, d_conv=6), [1, 2, 3, 4, 5], [0, 1, 2], 'mamba')}

if sys.argv[1:2] == ['groups']:
    for k in sys.argv[2:] or list(GROUPS):
        name, over, orders, seeds, preset = GROUPS[k]
        group(name, over, orders, seeds, preset=preset)
elif sys.argv[1:2] == ['chunks']:
    R = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    for chunk in (16, 32, 64):
        tr = trainer(R, over=dict(chunk=chunk), prefetch=50)
        ms = time_ms(lambda: [tr.step() for _ in range(50)], 3, 1, 'cuda') / 50
        print(f'R={R} chunk={chunk}: {ms:.3f} ms per step, {ms / R:.3f} ms per run-step')
elif sys.argv[1:2] == ['presets']:
    R = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    for preset, over in (('mamba', {}), ('transformer', {'n_layers': 1}), ('transformer', {'n_layers': 2})):
        for comp in (False, True):
            tr = trainer(R, preset, over=over, prefetch=50, compile=comp)
            ms = time_ms(lambda: [tr.step() for _ in range(50)], 5, 1, 'cuda') / 50
            print(f'{preset} {over} R={R} {"compiled" if comp else "eager"} + graph: {ms:.3f} ms per step, {ms / R:.4f} per run-step',
                  flush=True)
elif sys.argv[1:2] == ['parts']:
    R = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    tr = trainer(R, prefetch=50, graph=False)  # what drawing 50 steps of data costs, per step
    print(f'R={R}: {time_ms(tr._draw, 5, 2, "cuda") / 50:.3f} ms per step for the data', flush=True)
    for n in (R, 2 * R):  # the compiled, graphed step alone (replays on fixed tokens) and with its data
        tr = trainer(n, prefetch=50, compile=True)
        for _ in range(5): tr.step()
        replay = time_ms(lambda: [tr._graph.replay() for _ in range(50)], 5, 1, 'cuda') / 50
        full = time_ms(lambda: [tr.step() for _ in range(50)], 5, 1, 'cuda') / 50
        print(f'R={n} compiled+graph: replay {replay:.3f} ms ({replay / n:.4f} per run), step with data {full:.3f} ms '
              f'({full / n:.4f} per run)', flush=True)
    profile_table(trainer(R, prefetch=10, graph=False, compile=True), [ProfilerActivity.CUDA], 40, 90)
else:
    R = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    preset = sys.argv[2] if len(sys.argv) > 2 else 'mamba'
    profile_table(trainer(R, preset, prefetch=10, graph=False), [ProfilerActivity.CPU, ProfilerActivity.CUDA], 30, 60)
