"""One configuration, resolved once (issue 11): a run is one `RunConfig`, and every field a grid sets reaches the run's
config.json identically through every engine — python, papermill, batched."""
import dataclasses
import json
from pathlib import Path

import pytest

from markov_laplace.experiments.config import RunConfig, from_flat
from markov_laplace.experiments.grids import load_sweep
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.models.registry import preset_config
from markov_laplace.experiments.engines import has_kernel, run_sweep
from markov_laplace.tasks.markov.task import TaskConfig
from markov_laplace.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

# every TrainConfig field away from its default (tiny: CPU-fast)
TRAIN = dict(steps=4, batch=3, lr=1e-3, warmup=0.25, final_lr=0.5, schedule='constant', optimizer='adam', weight_decay=0.0, clip=0.5,
             eval_every=2, eval_size=5, eval_seed=7, seed=3, device='cpu', dtype='float32')
# the preset and model fields away from the preset's defaults
MODEL = dict(preset='mamba1', d_model=4, d_state=4, expand=1, d_conv=3, n_layers=2, act='relu', d_skip=True)
# two cells, because the Markov fields exclude each other (hold-out flips need order 1, vocab 2, no switching):
# together they set every TaskConfig field away from its default
CELLS = [dict(order=2, vocab=3, length=12, beta=0.5, p_switch=0.1),
         dict(length=10, train_flips=[0.1, 0.3], eval_flips=[0.2, 0.4])]
GRID = dict(experiment='every-field', base=dict(TRAIN, model=MODEL), cells=CELLS)


def test_the_grid_changes_every_field_of_every_section():
    "The test below is only as good as its grid: a new field of a section must be added to it (this fails until it is)."
    train_default, task_default = TrainConfig(), TaskConfig()
    assert set(TRAIN) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(TRAIN[k] != getattr(train_default, k) for k in TRAIN)
    for f in dataclasses.fields(TaskConfig):
        assert any(f.name in c and c[f.name] != getattr(task_default, f.name) for c in CELLS), f.name
    model_default = preset_config(MODEL['preset'], 2)
    assert MODEL['preset'] != RunConfig().model.preset
    assert all(model_default[k] != v for k, v in MODEL.items() if k != 'preset')


def _configs(root): # run name -> config.json of every run under root/every-field
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / 'every-field').glob('*/config.json'))}


@pytest.mark.skipif(not has_kernel(), reason='papermill needs the python3 Jupyter kernel (pip install ipykernel)')
def test_every_field_reaches_config_json_identically_through_every_engine(tmp_path):
    engines = dict(python=dict(engine='python'), papermill=dict(engine='papermill'), batched=dict(engine='python', batch=True))
    configs = {}
    for name, kw in engines.items():
        res = run_sweep(GRID, root=tmp_path / name, progress=False, **kw)
        assert len(res) == 2 and not any('error' in r for _, r in res), (name, res)
        configs[name] = _configs(tmp_path / name)
    assert len(list((tmp_path / 'papermill' / 'every-field').glob('*/notebook.ipynb'))) == 2  # papermill ran them
    assert len(configs['python']) == 2
    assert configs['papermill'] == configs['python'] and configs['batched'] == configs['python']
    for cell, config in zip(CELLS, configs['python'].values()):  # ... and they are the grid's values, not defaults
        assert config['train'] == TRAIN
        assert {k: config['task'][k] for k in cell} == cell and config['task']['name'] == 'markov'
        assert config['preset'] == MODEL['preset']
        assert {k: config['model'][k] for k in MODEL if k != 'preset'} == {k: v for k, v in MODEL.items() if k != 'preset'}


