"""Merge run directories from GPU tarballs into runs/: `python3 tools/collect_runs.py TGZ [TGZ ...]`.

A tarball over the device tool's 16 MiB per file comes back in parts (runs.tgz.part0, .part1, ...: gpu_sweep.sh
splits it); name any one part and all of them are read, in order.

Run directories at any depth under the tarball's runs/ (runs/<exp>/<run>/, runs/icl/<scale>/<exp>/<run>/).

Keeps, from each tarball, the run directories that finished (they hold summary.json) and the
checkpoints of unfinished batched groups (ckpt-group.pt, ckpt-group.json) and single runs (ckpt.pt),
so that the next sweep resumes them. A finished run never takes a checkpoint along, and a run that
is already finished here keeps its files: only files it lacks are added (evaluations written by a
later call, tools/icl_gpu_call.py), and only when both sides hold the same summary.json; or it is replaced whole by a
redone run (tools/icl_gpu_call.py --redo: trained again for its evaluations) whose replaces.json is the summary.json
here and that has every evaluation CSV the run here has: every file of the run here goes, the redone run's files come
(a redo without one of them is left out and listed, until a call has evaluated it). "Finished"
is the run store's (`store.run_state`): a run whose files do not parse or lack a field is broken,
never taken, and listed.

The tarball's runs/gpu_time.json is merged into this one (`store.merge_gpu_time`: every call of both, once),
never copied over it: a call's file starts from the tree that call was given.
"""
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
from markov_laplace.experiments.store import merge_gpu_time, run_state, write_gpu_time  # noqa: E402
from markov_laplace.storage import read_json  # noqa: E402

CKPTS = ('ckpt-group.pt', 'ckpt-group.json', 'ckpt.pt', 'config.json')


def run_dirs(runs): # a runs/ folder -> the directories that hold a run's or a group's files, at any depth
    "runs/<exp>/<run>/, runs/<scale>/<exp>/<run>/, runs/icl/<scale>/<exp>/<run>/ ...; set-aside runs (.broken-*) left out."
    names = ('summary.json',) + CKPTS
    return sorted({p.parent for n in names for p in runs.rglob(n) if not any(q.startswith('.') for q in p.relative_to(runs).parts)})


def parts(tgz): # a tarball, or one of its parts -> the files that make it, in order
    p = Path(tgz)
    if not re.search(r'\.part\d+$', p.name): return [p]
    stem = p.name.rsplit('.part', 1)[0]
    return sorted(p.parent.glob(stem + '.part*'), key=lambda q: int(q.name.rsplit('.part', 1)[1]))


REPLACES = 'replaces.json'  # in a redone run: the summary of the run it replaces


def collect(tgz, root=ROOT): # -> (finished runs added, unfinished runs kept, files added to finished runs, broken runs, runs replaced)
    finished = resumable = added = replaced = 0
    broken = []
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / 'whole.tgz'
        with open(whole, 'wb') as out:
            for part in parts(tgz): out.write(part.read_bytes())
        with tarfile.open(whole) as tar: tar.extractall(Path(tmp) / 'x', filter='data')
        tmp = str(Path(tmp) / 'x')
        for run in run_dirs(Path(tmp, 'runs')):
            dest = root / 'runs' / run.relative_to(Path(tmp, 'runs'))
            (here, why_here), (there, why) = run_state(dest), run_state(run)
            if here == 'broken': broken.append(f'{dest} (here): {why_here}')
            if (here == 'finished' and there == 'finished' and (run / REPLACES).exists()
                    and read_json(run / REPLACES) == read_json(dest / 'summary.json')):  # a redo of this very run: it takes the run's place
                lacks = sorted(f.name for f in dest.glob('*.csv') if not (run / f.name).exists())
                if lacks:  # never an evaluation lost: the redo waits until it has every one the run here has
                    broken.append(f'{dest} (here) not replaced by its redo in {tgz}: the redo lacks {", ".join(lacks)}'); continue
                for f in dest.iterdir():
                    if f.is_file(): f.unlink()
                for f in run.iterdir():
                    if f.is_file() and not f.name.startswith('ckpt'): shutil.copy2(f, dest / f.name)
                replaced += 1
                continue
            if here == 'finished' and there == 'finished' and read_json(dest / 'summary.json') == read_json(run / 'summary.json'):
                for f in run.iterdir():  # the same run: what a later call evaluated
                    if f.is_file() and not f.name.startswith('ckpt') and not (dest / f.name).exists(): shutil.copy2(f, dest / f.name); added += 1
            if here in ('finished', 'broken'): continue
            if there == 'broken': broken.append(f'{run.relative_to(tmp)} (in {tgz}): {why}'); continue
            if there == 'finished':
                dest.mkdir(parents=True, exist_ok=True)
                for f in run.iterdir():
                    if f.is_file() and not f.name.startswith('ckpt'): shutil.copy2(f, dest / f.name)
                for f in dest.glob('ckpt*'): f.unlink()
                finished += 1
            elif any((run / n).exists() for n in CKPTS[:3]):
                dest.mkdir(parents=True, exist_ok=True)
                for n in CKPTS:
                    if (run / n).exists(): shutil.copy2(run / n, dest / n)
                resumable += 1
        theirs, ours = Path(tmp, 'runs', 'gpu_time.json'), root / 'runs' / 'gpu_time.json'
        if theirs.exists():
            write_gpu_time(ours, merge_gpu_time(read_json(ours) if ours.exists() else {}, read_json(theirs)))
    return finished, resumable, added, broken, replaced


if __name__ == '__main__':
    if len(sys.argv) < 2: sys.exit(__doc__)
    for t in sys.argv[1:]:
        f, r, a, b, x = collect(t)
        print(f'{t}: {f} finished runs added, {x} replaced by their redo, {r} unfinished runs with checkpoints kept, '
              f'{a} files added to finished runs, {len(b)} runs left out (broken, or a redo without an evaluation the run here has)', *b, sep='\n  ')
