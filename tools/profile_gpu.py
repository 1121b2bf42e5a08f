"""Where the time of one batched training step goes on a GPU: `python3 tools/profile_gpu.py [R] [preset]`."""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from markov_laplace.batched import BatchedTrainer
from markov_laplace.models import build
from markov_laplace.train import TaskConfig, TrainConfig

R = int(sys.argv[1]) if len(sys.argv) > 1 else 32
preset = sys.argv[2] if len(sys.argv) > 2 else 'mamba'
task, cfg = TaskConfig(order=1, length=512), TrainConfig(batch=64, device='cuda')
tr = BatchedTrainer([build(preset, d_conv=5, seed=s) if preset == 'mamba' else build(preset, seed=s) for s in range(R)],
                    task, cfg, list(range(R)), prefetch=10, graph=False)
for _ in range(5): tr.step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
    for _ in range(3): tr.step()
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by='self_cuda_time_total', row_limit=30, max_name_column_width=60))
