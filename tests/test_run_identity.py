"""Every committed run is still the run its grid names: the config.json it holds and the config the current code would
record for its grid cell describe the same run (`store.same_run`, as the engines call it before training). A field
added since must not make a sweep refuse to resume or redo the runs written before it ('holds a run with another
config'): a field of how (S4D's `conv_method`, `pad_to`) is ignored, a field of what (Mamba's `rms`, the training's
`optimizer`, absent from the Markov runs' config.json) counts as its class's default (`config.record_defaults`).
`tools/icl_gpu_call.py --redo` keeps a finished regression run's config.json and trains it again under it.
"""
import json
from pathlib import Path

import pytest

from markov_laplace.experiments.config import build_model, record, record_defaults
from markov_laplace.experiments.grids import _load_grid, load_sweep
from markov_laplace.experiments.store import CONFIG_FIELDS, read_json, same_run

ROOT = Path(__file__).resolve().parent.parent
ICL_GRIDS = sorted((ROOT / 'grids').glob('icl_*.yaml'))
GRIDS = sorted((ROOT / 'grids').glob('*.yaml'))


def committed_cells(grid):
    "(scale, RunConfig) of every cell of the grid, at every scale it has, whose run directory under runs/ holds a config.json."
    scales = [None] + list(_load_grid(grid).get('scales', {}))
    return [(s, run) for s in scales for _, run in load_sweep([grid], ROOT / 'runs', s) if (Path(run.out_dir) / 'config.json').exists()]


@pytest.mark.parametrize('grid', GRIDS, ids=lambda p: p.stem)
def test_committed_runs_are_still_their_cells(grid):
    cells = committed_cells(grid)
    for scale, run in cells:
        stored, model = read_json(Path(run.out_dir) / 'config.json', CONFIG_FIELDS), build_model(run)
        assert same_run(stored, record(run, model), record_defaults(run)), f'{run.out_dir} ({scale}): its config.json is not the run its grid names'


def test_every_grid_has_committed_runs_to_check():
    "The test above checks something: every grid has committed runs but those whose gpu runs are still to train (issue 21: items 4.3, 4.4)."
    counts = {g.stem: len(committed_cells(g)) for g in GRIDS}
    assert {g for g, n in counts.items() if not n} <= {'icl_long', 'icl_mamba2'}
    assert sum(counts.values()) >= 500


def test_a_field_of_what_set_otherwise_is_another_run():
    "The defaults read a missing field as the old behaviour, not as anything: a committed Mamba run against one with `rms` on."
    _, run = next(c for c in committed_cells(ROOT / 'grids' / 'fig1.yaml'))
    stored, model = read_json(Path(run.out_dir) / 'config.json', CONFIG_FIELDS), build_model(run)
    assert 'rms' not in stored['model'] and record_defaults(run)['model']['rms'] is False
    other = record(run, model); other['model']['rms'] = True
    assert not same_run(stored, other, record_defaults(run))


def test_the_committed_s4d_runs_predate_pad_to():
    "The case the test above guards: committed S4D runs whose config.json has no `pad_to` (written before it existed)."
    cells = [run for g in ICL_GRIDS for _, run in committed_cells(g) if 's4d' in run.model.preset]
    old = [r for r in cells if 'pad_to' not in read_json(Path(r.out_dir) / 'config.json', CONFIG_FIELDS)['model']]
    assert len(old) >= 15, len(old)


def _older_config_dir(run):
    "A run directory holding the config.json an older version wrote for `run`: without `rms` and `optimizer`."
    old = record(run, build_model(run))
    del old['model']['rms'], old['train']['optimizer']
    Path(run.out_dir).mkdir(parents=True)
    (Path(run.out_dir) / 'config.json').write_text(json.dumps(old))
    return old


def test_the_engines_resume_into_a_directory_an_older_version_wrote(tmp_path):
    "Each engine's own check: `run_experiment`, `run_group` and the client's `_receive` of a worker's files accept it."
    from markov_laplace.experiments.config import from_flat
    from markov_laplace.experiments.engines import _receive, run_experiment, run_group
    cell = lambda name, seed: from_flat(dict(preset='mamba', length=16, steps=2, batch=4, eval_every=1, eval_size=8,
                                             device='cpu', seed=seed, out_dir=str(tmp_path / name)))
    one = cell('one', 0); _older_config_dir(one)
    assert run_experiment(one, progress=False)['steps'] == 2
    group = [cell('g0', 0), cell('g1', 1)]
    for r in group: _older_config_dir(r)
    assert [s['steps'] for s in run_group(group, progress=False)] == [2, 2]
    sent = cell('sent', 0); _older_config_dir(sent)
    files = {'config.json': json.dumps(record(sent, build_model(sent))).encode()}  # what today's worker sends
    with pytest.raises(ValueError, match='another config'): _receive(sent.out_dir, files)  # without the defaults: refused
    _receive(sent.out_dir, files, record_defaults(sent))
