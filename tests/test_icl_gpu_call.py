"""tools/icl_gpu_call.sh, the one command of a device call of the regression grids, at the cpu scale: one tiny run of
grids/icl_main.yaml trained 20 steps under a wall-clock budget, evaluated on the CPU, packed. The tarball holds the
run's config, history, curve.csv, summary.json, the four evaluation CSVs of a linear run and gpu_time.json; no weights,
no checkpoint, no lock. The printed line gives the steps reached and the final error of the summary."""
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from markov_laplace.analysis.icl_evaluate import OOD_COLUMNS, PROBE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
RUN = 'icl/cpu/icl_main/n_points=11_name=regression_task=linear_preset=icl-transformer-tiny_lr=0.001_seed=1'
ENV = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'OUT': ''}


def call(*args, timeout=300):
    return subprocess.run(['bash', str(ROOT / 'tools' / 'icl_gpu_call.sh'), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def test_one_call_trains_evaluates_and_packs_a_tiny_run(tmp_path):
    root, out = tmp_path / 'runs', tmp_path / 'out'
    r = call('grids/icl_main.yaml', '--scale', 'cpu', '--device', 'cpu', '--only', '*task=linear_preset=icl-transformer-tiny_*',
             '--root', root, '--out', out, '--train-s', 120, '--eval-s', 1, '--prompts', 16, '--probe-prompts', 4, '--', '--steps', 20)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trained, = [float(l.split(' after ')[1].split()[0]) for l in r.stdout.splitlines() if l.startswith('training: exit 0 after ')]
    budget, = [float(l.rsplit('(budget ', 1)[1].split()[0]) for l in r.stdout.splitlines() if l.startswith('evaluations (ood cross excess): ')]
    assert budget >= 1 + 120 - trained - 2  # 1 s of --eval-s and what the training left of its 120 s (the printed times are rounded)
    assert (root / RUN / 'model.pt').exists()  # the weights stay where they were trained
    summary = json.loads((root / RUN / 'summary.json').read_text())
    line, = [l for l in r.stdout.splitlines() if l.startswith(RUN + ':')]
    assert f'new -> finished, steps 20/20, final_error {summary["final_error"]:.4f}' in line and 'evaluations ood,cross,excess,probe' in line
    assert sorted(p.name for p in out.iterdir()) == ['icl_gpu.log', 'icl_gpu.tgz']
    with tarfile.open(out / 'icl_gpu.tgz') as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / 'back', filter='data')
    run = f'runs/{RUN}'
    assert {f'{run}/{f}' for f in ('config.json', 'history.csv', 'curve.csv', 'summary.json', 'ood.csv', 'cross.csv', 'excess.csv', 'probe.csv')} \
        | {'runs/gpu_time.json'} == names
    back = tmp_path / 'back' / run
    assert json.loads((back / 'summary.json').read_text()) == summary
    assert list(pd.read_csv(back / 'ood.csv').columns) == OOD_COLUMNS and list(pd.read_csv(back / 'probe.csv').columns) == PROBE_COLUMNS
    assert pd.read_csv(back / 'curve.csv').k.max() == 200  # the run's own curve, k = 0..200
    gpu_time = json.loads((tmp_path / 'back' / 'runs' / 'gpu_time.json').read_text())['grids']
    (entry,) = gpu_time.values()
    assert entry['steps'] == {RUN.rsplit('/', 1)[1]: 20} and entry['finished'] == 1 and entry['calls'][0]['wall_s'] > 0
    # tools/collect_runs.py finds the run four folders down (runs/icl/<scale>/<exp>/<run>) and takes it
    spec = importlib.util.spec_from_file_location('collect_runs', ROOT / 'tools' / 'collect_runs.py')
    collect = importlib.util.module_from_spec(spec); spec.loader.exec_module(collect)
    assert collect.collect(out / 'icl_gpu.tgz', root=tmp_path / 'here') == (1, 0, 0, [], 0)
    assert (tmp_path / 'here' / run / 'probe.csv').read_bytes() == (back / 'probe.csv').read_bytes()
    here_time = tmp_path / 'here' / 'runs' / 'gpu_time.json'
    assert json.loads(here_time.read_text())['grids'] == gpu_time  # merged into a checkout that had none
    # the same tarball again, into a checkout whose run lacks an evaluation (as when a later call wrote it):
    # the missing file is added, nothing else is touched, and the call is not counted twice
    (tmp_path / 'here' / run / 'probe.csv').unlink()
    assert collect.collect(out / 'icl_gpu.tgz', root=tmp_path / 'here') == (0, 0, 1, [], 0)
    assert (tmp_path / 'here' / run / 'probe.csv').read_bytes() == (back / 'probe.csv').read_bytes()
    assert json.loads(here_time.read_text())['grids'] == gpu_time
    # the same command again: nothing left to train or evaluate, nothing new to pack but the time record
    r = call('grids/icl_main.yaml', '--scale', 'cpu', '--device', 'cpu', '--only', '*task=linear_preset=icl-transformer-tiny_*',
             '--root', root, '--out', out, '--train-s', 120, '--eval-s', 90, '--', '--steps', 20)
    assert r.returncode == 0 and 'no run finished in this call or lacks an evaluation' in r.stdout and 'finished -> finished, steps 20/20' in r.stdout
    with tarfile.open(out / 'icl_gpu.tgz') as tar: assert set(tar.getnames()) <= {'runs/gpu_time.json'}
    # its weights gone with the machine and an evaluation missing: --redo trains it again from step 0 (its earlier files
    # set aside in .redone/, never packed) and evaluates it; the redone run says which summary it replaces
    (root / RUN / 'model.pt').unlink(); (root / RUN / 'probe.csv').unlink()
    r = call('grids/icl_main.yaml', '--scale', 'cpu', '--device', 'cpu', '--only', '*task=linear_preset=icl-transformer-tiny_*', '--redo',
             '--root', root, '--out', out, '--train-s', 120, '--eval-s', 90, '--prompts', 16, '--probe-prompts', 4, '--', '--steps', 20)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert '1 to train again for their evaluations' in r.stdout and f'{RUN}: redo -> finished, steps 20/20' in r.stdout
    redone = json.loads((root / RUN / 'summary.json').read_text())
    assert f"final_error {redone['final_error']:.4f} (the run it replaces: {summary['final_error']:.4f})" in r.stdout
    assert json.loads((root / RUN / 'replaces.json').read_text()) == summary and redone != summary
    assert (root / RUN / '.redone' / 'summary.json').exists() and (root / RUN / 'model.pt').exists()
    with tarfile.open(out / 'icl_gpu.tgz') as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / 'back2', filter='data')
    assert f'{run}/replaces.json' in names and f'{run}/probe.csv' in names and not any('.redone' in n for n in names)
    # here, the run it replaces gives way to it whole; the same tarball again changes nothing more
    assert collect.collect(out / 'icl_gpu.tgz', root=tmp_path / 'here') == (0, 0, 0, [], 1)
    assert json.loads((tmp_path / 'here' / run / 'summary.json').read_text()) == redone
    assert (tmp_path / 'here' / run / 'probe.csv').read_bytes() == (tmp_path / 'back2' / run / 'probe.csv').read_bytes()
    assert collect.collect(out / 'icl_gpu.tgz', root=tmp_path / 'here') == (0, 0, 0, [], 0)
    # weights here and an evaluation missing: evaluated, not trained again, with or without --redo
    (root / RUN / 'probe.csv').unlink()
    r = call('grids/icl_main.yaml', '--scale', 'cpu', '--device', 'cpu', '--only', '*task=linear_preset=icl-transformer-tiny_*', '--redo',
             '--root', root, '--out', out, '--train-s', 120, '--eval-s', 90, '--prompts', 16, '--probe-prompts', 4, '--', '--steps', 20)
    assert r.returncode == 0 and '0 to train again' in r.stdout and 'finished -> finished, steps 20/20' in r.stdout
    assert json.loads((root / RUN / 'summary.json').read_text()) == redone and (root / RUN / 'probe.csv').exists()
    with tarfile.open(out / 'icl_gpu.tgz') as tar: names = set(tar.getnames())
    assert {f'{run}/summary.json', f'{run}/config.json', f'{run}/probe.csv'} <= names  # the run's identity beside its new evaluation
    (tmp_path / 'here' / run / 'probe.csv').unlink()
    assert collect.collect(out / 'icl_gpu.tgz', root=tmp_path / 'here') == (0, 0, 1, [], 0)  # so the evaluation lands here


