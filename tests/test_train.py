"""Training runs: reproducible, resumable after a real kill, skipped when finished; papermill honours
its parameters; sweeps record failures without stopping."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from markov_laplace.experiments.config import ModelSpec, RunConfig
from markov_laplace.models.registry import build
from markov_laplace.experiments.engines import run_experiment, run_sweep
from markov_laplace.tasks.markov.task import TaskConfig
from markov_laplace.tasks.protocol import Evaluator
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
TASK = TaskConfig(order=1, length=48)
SMALL = dict(d_model=4, d_state=4)


def _cfg(**kw):
    return TrainConfig(**{**dict(steps=60, batch=8, eval_every=20, eval_size=16, device='cpu'), **kw})


def _run(out, cfg): # the RunConfig of TASK, SMALL and `cfg` into `out`
    return RunConfig(TASK, ModelSpec('mamba', SMALL), cfg, str(out)).validate()


def test_same_seed_same_history():
    h1 = train(build('mamba', seed=0, **SMALL), TASK, _cfg(), progress=False)
    h2 = train(build('mamba', seed=0, **SMALL), TASK, _cfg(), progress=False)
    pd.testing.assert_frame_equal(h1, h2)
    h3 = train(build('mamba', seed=1, **SMALL), TASK, _cfg(seed=1), progress=False)
    assert not h1.loss.equals(h3.loss)


def test_evaluation_set_is_shared_and_fixed():
    a, b = Evaluator(TASK, 16, seed=5), Evaluator(TASK, 16, seed=5)
    assert torch.equal(a.batches[0].tokens, b.batches[0].tokens) and torch.equal(a.batches[0].laplace, b.batches[0].laplace)
    lp = [x.laplace.log() for x in a.batches]  # add-β's own predictions: the same reference losses on both sets
    assert a.metrics(lp) == b.metrics(lp)


_CHILD = '''
import sys, time
from markov_laplace.experiments.engines import run_experiment
from markov_laplace.experiments.config import RunConfig
run = RunConfig.from_dict(dict(task=dict(order=1, length=48), model=dict(d_model=4, d_state=4), out_dir=sys.argv[1],
                               train=dict(steps=400, batch=8, eval_every=20, eval_size=16, device='cpu')))
run_experiment(run, progress=False, callback=lambda step, model: time.sleep(0.01))  # slow enough to be killed halfway
'''


def test_killed_run_resumes_to_the_same_history(tmp_path):
    cfg = TrainConfig(steps=400, batch=8, eval_every=20, eval_size=16, device='cpu')
    ref = run_experiment(_run(tmp_path / 'ref', cfg), progress=False)
    run = tmp_path / 'killed'
    child = subprocess.Popen([sys.executable, '-c', _CHILD, str(run)], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for a checkpoint past the first evaluations, then kill -9
            ck = run / 'ckpt.pt'
            if ck.exists():
                try:
                    if torch.load(ck, weights_only=False)['trainer']['n_steps'] >= 60: break
                except Exception: pass  # never a torn file (atomic writes), but it may be replaced under us
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None: child.kill()
    assert not (run / 'summary.json').exists(), 'the run finished before it could be killed'
    step = torch.load(run / 'ckpt.pt', weights_only=False)['trainer']['n_steps']
    assert 0 < step < 400
    run_experiment(_run(run, cfg), progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(run / 'history.csv'), pd.read_csv(tmp_path / 'ref' / 'history.csv'))
    assert not (run / 'ckpt.pt').exists()


def test_finished_run_is_skipped(tmp_path):
    s = run_experiment(_run(tmp_path, _cfg()), progress=False)
    mtime = (tmp_path / 'history.csv').stat().st_mtime
    assert run_experiment(_run(tmp_path, _cfg()), progress=False) == s
    assert (tmp_path / 'history.csv').stat().st_mtime == mtime


def test_nan_stops_and_keeps_last_checkpoint(tmp_path):
    def poison(step, model):
        if step == 30:
            with torch.no_grad(): model.read_out.weight.fill_(float('inf'))
    with pytest.raises(FloatingPointError, match='at step 30'):
        train(build('mamba', **SMALL), TASK, _cfg(), run_dir=tmp_path, progress=False, callback=poison)
    state = torch.load(tmp_path / 'ckpt.pt', weights_only=False)
    assert state['trainer']['n_steps'] == 20 and all(torch.isfinite(v).all() for v in state['trainer']['params'].values())


def test_papermill_honours_parameters(tmp_path):
    res = run_sweep(dict(experiment='pm', base=dict(length=32, steps=6, batch=4, eval_every=3, eval_size=8, device='cpu',
                                                     preset='transformer', model_overrides=dict(d_model=8)),
                         axes=dict(order=[2])), engine='papermill', root=tmp_path, progress=False)
    (cell, summary), = res
    assert 'error' not in summary, summary
    out = Path(cell.out_dir)
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['task']['order'] == 2 and cfg['preset'] == 'transformer' and cfg['model']['d_model'] == 8
    nb = json.loads((out / 'notebook.ipynb').read_text())
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])


def test_parameters_tag_survives_nbdev_clean(tmp_path):
    nb = tmp_path / 'nbs' / 'markov.ipynb'
    nb.parent.mkdir()
    shutil.copy(ROOT / 'nbs' / 'experiments' / 'markov.ipynb', nb)
    shutil.copy(ROOT / 'settings.ini', tmp_path / 'settings.ini')
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(nb)], cwd=tmp_path, check=True)
    cells = json.loads(nb.read_text())['cells']
    assert any('parameters' in c.get('metadata', {}).get('tags', []) for c in cells)


def test_sweep_refuses_a_bad_cell_before_any_run_starts(tmp_path):
    "A grid with one out-of-range value trains nothing: the sweep is refused up front, naming the key (issue 12)."
    grid = dict(experiment='f', base=dict(length=32, steps=4, batch=4, eval_every=2, eval_size=8, device='cpu',
                                          model_overrides=SMALL),
                axes=dict(lr=[1e-3, -1.0, 2e-3]))
    with pytest.raises(ValueError, match='`lr`'):
        run_sweep(grid, engine='python', root=tmp_path, progress=False)
    assert not any(tmp_path.rglob('summary.json')) and not any(tmp_path.rglob('config.json'))
