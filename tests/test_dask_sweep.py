"Sweeps on a real Dask LocalCluster of 2 worker processes (issue 23): the numbers of the in-process sweep, a worker killed mid-sweep, a bad cell, a second invocation, two sweeps at once."
import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

distributed = pytest.importorskip('distributed')

from markov_laplace.cli import main
from markov_laplace.experiments.engines import kept_environ, local_cluster, run_sweep
from markov_laplace.experiments.store import LOCK

BASE = dict(length=16, steps=6, batch=4, eval_every=3, eval_size=8, device='cpu', model_overrides=dict(d_model=4, d_state=4))
GRID = dict(experiment='dask', base=BASE, axes=dict(order=[1, 2], seed=[0, 1]))
TOL = dict(rel=1e-6, abs=1e-7)  # float32 training, float64 summaries: the same computation on another process


@pytest.fixture(scope='module')
def client():
    with kept_environ():  # the nanny's OMP_NUM_THREADS=1 ... must not reach the notebooks nbval starts after this module
        cluster = local_cluster(2, gpus=0, dashboard=':0')
        c = distributed.Client(cluster)  # local_cluster returns with its workers up
        yield c
        c.close(); cluster.close()


def losses(results): return {Path(c.out_dir).name: r['loss'] for c, r in results}


def on_disk(results): return {Path(c.out_dir).name: json.loads((Path(c.out_dir) / 'summary.json').read_text()) for c, _ in results}


def assert_clean(root):
    "Every run finished once, nothing half-written: no temporaries, checkpoints, locks."
    left = [p for p in Path(root).rglob('*') if p.name.startswith(('.', 'ckpt')) or p.suffix == '.tmp']
    assert not left, left


def test_same_numbers_as_in_process_and_a_second_invocation_skips(client, tmp_path):
    here = run_sweep(GRID, engine='python', root=tmp_path / 'here', progress=False, batch=True)
    there = run_sweep(GRID, engine='python', root=tmp_path / 'there', progress=False, batch=True, max_batch=2, scheduler=client)
    assert [Path(c.out_dir).name for c, _ in there] == [Path(c.out_dir).name for c, _ in here]
    for k, v in losses(here).items(): assert losses(there)[k] == pytest.approx(v, **TOL)
    assert all(len(r['batched_with']) == 2 for _, r in there)  # max_batch=2: two groups, one per worker
    assert_clean(tmp_path / 'there')
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / 'there').rglob('*') if p.is_file()}
    again = run_sweep(GRID, engine='python', root=tmp_path / 'there', progress=False, batch=True, scheduler=client)
    assert [r for _, r in again] == [r for _, r in there]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing trained or written again


def test_workers_keep_glibcs_trim_threshold(client):
    "Dask's nanny would start every worker with MALLOC_TRIM_THRESHOLD_=65536: torch on the CPU at half speed (local_cluster)."
    if 'MALLOC_TRIM_THRESHOLD_' in os.environ: pytest.skip('set in this environment: the workers inherit it')
    assert set(client.run(lambda: os.environ.get('MALLOC_TRIM_THRESHOLD_')).values()) == {None}
    assert set(client.run(lambda: os.environ.get('OMP_NUM_THREADS')).values()) == {'1'}  # one thread per CPU worker (worker_env)


def test_without_a_shared_filesystem_through_the_cli(tmp_path, monkeypatch, capsys):
    "--workers 2 --no-shared-fs: a LocalCluster started by the sweep, the workers train in their own folder and send the files back."
    monkeypatch.chdir(tmp_path)  # runs/ under tmp_path (--root)
    (tmp_path / 'g.json').write_text(json.dumps(GRID))
    monkeypatch.setenv('OMP_NUM_THREADS', '2'); monkeypatch.delenv('__DASK_PARENT_PID', raising=False)
    before = dict(os.environ)
    assert main(['sweep', 'g.json', '--engine', 'python', '--workers', '2', '--gpus', '0', '--no-shared-fs', '--quiet', '--root', 'runs']) == 0
    assert '4 of 4 runs finished, 0 failed' in capsys.readouterr().out
    assert dict(os.environ) == before  # the cluster's nanny set OMP_NUM_THREADS=1 here for its workers; the sweep put it back
    here = run_sweep(GRID, engine='python', root=tmp_path / 'here', progress=False)
    runs = tmp_path / 'runs' / 'dask'
    for k, v in losses(here).items():
        assert json.loads((runs / k / 'summary.json').read_text())['loss'] == pytest.approx(v, **TOL)
        assert sorted(p.name for p in (runs / k).iterdir()) == ['config.json', 'history.csv', 'model.pt', 'summary.json']
    assert_clean(runs)