def test_a_tarball_over_the_limit_is_split_into_parts_that_join_back(tmp_path):
    spec = importlib.util.spec_from_file_location('icl_gpu_call', ROOT / 'tools' / 'icl_gpu_call.py')
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    files = []
    for i in range(3):
        f = tmp_path / 'runs' / 'icl' / f'r{i}' / 'curve.csv'; f.parent.mkdir(parents=True)
        f.write_bytes(os.urandom(3000)); files.append(f)  # incompressible
    out = tmp_path / 'out'; out.mkdir()
    parts = tool.pack(files, tmp_path, out, max_bytes=4000)
    assert [p.name for p in parts] == [f'icl_gpu.tgz.part{i}' for i in range(len(parts))] and len(parts) >= 3
    assert all(p.stat().st_size <= 4000 for p in parts) and not (out / 'icl_gpu.tgz').exists()
    (tmp_path / 'joined.tgz').write_bytes(b''.join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / 'joined.tgz') as tar: assert sorted(tar.getnames()) == [f'runs/icl/r{i}/curve.csv' for i in range(3)]
    assert tool.pack(files[:1], tmp_path, out, max_bytes=2 ** 20) == [out / 'icl_gpu.tgz'] and not list(out.glob('*.part*'))


def test_a_pattern_that_matches_no_run_is_one_clear_error(tmp_path):
    r = call('grids/icl_main.yaml', '--scale', 'cpu', '--device', 'cpu', '--only', '*no-such-run*', '--root', tmp_path / 'runs', '--out', tmp_path)
    assert r.returncode == 2 and "--only ['*no-such-run*'] matches no run" in r.stderr and not (tmp_path / 'runs').exists()


