"""Every item-5 evaluation of issue 21 for every trained regression run under a root that kept its weights.

For each run directory `<root>/<experiment>/<run>/` with `config.json` and `model.pt`, writes next to it (atomically):
`ood.csv` (linear runs: Garg et al.'s out-of-distribution prompts, beside least squares), `cross.csv` (ReLU-net runs on
linear prompts, linear runs on skewed prompts), `excess.csv` (linear, sparse and skewed runs: paired excess over the
optimum) and `probe.csv` (every run: Grazzi et al.'s probe per depth, with GD iterates on the linear tasks). The
functions are `markov_laplace.analysis.icl_evaluate`; the figure notebooks in `nbs/paper_icl/` read these files.

    python tools/icl_evaluate.py runs/icl --device cuda            # every run, every evaluation
    python tools/icl_evaluate.py runs/icl/cpu --experiment icl_main --probe-prompts 256   # the CPU scale (the committed CSVs: weights kept by a rerun into a scratch root)
    python tools/icl_evaluate.py runs/icl/gpu --runs runs/icl/gpu/icl_main/RUN ... --device cuda   # these runs only
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, installed or not
from markov_laplace.analysis.icl_evaluate import EVALUATIONS, evaluate_run, icl_runs, run_evaluations  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('root', nargs='?', default='runs/icl', help='the ICL runs root (default runs/icl)')
    ap.add_argument('--experiment', default=None, help='one experiment under root (default: every one)')
    ap.add_argument('--runs', nargs='+', default=None, metavar='DIR', help='these run directories under root only (each with model.pt); default: every run with weights')
    ap.add_argument('--only', nargs='+', default=None, choices=EVALUATIONS, help='these evaluations only (default: every one that applies)')
    ap.add_argument('--prompts', type=int, default=1280, help='prompts per evaluation (default 1280, the papers\')')
    ap.add_argument('--probe-prompts', type=int, default=None, help='prompts of the probe, 30 sequences of 81 tokens each (default: --prompts); '
                    'a tiny Mamba-1 on the CPU takes about 2 s per prompt')
    ap.add_argument('--seed', type=int, default=0, help='seed of the prompts (drawn on the CPU; 0: the prompts of baselines.csv)')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='where the models run')
    ap.add_argument('--batch', type=int, default=256, help='prompts per forward pass')
    ap.add_argument('--quiet', action='store_true', help='no progress bars')
    ap.add_argument('--redo', action='store_true', help='recompute CSVs that exist already (default: keep those newer than model.pt)')
    args = ap.parse_args(argv)
    if not Path(args.root).is_dir(): ap.error(f'root {args.root!r} is not a folder')
    if args.prompts < 1 or (args.probe_prompts is not None and args.probe_prompts < 1): ap.error('--prompts and --probe-prompts must be >= 1')
    runs = icl_runs(args.root, args.experiment)
    runs = runs[runs.weights]
    if args.runs is not None:
        asked = {Path(r).resolve() for r in args.runs}
        missing = sorted(str(r) for r in asked - {p.resolve() for p in runs.path})
        if missing: ap.error(f'--runs: not run directories with model.pt under {args.root}: {", ".join(missing)}')
        runs = runs[[p.resolve() in asked for p in runs.path]]
    print(f'{len(runs)} runs with weights under {args.root}' + (f'/{args.experiment}' if args.experiment else ''), flush=True)
    for r in runs.itertuples():
        todo = [w for w in (args.only or run_evaluations(r.task)) if w in run_evaluations(r.task)]
        weights_time = (r.path / 'model.pt').stat().st_mtime
        if not args.redo: todo = [w for w in todo if not ((r.path / f'{w}.csv').exists() and (r.path / f'{w}.csv').stat().st_mtime >= weights_time)]
        if not todo: print(f'{r.experiment}/{r.run}: done before', flush=True); continue
        t0 = time.perf_counter()
        written = evaluate_run(r.path, n_prompts=args.prompts, seed=args.seed, which=todo, device=args.device, batch=args.batch,
                               probe_prompts=args.probe_prompts, progress=not args.quiet)
        print(f'{r.experiment}/{r.run} ({r.preset}, {r.task}): {", ".join(sorted(written))} in {time.perf_counter() - t0:.1f} s', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
