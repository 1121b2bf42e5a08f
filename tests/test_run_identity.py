"""Every committed regression run is still the run its grid names: the config.json it holds and the config the current
code would record for its grid cell describe the same run (`store.same_run`). A field added to a model since (S4D's
`conv_method`, `pad_to`) must not make a sweep refuse to resume or redo the runs written before it ('holds a run with
another config'): `tools/icl_gpu_call.py --redo` keeps a finished regression run's config.json and trains it again
under it.

The Markov grids' committed runs are left out: written before the model's `rms` and the training's `optimizer`
existed, their config.json lacks both, so `same_run` tells them apart from a run recorded today. A sweep skips them as
finished before it compares configs (`engines._finished`), and nothing trains them again in place.
"""
from pathlib import Path

import pytest

from markov_laplace.experiments.config import build_model, record
from markov_laplace.experiments.grids import _load_grid, load_sweep
from markov_laplace.experiments.store import CONFIG_FIELDS, read_json, same_run

ROOT = Path(__file__).resolve().parent.parent
ICL_GRIDS = sorted((ROOT / 'grids').glob('icl_*.yaml'))


def committed_cells(grid):
    "(scale, RunConfig) of every cell of the grid, at every scale it has, whose run directory under runs/ holds a config.json."
    scales = [None] + list(_load_grid(grid).get('scales', {}))
    return [(s, run) for s in scales for _, run in load_sweep([grid], ROOT / 'runs', s) if (Path(run.out_dir) / 'config.json').exists()]


@pytest.mark.parametrize('grid', ICL_GRIDS, ids=lambda p: p.stem)
def test_committed_regression_runs_are_still_their_cells(grid):
    for scale, run in committed_cells(grid):
        stored = read_json(Path(run.out_dir) / 'config.json', CONFIG_FIELDS)
        assert same_run(stored, record(run, build_model(run))), f'{run.out_dir} ({scale}): its config.json is not the run its grid names'


def test_the_committed_s4d_runs_predate_pad_to():
    "The case the test above guards: committed S4D runs whose config.json has no `pad_to` (written before it existed)."
    cells = [run for g in ICL_GRIDS for _, run in committed_cells(g) if 's4d' in run.model.preset]
    old = [r for r in cells if 'pad_to' not in read_json(Path(r.out_dir) / 'config.json', CONFIG_FIELDS)['model']]
    assert len(old) >= 15, len(old)