def test_gpu_sweep_brings_back_runs_at_any_depth_without_regression_weights(tmp_path):
    "tools/gpu_sweep.sh wait: the runs finished since the last look, at depth 2 (runs/<exp>/<run>) and 4 (runs/icl/<scale>/<exp>/<run>)."
    repo = tmp_path / 'repo'
    deep, shallow, old = repo / 'runs/icl/gpu/icl_main/r1', repo / 'runs/fig1/order=1', repo / 'runs/fig1/order=2'
    for d, names in ((deep, ['config.json', 'summary.json', 'curve.csv', 'probe.csv', 'model.pt', 'ckpt-group.pt', '.lock']),
                     (shallow, ['config.json', 'summary.json', 'model.pt']), (old, ['config.json', 'summary.json'])):
        d.mkdir(parents=True)
        for n in names: (d / n).write_text('{}')
    os.utime(old / 'summary.json', (1, 1))  # finished before the last look
    (tmp_path / 'sweep.mark').touch(); os.utime(tmp_path / 'sweep.mark', (2, 2))
    out = tmp_path / 'out'; out.mkdir()
    r = subprocess.run(['bash', str(ROOT / 'tools' / 'gpu_sweep.sh'), 'wait', '1'], capture_output=True, text=True,
                       env={**os.environ, 'SWEEP_DIR': str(tmp_path), 'OUT': str(out)}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    with tarfile.open(out / 'runs.tgz') as tar: names = set(tar.getnames())
    assert {f'runs/icl/gpu/icl_main/r1/{n}' for n in ('config.json', 'summary.json', 'curve.csv', 'probe.csv')} <= names
    assert not {f'runs/icl/gpu/icl_main/r1/{n}' for n in ('model.pt', 'ckpt-group.pt', '.lock')} & names  # git-ignored, too large
    assert 'runs/fig1/order=1/model.pt' in names and not any(n.startswith('runs/fig1/order=2') for n in names)  # Markov weights are committed



def test_a_large_runs_tgz_comes_back_in_parts_that_collect_runs_reads(tmp_path):
    "Over 15 MiB (a group's checkpoint), gpu_sweep.sh wait splits runs.tgz into parts under the tool's 16 MiB per file; collect_runs reads them all."
    run = tmp_path / 'repo/runs/fig1/order=1_seed=0'; run.mkdir(parents=True)
    (run / 'config.json').write_text((ROOT / 'runs/fig1/order=1_preset=mamba_seed=0/config.json').read_text())
    import torch
    noise = torch.randint(0, 256, (17 * 2 ** 20,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))  # incompressible
    torch.save({'noise': noise}, run / 'ckpt-group.pt'); (run / 'ckpt-group.json').write_text('{}')
    blob = (run / 'ckpt-group.pt').read_bytes()
    (tmp_path / 'sweep.mark').touch(); os.utime(tmp_path / 'sweep.mark', (2, 2))
    out = tmp_path / 'out'; out.mkdir()
    r = subprocess.run(['bash', str(ROOT / 'tools' / 'gpu_sweep.sh'), 'wait', '1'], capture_output=True, text=True,
                       env={**os.environ, 'SWEEP_DIR': str(tmp_path), 'OUT': str(out)}, timeout=60)
    assert r.returncode == 0 and 'runs.tgz in 2 parts' in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir() if 'runs' in p.name) == ['runs.tgz.part0', 'runs.tgz.part1']
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in out.iterdir())
    spec = importlib.util.spec_from_file_location('collect_runs', ROOT / 'tools' / 'collect_runs.py')
    cr = importlib.util.module_from_spec(spec); spec.loader.exec_module(cr)
    dest = tmp_path / 'checkout'
    finished, resumable, added, broken, _ = cr.collect(out / 'runs.tgz.part1', root=dest)  # any part names the whole
    assert (finished, resumable, added, broken) == (0, 1, 0, [])
    assert (dest / 'runs/fig1/order=1_seed=0/ckpt-group.pt').read_bytes() == blob

