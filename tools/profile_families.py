"""Where a training step of each function-class family goes on the GPU (issue 20): one bf16 step of the single-run
trainer under torch.profiler, at the papers' size. Prints, per family, the GPU time against the wall time of a step (the
difference: the GPU waiting for launches), the kernel launches and the kernels that take the most time. Run alone on the GPU:
    python3 tools/profile_families.py [PAIRS] [--compiled] [PRESET ...]
PAIRS 41 by default; --compiled profiles the step as the fastest bench rows run it (torch.compile, fused AdamW; no CUDA
graph, so that every kernel shows); the default is the eager step. Presets: icl-mamba1 icl-transformer icl-s4d."""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from markov_laplace.models.registry import build
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.tasks.regression.task import REGRESSION
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import single_run

args = sys.argv[1:]
compiled = '--compiled' in args
args = [a for a in args if a != '--compiled']
pairs = int(args.pop(0)) if args and args[0].isdigit() else 41
presets = args or ['icl-mamba1', 'icl-transformer', 'icl-s4d']
task, cfg = ICLTaskConfig(task='linear', n_points=pairs), TrainConfig(batch=64, device='cuda', steps=10 ** 6)
for preset in presets:
    t0 = time.time()
    tr = single_run(build(preset, REGRESSION.model_io(task)), task, cfg, graph=False, compile=compiled, prefetch=10, fused=compiled)
    for _ in range(3): tr.step()
    torch.cuda.synchronize()
    first = time.time() - t0
    t0 = time.perf_counter()
    for _ in range(20): tr.step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 20 * 1e3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5): tr.step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == 'CUDA']
    total = sum(e.self_device_time_total for e in events) / 5 / 1e3
    launches = sum(e.count for e in events) / 5
    how = 'compiled, fused AdamW' if compiled else 'eager'
    print(f'## {preset}, {pairs} pairs, {how}: {total:.2f} ms of GPU time in a step of {wall:.2f} ms (wall, no graph), '
          f'{launches:.0f} kernels per step; first 3 steps {first:.1f} s')
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:12]:
        print(f'{e.self_device_time_total / 5 / 1e3:8.3f} ms {e.count // 5:5d}x  {e.key[:110]}')
