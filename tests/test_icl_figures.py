"""The regression figure notebooks (nbs/paper_icl) drawn from runs, not only from their absence: tiny trained runs in part A's
layout (<root>/<scale>/<experiment>/<run>/), their CSVs written by tools/icl_evaluate.py, each notebook executed by
papermill with its parameters pointed there; every claims table computed, some claims tested."""
import importlib.util
from pathlib import Path

import pytest

pm = pytest.importorskip('papermill')  # the notebooks run through it (absent on the GPU image: this module skips there)

from markov_laplace.analysis.claims import STATUSES
from markov_laplace.analysis.icl_evaluate import task_curve
from markov_laplace.experiments.config import RunConfig, build_model, record
from markov_laplace.storage import save_torch, write_csv, write_json
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('icl_evaluate_tool', ROOT / 'tools' / 'icl_evaluate.py')
tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)


@pytest.fixture(scope='module')
def icl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('icl')
    for task in ('linear', 'decision_tree'):
        for preset, seed in (('icl-transformer-tiny', 1), ('icl-transformer-tiny', 2), ('icl-s4d-tiny', 1), ('icl-mamba1-tiny', 1)):
            cfg = ICLTaskConfig(task=task, d=3, d_cur=3, n_points=6)
            rc = RunConfig(task=cfg, train=TrainConfig(steps=1, batch=4, eval_size=8, device='cpu', seed=seed))
            rc.model.preset = preset
            model = build_model(rc.validate()).eval()  # untrained: the figures' code paths, not their numbers
            out = root / 'cpu' / 'icl_main' / f'{task}-{preset}-{seed}'; out.mkdir(parents=True)
            write_json(out / 'config.json', record(rc, model)); write_json(out / 'summary.json', dict(loss=0.0, steps=1, n_params=model.n_params()))
            save_torch(out / 'model.pt', model.state_dict())
            write_csv(out / 'curve.csv', task_curve(model, preset, ICLTaskConfig(task=task, d=3, d_cur=3, n_points=12), task, n_prompts=16).drop(columns='trained_on'))
    assert tool.main([str(root), '--prompts', '8', '--probe-prompts', '4', '--device', 'cpu']) == 0
    return root


@pytest.mark.parametrize('name', ['error_vs_k', 'excess_error', 'extrapolation', 'ood', 'probing'])
def test_figure_notebook_from_runs(icl_root, tmp_path, name):
    out = tmp_path / f'{name}.ipynb'
    nb = pm.execute_notebook(str(ROOT / 'nbs' / 'paper_icl' / f'{name}.ipynb'), str(out), kernel_name='python3', cwd=str(ROOT / 'nbs' / 'paper_icl'),
                             parameters=dict(icl_root=str(icl_root), min_steps=0, scale='cpu'), progress_bar=False)
    text = ''.join(''.join(o.get('data', {}).get('text/plain', '')) + ''.join(o.get('data', {}).get('text/markdown', ''))
                   for c in nb.cells for o in c.get('outputs', []))
    assert '8 runs (decision_tree: 4, linear: 4)' in text  # the scale sentence, read from the runs
    last = ''.join(nb.cells[-1].outputs[-1]['data']['text/plain'])
    assert 'status' in last and any(s in last for s in STATUSES)
    if name in ('error_vs_k', 'probing'): assert 'not reproduced' in last or ' reproduced' in last  # some claims tested at min_steps = 0