@pytest.mark.gpu
def test_the_evaluations_run_on_cuda(tmp_path):
    "The cpu-scale run trained on the CPU (its grid says so), its evaluations on the GPU, as on the device machine."
    root, out = tmp_path / 'runs', tmp_path / 'out'
    r = call('grids/icl_main.yaml', '--scale', 'cpu', '--device', 'cuda', '--only', '*task=linear_preset=icl-mamba1-tiny_*',
             '--root', root, '--out', out, '--train-s', 120, '--eval-s', 120, '--prompts', 64, '--probe-prompts', 8, '--', '--steps', 20)
    assert r.returncode == 0 and 'evaluations ood,cross,excess,probe' in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_icl_evaluate_refuses_runs_without_weights_under_its_root(tmp_path):
    "tools/icl_evaluate.py --runs: each directory must be a run with model.pt under the root, else one error naming it."
    spec = importlib.util.spec_from_file_location('icl_evaluate_tool', ROOT / 'tools' / 'icl_evaluate.py')
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    run = tmp_path / 'cpu' / 'exp' / 'r1'; run.mkdir(parents=True)
    (run / 'config.json').write_text(json.dumps(dict(task=dict(name='regression', task='linear', d=3, n_points=6), preset='icl-s4d-tiny')))
    with pytest.raises(SystemExit) as e: tool.main([str(tmp_path), '--runs', str(run), '--device', 'cpu'])
    assert e.value.code == 2


