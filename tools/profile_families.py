"""Where a training step of each function-class family goes on the GPU (issue 20): one bf16 step of the single-run
trainer under torch.profiler, at the papers' size. Prints, per family, the GPU time against the wall time of a step (the
difference: the GPU waiting for launches), every kernel summed by kind (`bench.kind_table`: matmuls, attention, our scan,
the compiler's fusions, the FFT, the optimizer, ATen's copies, reductions, norms, fills and element-wise kernels) and
the kernels that take the most time. Run alone on the GPU:
    python3 tools/profile_families.py [PAIRS] [--compiled] [--csv DIR] [--device DEV] [PRESET ...]
PAIRS 41 by default; --compiled profiles the step as the fastest bench rows run it (torch.compile, fused AdamW; no CUDA
graph, so that every kernel shows); the default is the eager step. --csv DIR writes each family's kernels
(kernel, kind, ms, launches per step) to DIR/profile_<preset>_<pairs>_<compiled|eager>.csv, as each family finishes.
Presets: icl-mamba1 icl-transformer icl-s4d (icl-s4d-toeplitz: S4D's convolution as a matmul). --device cpu runs the
same on a CPU (operators instead of kernels; tests/test_profile_families.py runs a tiny preset so)."""
import sys
import time
from pathlib import Path

args = sys.argv[1:]
compiled = '--compiled' in args
args = [a for a in args if a != '--compiled']
def option(name, default=None): # the value after `name`, taken out of args
    if name not in args: return default
    i = args.index(name)
    if i + 1 >= len(args): sys.exit(f'profile_families.py: {name} needs a value')
    value = args.pop(i + 1); args.pop(i)
    return value
csv_dir, device = option('--csv'), option('--device', 'cuda')
if csv_dir is not None: csv_dir = Path(csv_dir); csv_dir.mkdir(parents=True, exist_ok=True)

import torch  # after the arguments: a bad one is refused before these imports

from markov_laplace.bench import kind_table, profile_step
from markov_laplace.models.registry import build
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.tasks.regression.task import REGRESSION
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import single_run

sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
pairs = int(args.pop(0)) if args and args[0].isdigit() else 41
presets = args or ['icl-mamba1', 'icl-transformer', 'icl-s4d']
task, cfg = ICLTaskConfig(task='linear', n_points=pairs), TrainConfig(batch=64, device=device, steps=10 ** 6)
how = 'compiled' if compiled else 'eager'
for preset in presets:
    t0 = time.time()
    tr = single_run(build(preset, REGRESSION.model_io(task)), task, cfg, graph=False, compile=compiled, prefetch=10, fused=compiled)
    for _ in range(3): tr.step()
    sync()
    first = time.time() - t0
    t0 = time.perf_counter()
    for _ in range(20): tr.step()
    sync()
    wall = (time.perf_counter() - t0) / 20 * 1e3
    kernels = profile_step(tr.step, device=device, steps=5, warmup=0)
    if csv_dir is not None: kernels.to_csv(csv_dir / f'profile_{preset}_{pairs}_{how}.csv', index=False)
    print(f'## {preset}, {pairs} pairs, {how}{", fused AdamW" if compiled else ""}: {kernels.ms.sum():.2f} ms of {"GPU" if device.startswith("cuda") else "operator"} time '
          f'in a step of {wall:.2f} ms (wall, no graph), {kernels.launches.sum():.0f} {"kernels" if device.startswith("cuda") else "operator calls"} per step; first 3 steps {first:.1f} s')
    print(kind_table(kernels).round(3).to_string())
    for r in kernels.head(12).itertuples():
        print(f'{r.ms:8.3f} ms {r.launches:5.0f}x  {r.kernel[:110]}')
    sys.stdout.flush()
    del tr
    if device.startswith('cuda'): torch.cuda.empty_cache()