def test_a_bad_cell_is_recorded_and_the_rest_finish(client, tmp_path):
    grid = dict(GRID, experiment='bad')
    taken = tmp_path / 'bad' / 'order=2_seed=1'
    taken.mkdir(parents=True)  # the directory of another run: its cell fails on the worker
    (taken / 'config.json').write_text(json.dumps(dict(task={'order': 3}, preset='mamba', model={}, train={})))
    res = run_sweep(grid, engine='python', root=tmp_path, progress=False, scheduler=client)
    assert [('error' in r) for _, r in res] == [False, False, False, True]
    failures = json.loads((tmp_path / 'bad' / 'failures.json').read_text())
    assert list(failures) == [str(taken)] and 'another config' in failures[str(taken)]['error']
    assert len(list((tmp_path / 'bad').glob('*/summary.json'))) == 3


def _patch_oom(on): # run on every worker: groups of more than one run do not fit in memory (on), or do again (off)
    import torch
    from markov_laplace.experiments import engines
    real = getattr(engines.run_group, 'real', engines.run_group)
    def run_group(runs, *a, **kw):
        if len(runs) > 1: raise torch.OutOfMemoryError('CUDA out of memory (simulated)')
        return real(runs, *a, **kw)
    run_group.real = real
    engines.run_group = run_group if on else real


def test_a_group_out_of_memory_is_cut_in_two_on_the_workers(client, tmp_path):
    client.run(_patch_oom, True)
    try: res = run_sweep(dict(GRID, experiment='oom'), engine='python', root=tmp_path, progress=False, batch=True, scheduler=client,
                         timeline=tmp_path / 'timeline.csv')
    finally: client.run(_patch_oom, False)
    assert not any('error' in r for _, r in res) and [len(r['batched_with']) for _, r in res] == [1] * 4
    assert list(pd.read_csv(tmp_path / 'timeline.csv').status).count('oom') == 3  # 4 runs, then 2 + 2, then 1 + 1 + 1 + 1


class _LogAttempts(distributed.WorkerPlugin):
    "On every worker, also one started after a kill: log each group's attempt, and the step its checkpoint resumes it from."
    name = 'log-attempts'
    def __init__(self, log): self.log = str(log)
    def setup(self, worker):
        import torch
        from markov_laplace.experiments import engines
        real, log = getattr(engines.train_batched, 'real', engines.train_batched), self.log
        def train_batched(models, tasks, cfg, seeds, *, ckpt=None, **kw):
            step = torch.load(ckpt, weights_only=True)['histories'][0][-1]['step'] if ckpt is not None and Path(ckpt).exists() else None
            with open(log, 'a') as f: f.write(json.dumps(dict(pid=os.getpid(), group=Path(ckpt).parent.name, resumes_from=step)) + '\n')
            return real(models, tasks, cfg, seeds, ckpt=ckpt, **kw)
        train_batched.real = real
        engines.train_batched = train_batched


