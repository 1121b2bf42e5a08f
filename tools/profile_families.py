"""Where a training step of each function-class family goes on the GPU (issue 20): one eager bf16 step of
the single-run trainer under torch.profiler, at the papers' size, 41 pairs. Prints the GPU time, the
kernel launches and the kernels that take the most time. Run alone on the GPU:
    python3 tools/profile_families.py [41] [icl-mamba1 icl-transformer icl-s4d]"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from markov_laplace.models.registry import build
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.tasks.regression.task import REGRESSION
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import single_run

pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 41
presets = sys.argv[2:] or ['icl-mamba1', 'icl-transformer', 'icl-s4d']
task, cfg = ICLTaskConfig(task='linear', n_points=pairs), TrainConfig(batch=64, device='cuda', steps=10 ** 6)
for preset in presets:
    tr = single_run(build(preset, REGRESSION.model_io(task)), task, cfg, graph=False, compile=False, prefetch=10)
    for _ in range(3): tr.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5): tr.step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == 'CUDA']
    total = sum(e.self_device_time_total for e in events) / 5 / 1e3
    launches = sum(e.count for e in events) / 5
    print(f'## {preset}, {pairs} pairs: {total:.2f} ms of GPU time per step, {launches:.0f} kernels per step')
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:8]:
        print(f'{e.self_device_time_total / 5 / 1e3:8.3f} ms {e.count // 5:5d}x  {e.key[:110]}')
