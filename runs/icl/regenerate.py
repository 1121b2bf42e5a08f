"""How runs/icl/{baselines,paired,paper_checks,posterior_k2_blocks}.csv were regenerated (issue 19); run from the repository root.

python runs/icl/regenerate.py STEP OUT_DIR JOBS DEVICE, STEP one of: curves, lasso, paired, checks, blocks.
The curves CSV in OUT_DIR starts as a copy of runs/icl/baselines.csv: the methods not recomputed keep their rows and settings.
paper_checks.csv is the concatenation of `checks` per task; its relu_net rows (the GD-trained nets, 2 x 2,560 nets of 5,000
Adam steps each, at k = 100) came from `python runs/icl/regenerate.py checks OUT 1 cpu relu_net` on one thread of a 2-core CPU
(OMP_NUM_THREADS=1, 620 s), appended to the file."""
import os, shutil, sys, time
from pathlib import Path

import pandas as pd
import torch

from markov_laplace.tasks.regression.curves import (PAIRED_COLUMNS, evaluation_prompts, paired_differences, paper_checks,
                                                    reference_curves, task_config)
from markov_laplace.tasks.regression.optimal import least_squares, sparse_posterior
from markov_laplace.tasks.regression.functions import ICLTaskConfig, sample_prompts

step, out, jobs, device = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out.mkdir(parents=True, exist_ok=True)
curves = out / 'baselines.csv'
if not curves.exists():
    shutil.copy('runs/icl/baselines.csv', curves); shutil.copy('runs/icl/baselines.json', out / 'baselines.json')
MANY = int(os.environ.get('MANY', 12_800))  # ten blocks: the cheap methods, and every verdict
FEW = min(1280, MANY)  # the expensive curves: the papers' count, the first block
CHECK_PROMPTS = int(os.environ.get('CHECK_PROMPTS', 2560))  # per seed, at the papers' k (two blocks: this CPU's budget; more where a machine allows)
CHEAP = {'linear': ['least_squares', 'nearest_neighbours', 'averaging'], 'skewed_linear': ['least_squares', 'nearest_neighbours', 'averaging'],
         'noisy_linear': ['ridge', 'least_squares', 'nearest_neighbours', 'averaging'],
         'sparse_linear': ['sparse_posterior', 'least_squares', 'nearest_neighbours', 'averaging'],
         'relu_net': ['least_squares', 'nearest_neighbours', 'averaging'], 'decision_tree': ['least_squares', 'nearest_neighbours', 'averaging']}
t0 = time.time()
if step == 'curves':
    for task, methods in CHEAP.items():
        reference_curves(task, MANY, methods=methods, device=device, out=curves, progress=True)
elif step == 'lasso':
    reference_curves('sparse_linear', FEW, methods=[f'lasso_{a:g}' for a in (1, 0.1, 0.01, 0.001, 0.0001)], n_jobs=jobs, out=curves, progress=True)
elif step == 'paired':
    parts = [paired_differences('sparse_linear', FEW, n_jobs=jobs, device=device)]
    parts += [paired_differences(t, MANY, methods=CHEAP[t][1:], device=device) for t in ('linear', 'skewed_linear', 'noisy_linear')]
    parts += [paired_differences('sparse_linear', MANY, methods=CHEAP['sparse_linear'][1:], device=device).assign(n_prompts=MANY)]
    pd.concat(parts, ignore_index=True)[PAIRED_COLUMNS].to_csv(out / 'paired.csv', index=False)
elif step == 'checks':
    tasks = sys.argv[5].split(',') if len(sys.argv) > 5 else None
    pd.concat([paper_checks(seed, CHECK_PROMPTS, tasks, jobs, device) for seed in (0, 1)], ignore_index=True).to_csv(out / f'paper_checks_{"_".join(tasks or ["all"])}.csv', index=False)
elif step == 'blocks':  # item 1: how often 1,280 prompts show the posterior above least squares at k = 2
    rows, cfg = [], ICLTaskConfig(task='sparse_linear', n_points=3)
    for seed in range(1, 11 if MANY == 12_800 else 2):
        xs, ys = sample_prompts(cfg, MANY // 1280 * 1280, torch.Generator().manual_seed(1000 + seed))
        d = ((least_squares(xs, ys).double() - ys.double()).square() - (sparse_posterior(xs, ys, 3).double() - ys.double()).square())[:, 2] / 3
        rows += [dict(seed=1000 + seed, block=b, n_prompts=1280, diff=blk.mean().item(), sd=blk.std().item()) for b, blk in enumerate(d.view(-1, 1280))]
    pd.DataFrame(rows).to_csv(out / 'posterior_k2_blocks.csv', index=False)
print(f'{step}: {time.time() - t0:.0f} s')
