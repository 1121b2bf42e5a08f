"""Where the time of one batched training step goes on a GPU, and how the scan's chunk length changes it.

    python3 tools/profile_gpu.py [R] [preset]        # profile table of R runs sharing an eager step
    python3 tools/profile_gpu.py chunks [R]           # graphed step time for chunk lengths 16, 32, 64
    python3 tools/profile_gpu.py parts [R]            # compiled step: data vs step, R and 2R runs, profile table
    python3 tools/profile_gpu.py presets [R]          # eager against compiled graphed step: mamba, 1- and 2-layer transformer
    python3 tools/profile_gpu.py groups [w5 L4 tf2 d32]  # whole sweep groups alone, by phase: compile, steps, evaluations
"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from markov_laplace.batched import BatchedTrainer, task_evaluators
from markov_laplace.bench import time_ms
from markov_laplace.models import build
from markov_laplace.train import TaskConfig, TrainConfig

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
    "One sweep group alone (8000 steps, an evaluation every 200): seconds in setup, compile + capture, steps, evaluations."
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    gcfg = TrainConfig(steps=steps, batch=64, device=device)
    runs = [(k, s) for k in orders for s in seeds]
    tasks = [TaskConfig(order=k, length=length) for k, _ in runs]
    t0 = time.perf_counter()
    tr = BatchedTrainer([build(preset, seed=s, **over) for _, s in runs], tasks, gcfg, [s for _, s in runs], prefetch=50, compile=True)
    evs = task_evaluators(tr.tasks, gcfg, device)  # as train_batched makes them
    sync(); t = dict(setup=time.perf_counter() - t0, compile=0.0, steps=0.0, evaluations=0.0)
    def timed(part, fn):
        a = time.perf_counter(); fn(); sync(); t[part] += time.perf_counter() - a
    n_eval = 1; timed('evaluations', lambda: tr.evaluate(evs))
    timed('compile', lambda: [tr.step() for _ in range(5)])  # warm-up steps: compilation and the graph capture
    bounds = [5, *range(200, steps, 200), steps]  # an evaluation after every 200th step and the last
    for a, b in zip(bounds, bounds[1:]):
        timed('steps', lambda: [tr.step() for _ in range(a, b)])
        timed('evaluations', lambda: (tr.evaluate(evs), tr.take_losses())); n_eval += 1
    R = len(runs)
    print(f"{name} R={R}: total {time.perf_counter() - t0:.1f} s = setup {t['setup']:.1f} + first 5 steps (compile, capture) "
          f"{t['compile']:.1f} + {steps - 5} steps {t['steps']:.1f} ({1e3 * t['steps'] / (steps - 5) / R:.3f} ms per run-step) "
          f"+ {n_eval} evaluations {t['evaluations']:.1f}", flush=True)

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
    for data in ('per_run', 'joint'):  # what drawing 50 steps of data costs, per step
        tr = trainer(R, data=data, prefetch=50, graph=False)
        print(f'R={R} data={data}: {time_ms(tr._draw, 5, 2, "cuda") / 50:.3f} ms per step for the data', flush=True)
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
