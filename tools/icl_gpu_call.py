"""One device call of issue 21's regression grids: train, evaluate, pack what came of it.

A call of the device tool gets a fresh machine, at most 10 minutes, and brings back at most 8 files of at most 16 MiB from
$OUT. A regression run's weights (~40 MB) never come back, so every evaluation that needs them (tools/icl_evaluate.py:
ood.csv, cross.csv, excess.csv, probe.csv) runs here, right after the training, in the same call. This tool does, in order:

1. trains the runs of GRID... selected by `--only` at `--scale` (`sweep --engine python --batch --prefetch 50 --root ROOT
   --gpu-time ROOT/gpu_time.json`, plus the sweep flags given after `--`), stopped by `timeout` (SIGTERM) after
   `--train-s` seconds: the sweep records its wall time and every run's steps reached in gpu_time.json on the way out;
   With `--redo`, a selected run that is finished but lacks an evaluation and whose weights are not here (they went with
   an earlier machine) is trained again, from step 0, with the same config and seed: its files but config.json and
   checkpoints move to <run>/.redone/ first (never packed), and a redo that finishes gets `replaces.json`, the summary
   it replaces. A redo cut by the budget leaves its checkpoint: the same command again, on the held machine, resumes it.
   tools/collect_runs.py then replaces the run here with the redone one (only where the run here is the one replaced);
2. evaluates the runs that finished in this call, and the finished runs whose weights are here (an earlier call of the
   held machine trained them) but that lack an evaluation, with `--device`, stopped after `--eval-s`
   seconds plus whatever of `--train-s` the training left unused (the call stays within the two budgets' sum): first
   ood, cross and excess for every run, then the probes (the costliest), so a short budget loses the probes first;
3. packs every file under ROOT/<folder>/<scale>/ written in this call and gpu_time.json, weights and checkpoints left
   out, into OUT/icl_gpu.tgz; over `--max-mib` it is split into icl_gpu.tgz.part0, .part1, ... (`cat` them back);
4. prints one line per selected run: its state, steps reached of the run's steps, final error, the evaluation CSVs.

The sweep's and the evaluations' own output goes to OUT/icl_gpu.log (the device tool shows only the last 12,000
characters of a call). Run it through tools/icl_gpu_call.sh, which sources tools/gpu_env.sh first (GPU.md):

    bash tools/icl_gpu_call.sh grids/icl_main.yaml --only '*task=sparse_linear_preset=icl-transformer_*' --train-s 420 --eval-s 90
    bash tools/icl_gpu_call.sh grids/icl_main.yaml --scale cpu --device cpu --only '*task=linear_preset=icl-s4d-tiny_*' -- --steps 20

Then, on your machine, in the checkout: `tar xzf /work/.device/N/icl_gpu.tgz` (split: `cat .../icl_gpu.tgz.part* | tar xz`).
Exit status 0 when every selected run finished and got every evaluation that applies to it, else 1 (what came is packed).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
TGZ, LOG = 'icl_gpu.tgz', 'icl_gpu.log'
RETURNED_FILES, RETURNED_MIB = 8, 64  # the device tool brings back at most 8 files, 64 MiB together
LEFT_OUT = ('model.pt',)  # weights (git-ignored under runs/icl), like every checkpoint (ckpt*) and hidden file (.lock)
REDONE, REPLACES = '.redone', 'replaces.json'  # a redone run's earlier files (never packed); the summary a redo replaces


def parse(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    sweep_extra = argv[argv.index('--') + 1:] if '--' in argv else []
    argv = argv[:argv.index('--')] if '--' in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog='Arguments after -- go to `markov-laplace sweep` as they are '
                                 '(e.g. -- --compile, or -- --steps 20 for a trial).')
    ap.add_argument('grids', nargs='+', help='grid files (grids/icl_main.yaml ...)')
    ap.add_argument('--only', nargs='+', default=None, metavar='GLOB', help="the runs to train: glob patterns of their directory under ROOT "
                    "(fnmatch: * crosses /), e.g. '*task=sparse_linear_preset=icl-mamba1_*'; default: every run of the grids")
    ap.add_argument('--scale', default='gpu', help='a key of the grids\' scales (default gpu)')
    ap.add_argument('--device', default=None, help='where the evaluations run: cuda or cpu (default: cuda where there is one)')
    ap.add_argument('--train-s', type=float, default=420, help='wall-clock budget of the training, seconds (default 420)')
    ap.add_argument('--eval-s', type=float, default=90, help='wall-clock budget of the evaluations, seconds (default 90), '
                    'plus what the training left of --train-s')
    ap.add_argument('--root', default='runs', help='the runs root (default runs: the committed results)')
    ap.add_argument('--out', default=os.environ.get('OUT'), help='where the tarball and the log go (default: $OUT)')
    ap.add_argument('--prompts', type=int, default=1280, help='prompts per evaluation (default 1280, the papers\')')
    ap.add_argument('--probe-prompts', type=int, default=None, help='prompts of the probe (default: --prompts)')
    ap.add_argument('--redo', action='store_true', help='train again, from step 0 and with the same config, the selected runs that are finished '
                    'but lack an evaluation and whose weights are not here, so that they get their evaluations (the redone run replaces the run)')
    ap.add_argument('--max-mib', type=float, default=16, help='largest returned file, MiB (default 16, the device tool\'s): a larger tarball is split')
    a = ap.parse_args(argv)
    if not a.out: ap.error('--out: no folder given and $OUT is not set')
    if not (a.train_s > 0 and a.eval_s > 0): ap.error(f'--train-s and --eval-s must be > 0 seconds; got {a.train_s}, {a.eval_s}')
    if a.prompts < 1 or (a.probe_prompts is not None and a.probe_prompts < 1): ap.error('--prompts and --probe-prompts must be >= 1')
    if not a.max_mib > 0: ap.error(f'--max-mib must be > 0; got {a.max_mib}')
    for g in a.grids:
        if not Path(g).is_file(): ap.error(f'grid {g!r} is not a file')
    import torch
    a.device = a.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if a.device not in ('cpu', 'cuda') and not a.device.startswith('cuda:'): ap.error(f"--device must be cpu, cuda or cuda:N; got {a.device!r}")
    if a.device.startswith('cuda') and not torch.cuda.is_available(): ap.error(f'--device {a.device}: CUDA is not available on this machine')
    return a, sweep_extra, ap


def bounded(cmd, seconds, log, label):
    "Run `cmd` under coreutils `timeout` (SIGTERM after `seconds`, SIGKILL 60 s later), its output appended to `log`."
    with open(log, 'a') as f:
        f.write(f'\n=== {label}: {" ".join(map(str, cmd))} (budget {seconds:.0f} s)\n'); f.flush()
        t0 = time.perf_counter()
        rc = subprocess.run(['timeout', '-s', 'TERM', '-k', '60', f'{max(seconds, 1):.0f}', *map(str, cmd)], stdout=f, stderr=subprocess.STDOUT,
                            cwd=ROOT).returncode
        took = time.perf_counter() - t0
        f.write(f'=== {label}: exit {rc} after {took:.1f} s\n')
    print(f'{label}: {"stopped by its budget" if rc in (124, 137) else f"exit {rc}"} after {took:.0f} s (budget {seconds:.0f} s)', flush=True)
    return rc, took


def tail(log, n=4):
    "The last `n` lines of the log that are not progress bars (tqdm's carriage returns)."
    lines = [l.split('\r')[-1] for l in Path(log).read_text(errors='replace').splitlines()]
    return [l for l in lines if l.strip() and '%|' not in l][-n:]


def new_files(folders, since):
    "Files under `folders` modified at or after `since`: no weights, checkpoints or hidden files (locks, set-aside runs)."
    out = []
    for top in folders:
        for p in sorted(Path(top).rglob('*')):
            rel = p.relative_to(top).parts
            if not p.is_file() or any(q.startswith('.') for q in rel) or p.name in LEFT_OUT or p.name.startswith('ckpt'): continue
            if p.stat().st_mtime >= since: out.append(p)
    return out


def pack(files, base, out, max_bytes):
    "Tar-gzip `files` (names relative to `base`) into out/icl_gpu.tgz; over `max_bytes`, split into .part0, .part1, ... Returns the paths written."
    tgz = Path(out) / TGZ
    for old in [tgz, *Path(out).glob(TGZ + '.part*')]: old.unlink(missing_ok=True)
    with tarfile.open(tgz, 'w:gz') as tar:
        for f in files: tar.add(f, arcname=str(f.relative_to(base)))
    if tgz.stat().st_size <= max_bytes: return [tgz]
    parts, data = [], tgz.read_bytes()
    for i in range(0, len(data), int(max_bytes)):
        parts.append(Path(out) / f'{TGZ}.part{len(parts)}'); parts[-1].write_bytes(data[i:i + int(max_bytes)])
    tgz.unlink()
    return parts


def missing_evaluations(d, task):
    "The evaluations that apply to a run of `task` whose CSV the run directory `d` lacks."
    from markov_laplace.analysis.icl_evaluate import run_evaluations
    return [e for e in run_evaluations(task) if not (Path(d) / f'{e}.csv').exists()]


def set_aside_for_redo(d):
    "A finished run's files but config.json and checkpoints into d/.redone/ (emptied first): the sweep trains it again, or resumes its redo."
    d, aside = Path(d), Path(d) / REDONE
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for f in d.iterdir():
        if f.is_file() and f.name != 'config.json' and not f.name.startswith(('ckpt', '.')): os.replace(f, aside / f.name)
    return aside


def run_line(rel, cell, before):
    "One selected run, after the call: state, steps reached of its steps, final error, its evaluation CSVs (those that apply)."
    from markov_laplace.analysis.icl_evaluate import run_evaluations
    from markov_laplace.experiments.store import run_state, steps_reached
    from markov_laplace.storage import read_json
    d = Path(cell.out_dir)
    state = run_state(d)[0]
    reached = steps_reached(d) if state != 'broken' else None
    s = read_json(d / 'summary.json') if state == 'finished' else {}
    err = f"final_error {s['final_error']:.4f}" if isinstance(s.get('final_error'), (int, float)) else 'final_error -'
    if before == 'redo' and (d / REPLACES).exists():  # the redo beside the run it replaces: same config and seed, another trajectory
        old = read_json(d / REPLACES).get('final_error')
        err += f" (the run it replaces: {old:.4f})" if isinstance(old, (int, float)) else ''
    evals = run_evaluations(cell.task.task)
    have = [e for e in evals if (d / f'{e}.csv').exists() and (d / 'model.pt').exists() and (d / f'{e}.csv').stat().st_mtime >= (d / 'model.pt').stat().st_mtime]
    wall = f", group {s['group_wall_s']:.0f} s" if isinstance(s.get('group_wall_s'), (int, float)) else ''
    steps = (read_json(d / 'config.json').get('train') or {}).get('steps') if state != 'broken' and (d / 'config.json').exists() else None  # a trial's --steps
    line = (f"{rel}: {before} -> {state}, steps {reached if reached is not None else 0}/{steps or cell.train.steps}, {err}{wall}, "
            f"evaluations {','.join(have) or 'none'}" + (f" (missing {','.join(e for e in evals if e not in have)})" if len(have) < len(evals) else ''))
    return line, state == 'finished' and len(have) == len(evals)


def main(argv=None):
    a, sweep_extra, ap = parse(argv)
    from markov_laplace.experiments.engines import select_runs
    from markov_laplace.experiments.grids import load_sweep
    from markov_laplace.experiments.store import run_state, runs_root
    root, out = runs_root(a.root), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gpu_time = root / 'gpu_time.json'
    cells = select_runs(load_sweep([str(Path(g).resolve()) for g in a.grids], root, a.scale), root, a.only)
    if not cells: ap.error(f'--only {a.only} matches no run of {a.grids} at scale {a.scale!r} under {root}')
    before = {c.out_dir: run_state(c.out_dir)[0] for _, c in cells}
    redo = []  # the run directories set aside to be trained again
    if a.redo:
        for _, c in cells:
            d = Path(c.out_dir)
            if before[c.out_dir] == 'finished' and missing_evaluations(d, c.task.task) and not (d / 'model.pt').exists():
                set_aside_for_redo(d)
                redo.append(c.out_dir)
                before[c.out_dir] = 'redo'
    scale_dirs = sorted({Path(c.out_dir).parent.parent for _, c in cells})  # ROOT/<folder>/<scale>/
    log = out / LOG
    log.write_text('')
    t_start = time.time()
    print(f'{len(cells)} runs selected ({sum(s == "finished" for s in before.values())} finished before'
          f'{f", {len(redo)} to train again for their evaluations" if a.redo else ""}) under '
          f'{", ".join(str(p) for p in scale_dirs)}; device {a.device}; commit {os.environ.get("MARKOV_LAPLACE_COMMIT", "?")}', flush=True)

    here = lambda p: Path(p).resolve().relative_to(ROOT) if Path(p).resolve().is_relative_to(ROOT) else Path(p).resolve()  # as gpu_time.json notes it
    sweep = [sys.executable, '-m', 'markov_laplace', 'sweep', *map(here, a.grids), '--scale', a.scale, '--engine', 'python',
             '--batch', '--prefetch', '50', '--root', here(root), '--gpu-time', here(gpu_time), *(['--only', *a.only] if a.only else []), *sweep_extra]
    _, trained_s = bounded(sweep, a.train_s, log, 'training')
    eval_s = a.eval_s + max(0.0, a.train_s - trained_s)  # a run that finished early leaves its time to the evaluations
    for l in tail(log): print('  ' + l)

    for _, c in cells:  # a redo that finished in this call says which run it replaces (the summary set aside, this call or an earlier one)
        d = Path(c.out_dir)
        if before[c.out_dir] != 'finished' and run_state(d)[0] == 'finished' and (d / REDONE / 'summary.json').exists():
            (d / REPLACES).write_text((d / REDONE / 'summary.json').read_text())
    done_now = [Path(c.out_dir) for _, c in cells if run_state(c.out_dir)[0] == 'finished' and (Path(c.out_dir) / 'model.pt').exists()
                and (before[c.out_dir] != 'finished' or missing_evaluations(c.out_dir, c.task.task))]
    if done_now:
        t0, tool = time.perf_counter(), ROOT / 'tools' / 'icl_evaluate.py'
        common = ['--runs', *done_now, '--device', a.device, '--prompts', a.prompts, *(['--probe-prompts', a.probe_prompts] if a.probe_prompts else []), '--quiet']
        for only in (['ood', 'cross', 'excess'], ['probe']):
            left = eval_s - (time.perf_counter() - t0)
            if left < 1: print(f'evaluations ({" ".join(only)}): no budget left', flush=True); break
            where = scale_dirs[0] if len(scale_dirs) == 1 else root
            bounded([sys.executable, tool, where, *common, '--only', *only], left, log, f'evaluations ({" ".join(only)})')
    else: print('evaluations: no run finished in this call or lacks an evaluation with its weights here', flush=True)

    ok, lines = True, []
    for _, c in cells:
        line, good = run_line(Path(c.out_dir).relative_to(root).as_posix(), c, before[c.out_dir])
        lines.append(line); ok &= good
    files = new_files(scale_dirs, t_start) + ([gpu_time] if gpu_time.exists() and gpu_time.stat().st_mtime >= t_start else [])
    for d in done_now:  # a run evaluated here: its identity files too, so that collect_runs finds the run and matches its summary
        files += [d / n for n in ('config.json', 'summary.json', REPLACES) if (d / n).exists() and d / n not in files]
    written = pack(files, root.parent, out, a.max_mib * 2 ** 20)
    returned = [p for p in out.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in returned)
    print(f'packed {len(files)} files into {", ".join(p.name for p in written)} ({sum(p.stat().st_size for p in written) / 2 ** 20:.2f} MiB) in {out}; '
          f'{len(returned)} files, {size / 2 ** 20:.2f} MiB there' +
          (f' -- OVER the device tool\'s {RETURNED_FILES} files / {RETURNED_MIB} MiB' if len(returned) > RETURNED_FILES or size > RETURNED_MIB * 2 ** 20 else ''))
    print(*lines, sep='\n', flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