def test_a_run_cut_by_its_training_budget_resumes_in_the_same_command_again(tmp_path):
    "GPU.md's chain of two calls: the budget stops the sweep mid-run (SIGTERM), the checkpoint stays; the same command resumes from it."
    from markov_laplace.experiments.store import steps_reached
    root, out = tmp_path / 'runs', tmp_path / 'out'
    args = ['grids/icl_main.yaml', '--scale', 'cpu', '--device', 'cpu', '--only', '*task=linear_preset=icl-transformer-tiny_*',
            '--root', root, '--out', out, '--train-s', 15, '--eval-s', 5, '--', '--steps', 1_000_000]  # far more steps than 15 s allow
    first = call(*args)
    reached = steps_reached(root / RUN)
    assert first.returncode == 1 and reached is not None and reached >= 100, first.stdout[-2000:]  # a checkpoint every 100 steps (cpu scale)
    assert f'new -> resumable, steps {reached}/1000000' in first.stdout
    ckpt, = (root / RUN).parent.rglob('ckpt*.pt')  # the run's, or its batched group's (one run: its histories' only entry)
    history = torch.load(ckpt, map_location='cpu', weights_only=True)['histories'][0]
    second = call(*args)
    again = steps_reached(root / RUN)
    assert second.returncode == 1 and again > reached and f'resumable -> resumable, steps {again}/1000000' in second.stdout, second.stdout[-2000:]
    resumed = torch.load(ckpt, map_location='cpu', weights_only=True)['histories'][0]
    pd.testing.assert_frame_equal(pd.DataFrame(resumed[:len(history)]), pd.DataFrame(history))  # the first call's rows kept (NaN: step 0's)
    assert [h['step'] for h in resumed] == list(range(0, again + 1, 100))  # continued from the checkpoint, not restarted
    entry, = json.loads((root / 'gpu_time.json').read_text())['grids'].values()
    assert len(entry['calls']) == 2 and entry['steps'] == {RUN.rsplit('/', 1)[1]: again} and entry['finished'] == 0


def test_a_redo_never_replaces_a_run_with_fewer_evaluations(tmp_path):
    "collect_runs replaces a run by its redo only where the redo has every evaluation CSV the run here has."
    spec = importlib.util.spec_from_file_location('collect_runs', ROOT / 'tools' / 'collect_runs.py')
    cr = importlib.util.module_from_spec(spec); spec.loader.exec_module(cr)
    old, new = dict(loss=0.5, steps=20, final_error=0.9), dict(loss=0.4, steps=20, final_error=0.8)
    here = tmp_path / 'here' / 'runs' / 'icl' / 'gpu' / 'e' / 'r'; here.mkdir(parents=True)
    cfg = json.dumps(dict(task={'task': 'linear'}, preset='p', model={}, train={}))
    for name, text in (('config.json', cfg), ('summary.json', json.dumps(old)), ('curve.csv', 'k\n1\n'), ('probe.csv', 'depth\n0\n')):
        (here / name).write_text(text)
    redo = tmp_path / 'tar' / 'runs' / 'icl' / 'gpu' / 'e' / 'r'; redo.mkdir(parents=True)
    for name, text in (('config.json', cfg), ('summary.json', json.dumps(new)), ('replaces.json', json.dumps(old)), ('curve.csv', 'k\n2\n')):
        (redo / name).write_text(text)
    with tarfile.open(tmp_path / 'r.tgz', 'w:gz') as tar: tar.add(tmp_path / 'tar' / 'runs', arcname='runs')
    finished, resumable, added, left, replaced = cr.collect(tmp_path / 'r.tgz', root=tmp_path / 'here')
    assert (finished, resumable, added, replaced) == (0, 0, 0, 0) and len(left) == 1 and 'lacks probe.csv' in left[0]
    assert json.loads((here / 'summary.json').read_text()) == old and (here / 'probe.csv').exists()  # untouched
    (redo / 'probe.csv').write_text('depth\n1\n')  # evaluated since: now it takes the run's place
    with tarfile.open(tmp_path / 'r.tgz', 'w:gz') as tar: tar.add(tmp_path / 'tar' / 'runs', arcname='runs')
    assert cr.collect(tmp_path / 'r.tgz', root=tmp_path / 'here') == (0, 0, 0, [], 1)
    assert json.loads((here / 'summary.json').read_text()) == new and (here / 'probe.csv').read_text() == 'depth\n1\n'