def test_a_worker_killed_mid_sweep(client, tmp_path):
    "SIGKILL the worker training a group once it has checkpointed: the group resumes on a worker, every run finishes once."
    grid = dict(experiment='kill', base=dict(BASE, steps=160, eval_every=20), axes=dict(length=[16, 24], seed=[0, 1]))
    out, log = {}, tmp_path / 'attempts.log'
    client.register_plugin(_LogAttempts(log))
    sweep = threading.Thread(target=lambda: out.update(res=run_sweep(grid, engine='python', root=tmp_path / 'runs', progress=False, batch=True,
                                                                     scheduler=client, timeline=tmp_path / 'timeline.csv')))
    sweep.start()
    t0, seen, killed = time.time(), {}, None  # seen: when each group's first checkpoint appeared
    while killed is None and time.time() - t0 < 60 and sweep.is_alive():
        for p in (tmp_path / 'runs').rglob('ckpt-group.pt'): seen.setdefault(p.parent.name, time.time())
        for w, keys in client.processing().items():  # a unit's task key names its first run (`_run_units`)
            if killed is None and any(str(k).startswith(f'unit-{g}-') and time.time() - t > 0.5 for k in keys for g, t in seen.items()):
                killed = client.run(os.getpid, workers=[w])[w]  # a worker a checkpoint or two into its group
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    sweep.join(120)
    client.unregister_worker_plugin(_LogAttempts.name)
    assert killed is not None and not sweep.is_alive()
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    lost = [a for a in attempts if a['pid'] == killed]
    again = [a for a in attempts if lost and a['group'] == lost[0]['group'] and a['pid'] != killed]
    assert len(lost) == 1 and len(again) == 1 and again[0]['resumes_from'] is not None, attempts  # its checkpoint resumed it
    res = out['res']
    assert sorted(Path(c.out_dir).name for c, _ in res) == sorted(p.name for p in (tmp_path / 'runs' / 'kill').iterdir())
    assert len(res) == 4 and not any('error' in r for _, r in res)
    assert on_disk(res) == {Path(c.out_dir).name: r for c, r in res}  # the summaries returned are those on disk: written once
    assert_clean(tmp_path)
    assert killed not in client.run(os.getpid).values()  # the killed worker was replaced
    here = run_sweep(grid, engine='python', root=tmp_path / 'here', progress=False, batch=True)
    for k, v in losses(here).items(): assert losses(res)[k] == pytest.approx(v, **TOL)  # resumed (or restarted): the same numbers
    timeline = pd.read_csv(tmp_path / 'timeline.csv')  # one row per group that finished: the killed attempt left none
    assert sorted(timeline.unit) == ['kill/length=16_seed=0', 'kill/length=24_seed=0'] and set(timeline.status) == {'ok'}


def test_two_sweeps_at_once_never_train_one_run_twice(client, tmp_path):
    "Two sweeps of one experiment started together: each run is trained by one of them; the other reads it back."
    grid = dict(GRID, experiment='twice', base=dict(BASE, steps=30, eval_every=10))
    out = {}
    def sweep(i): out[i] = run_sweep(grid, engine='python', root=tmp_path, progress=False, scheduler=client, poll=0.2)
    threads = [threading.Thread(target=sweep, args=(i,)) for i in (0, 1)]
    for t in threads: t.start()
    for t in threads: t.join(120)
    disk = on_disk(out[0])
    for i in (0, 1):  # had a run been trained twice, one sweep's summary (its wall time) would not be the one on disk
        assert {Path(c.out_dir).name: r for c, r in out[i]} == disk
    assert len(disk) == 4 and not any(Path(tmp_path).rglob(LOCK))
    assert_clean(tmp_path)


@pytest.mark.gpu
def test_workers_share_one_gpu(tmp_path):
    "--workers 2 on one GPU: both pinned to it, each holding a GPU slot; the numbers of the in-process sweep on the GPU."
    import torch
    grid = dict(GRID, experiment='gpu', base=dict(BASE, device='cuda'))
    here = run_sweep(grid, engine='python', root=tmp_path / 'here', progress=False, batch=True, max_batch=2)
    with kept_environ():
        cluster = local_cluster(2, gpus=1, dashboard=':0')
        with distributed.Client(cluster) as c:
            assert sorted(c.run(lambda: os.environ['CUDA_VISIBLE_DEVICES']).values()) == ['0', '0']
            assert [w['resources'] for w in c.scheduler_info()['workers'].values()] == [{'GPU': 1}] * 2
            there = run_sweep(grid, engine='python', root=tmp_path / 'there', progress=False, batch=True, max_batch=2, scheduler=c)
        cluster.close()
    for k, v in losses(here).items(): assert losses(there)[k] == pytest.approx(v, rel=1e-4, abs=1e-5)  # float32 on a GPU: atomics may reorder sums
    assert {r['device'] for _, r in there} == {torch.cuda.get_device_name(0)}