def test_a_grid_names_its_task_and_sets_that_task_s_fields(tmp_path):
    fields = dict(task='sparse_linear', d=6, d_cur=5, n_points=9, s=2, hidden=7, depth=2, noise_std=0.5, skew_power=2.0, divisor='signal',
                  curriculum=0.5, n_cur=7, curve_points=30, curve_prompts=100)
    assert set(fields) == {f.name for f in dataclasses.fields(ICLTaskConfig)}
    assert all(getattr(ICLTaskConfig(), k) != v for k, v in fields.items())
    grid = dict(experiment='icl', base=dict(TRAIN, task=dict(name='regression', task='sparse_linear')),
                axes=dict(d=[6]), cells=[], scales={})
    grid['base'].update({k: v for k, v in fields.items() if k not in ('task', 'd')})
    (_, run), = load_sweep(grid, tmp_path)
    assert run.task == ICLTaskConfig(**fields) and run.train == TrainConfig(**TRAIN)
    assert run.io == dict(d_in=6, d_out=1, length=18)
    assert RunConfig.from_dict(run.to_dict()) == run and RunConfig.from_json(run.to_json()) == run
    assert run.to_dict()['task'] == dict(name='regression', **fields)  # what papermill is handed: every field


@pytest.mark.parametrize('cell,message', [
    (dict(task='regression', order=2), '`parameters` must be keys of a regression run'),
    (dict(task='markow'), '`task` must be a registered task (markov | regression'),
    (dict(d=3), '`parameters` must be keys of a markov run'),
    (dict(model=dict(preset='mambo')), '`model.preset` must be mamba | '),
    (dict(model=dict(vocab=5)), "`model.vocab` must be the task's"),
    (dict(clip=-1), '`clip` must be a finite gradient norm'),
])
def test_a_bad_key_is_one_error_naming_it_before_anything_runs(tmp_path, cell, message):
    with pytest.raises(ValueError) as e:
        run_sweep(dict(experiment='bad', base=dict(TRAIN), cells=[cell]), engine='python', root=tmp_path, progress=False)
    assert message in str(e.value) and str(e.value).count('\n') == 0
    assert not any(tmp_path.iterdir())


def test_from_flat_and_the_nested_form_are_one_run():
    flat = from_flat(dict(CELLS[0], **TRAIN, model=MODEL, out_dir='runs/x'))
    nested = RunConfig.from_dict(dict(task=CELLS[0], model=MODEL, train=TRAIN, out_dir='runs/x'))
    assert flat == nested and RunConfig.from_dict(flat.to_dict()) == flat


def test_the_template_takes_the_whole_run_as_one_parameter():
    nb = json.loads((ROOT / 'nbs' / 'experiments' / 'markov.ipynb').read_text())
    params, = [c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    ns = {}
    exec(''.join(params['source']), ns)
    assert [k for k in ns if not k.startswith('__')] == ['config']
    assert RunConfig.from_dict(ns['config']).train.steps == ns['config']['train']['steps']  # the example is a valid run


@pytest.mark.skipif(not has_kernel(), reason='papermill needs the python3 Jupyter kernel (pip install ipykernel)')
def test_a_regression_grid_trains_through_every_engine_into_the_same_run(tmp_path):
    "The task picks the model's ends: a regression grid builds vector-reading models and the engines store the same run."
    grid = dict(experiment='icl', base=dict(TRAIN, steps=6, eval_every=3, task=dict(name='regression', task='linear'), d=3, d_cur=3,
                                            n_points=5, model=dict(preset='mamba', d_model=8)), axes=dict(seed=[0, 1]))
    runs = {}
    for name, kw in dict(python=dict(engine='python'), papermill=dict(engine='papermill'), batched=dict(engine='python', batch=True)).items():
        res = run_sweep(grid, root=tmp_path / name, progress=False, **kw)
        assert len(res) == 2 and not any('error' in r for _, r in res), (name, res)
        runs[name] = {p.parent.name: (json.loads(p.read_text()), json.loads((p.parent / 'summary.json').read_text()))
                      for p in sorted((tmp_path / name / 'icl').glob('*/config.json'))}
    assert runs['python'].keys() == runs['papermill'].keys() == runs['batched'].keys() and len(runs['python']) == 2
    for run, (config, summary) in runs['python'].items():
        assert config['task']['name'] == 'regression' and config['model']['d_in'] == 3 and 'vocab' not in config['model']
        for other in ('papermill', 'batched'):
            assert runs[other][run][0] == config
            assert summary['final_loss'] == pytest.approx(runs[other][run][1]['final_loss'], rel=1e-4)  # the same run, trained
        assert {'loss', 'least_squares_loss', 'gap', 'final_loss', 'final_least_squares_loss'} <= set(summary)
