"""Issue 12, the run store and the command line: every silent failure of the issue's table, now loud.

Grids are checked before anything trains; the store reads run files without trusting them (broken
runs are reported by file, never counted as finished, never trained over); `make run` keeps the
committed reference; the installed package finds its grids and template; the CLI's errors are one
line. Every run here is tiny (2 steps) and uses the python engine, but for the papermill rows."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from importlib import util
from pathlib import Path

import pytest
import torch
import yaml

import markov_laplace.experiments.grids as grids
import markov_laplace.experiments.engines as runs
from markov_laplace.cli import _parser, main
from markov_laplace.experiments.grids import data_file, find_grid, load_sweep
from markov_laplace.experiments.engines import run_sweep
from markov_laplace.experiments.store import collect, run_state

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(length=16, steps=2, batch=2, eval_every=1, eval_size=4, device='cpu', model_overrides=dict(d_model=4, d_state=4))
GRID = dict(experiment='rel', base=BASE, axes=dict(order=[1, 2]))


def _grid_file(tmp_path, grid, name='g.yaml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid) if isinstance(grid, dict) else grid)
    return path


def _cli(capsys, *argv):
    "Run the CLI; its exit code and stderr."
    with pytest.raises(SystemExit) as e: main(list(argv))
    return e.value.code, capsys.readouterr().err


# -- grids that cannot run the wrong thing -------------------------------------------------------

@pytest.mark.parametrize('bad,key', [({'axis': {'order': [1]}}, "unknown key 'axis'"), ({'bases': BASE}, "unknown key 'bases'"),
                                     ({'base': {**BASE, 'stepz': 3}}, 'unknown key base.stepz'),
                                     ({'scales': {'cpu': {'lenght': 8}}}, 'unknown key scales.cpu.lenght')])
def test_unknown_grid_keys_are_refused_naming_file_and_key(tmp_path, bad, key):
    grid = {'experiment': 'rel', **({} if 'bases' in bad else {'base': BASE}), **bad}
    path = _grid_file(tmp_path, grid)
    with pytest.raises(ValueError, match=key) as e: run_sweep(path, engine='python', root=tmp_path / 'runs', progress=False)
    assert str(path) in str(e.value) and 'allowed:' in str(e.value)
    assert not (tmp_path / 'runs').exists()  # nothing started


def test_scale_the_grid_lacks_is_refused(tmp_path, capsys):
    path = _grid_file(tmp_path, GRID)  # no scales: at the base scale would be a silent lie
    with pytest.raises(ValueError, match="--scale 'cpu': the grid has no `scales`"): load_sweep(path, tmp_path, 'cpu')
    code, err = _cli(capsys, 'sweep', str(path), '--scale', 'cpu', '--engine', 'python')
    assert code == 2 and 'the grid has no `scales`' in err and 'Traceback' not in err
    code, err = _cli(capsys, 'sweep', 'fig1', '--scale', 'cpux')
    assert code == 2 and "--scale 'cpux': the grid's scales are cpu" in err
    assert not (tmp_path / 'runs').exists()


def test_yaml_exponent_reaches_the_config_and_a_bad_value_names_the_file(tmp_path):
    path = _grid_file(tmp_path, 'experiment: rel\nbase: {lr: 1e-3, steps: 2}\naxes: {order: [1]}\n')
    (_, cell), = load_sweep(path, tmp_path)
    assert cell.train.lr == 1e-3
    path.write_text('experiment: rel\nbase: {lr: fast, steps: 2}\naxes: {order: [1, 2]}\n')
    with pytest.raises(ValueError) as e: load_sweep(path, tmp_path)
    assert str(e.value).count('\n') == 0 and f'{path}: `lr` must be a number' in str(e.value)  # one message for both runs


def test_every_cell_is_validated_before_anything_trains(tmp_path):
    grid = {**GRID, 'cells': [dict(order=1, seed=3, preset='mamba', model_overrides=dict(d_model=4, d_state=4, d_conv=0))]}
    with pytest.raises(ValueError, match='d_conv'): run_sweep(grid, engine='python', root=tmp_path, progress=False)
    assert not (tmp_path / 'rel').exists()


@pytest.mark.parametrize('name', ['../..', '..', '.', 'a/b', '/etc', ''])
def test_experiment_names_stay_under_the_runs_root(tmp_path, name):
    with pytest.raises(ValueError, match='`experiment` must be a plain name'):
        load_sweep({**GRID, 'experiment': name}, tmp_path / 'runs')
    assert list(tmp_path.iterdir()) == []


def test_every_shipped_grid_is_valid_at_every_scale():
    for g in sorted((ROOT / 'grids').glob('*.yaml')):
        for scale in [None, *(yaml.safe_load(g.read_text()).get('scales') or {})]:
            assert load_sweep(g, ROOT / 'runs', scale), (g, scale)


# -- a run store that checks what it reads ---------------------------------------------------------

@pytest.fixture
def finished(tmp_path):
    "A grid of two finished tiny runs under tmp_path/runs."
    res = run_sweep(GRID, engine='python', root=tmp_path / 'runs', progress=False)
    assert not any('error' in r for _, r in res)
    return res


@pytest.mark.parametrize('name,content,why', [('summary.json', '{"loss": 0.5', 'summary.json: not valid JSON'),
                                               ('summary.json', '{}', "summary.json: missing 'loss'"),
                                               ('config.json', '{"task": {', 'config.json: not valid JSON'),
                                               ('ckpt.pt', b'\x00\x01garbage', 'ckpt.pt: not a checkpoint')])
def test_broken_run_is_reported_by_file_kept_and_restarted_on_request(tmp_path, finished, name, content, why):
    run = Path(finished[0][0].out_dir)
    if name == 'ckpt.pt': (run / 'summary.json').unlink()  # an interrupted run whose checkpoint was damaged
    (run / name).write_bytes(content) if isinstance(content, bytes) else (run / name).write_text(content)
    before = sorted(p.name for p in run.iterdir())
    res = run_sweep(GRID, engine='python', root=tmp_path / 'runs', progress=False)
    assert res[0][1]['broken'] and why in res[0][1]['error'] and '--restart-broken' in res[0][1]['error']
    assert 'error' not in res[1][1]  # the other run is fine
    assert sorted(p.name for p in run.iterdir()) == before  # nothing retrained over it, nothing lost
    assert run_state(run)[0] == 'broken'
    res = run_sweep(GRID, engine='python', root=tmp_path / 'runs', progress=False, restart_broken=True)
    assert 'error' not in res[0][1] and run_state(run) == ('finished', None)
    aside, = run.glob('.broken-*')
    assert (aside / name).exists() and aside.name.endswith('Z')


def test_collect_skips_broken_runs_with_a_warning_naming_each(tmp_path, finished):
    run = Path(finished[1][0].out_dir)
    (run / 'summary.json').write_text('{}')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        tab = collect('rel', tmp_path / 'runs')
    assert len(tab) == 1 and not tab[['gap', 'loss']].isna().any().any()
    assert len(w) == 1 and str(run) in str(w[0].message) and "missing 'loss'" in str(w[0].message)


def test_collect_runs_tool_takes_finished_runs_and_lists_broken_ones(tmp_path, finished):
    spec = util.spec_from_file_location('collect_runs', ROOT / 'tools' / 'collect_runs.py')
    tool = util.module_from_spec(spec); spec.loader.exec_module(tool)
    (Path(finished[1][0].out_dir) / 'config.json').write_text('{"task"')
    tgz = tmp_path / 'runs.tgz'
    with tarfile.open(tgz, 'w:gz') as tar: tar.add(tmp_path / 'runs', arcname='runs')
    dest = tmp_path / 'here'
    added, resumable, _, broken, _ = tool.collect(tgz, root=dest)
    assert (added, resumable, len(broken)) == (1, 0, 1) and 'config.json: not valid JSON' in broken[0]
    assert run_state(dest / 'runs' / 'rel' / 'order=1')[0] == 'finished' and not (dest / 'runs' / 'rel' / 'order=2').exists()


# -- make run keeps the reference ------------------------------------------------------------------

def test_make_run_trains_into_an_ignored_folder_and_resumes():
    assert '\t$(BIN)/markov-laplace run\n' in (ROOT / 'Makefile').read_text()  # no --fresh
    assert _parser().parse_args(['run']).fresh is False
    ignored = subprocess.run(['git', 'check-ignore', '-q', 'runs/local/quick/preset=mamba_order=1/summary.json'], cwd=ROOT)
    assert ignored.returncode == 0


def test_run_prints_the_table_beside_the_reference_and_survives_an_interrupt(tmp_path, capsys, monkeypatch):
    grid = _grid_file(tmp_path, {**GRID, 'base': {**BASE, 'preset': 'mamba'}})
    ref = tmp_path / 'ref.csv'
    ref.write_text('preset,order,gap,oracle_gap,kl_laplace\nmamba,1,0.5,0.5,0.5\nmamba,2,0.5,0.5,0.5\n')
    real, calls = runs.run_experiment, []
    def interrupted(run, **kw):  # the second run is interrupted (Ctrl-C)
        calls.append(run.task.order)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(run, **kw)
    monkeypatch.setattr(runs, 'run_experiment', interrupted)
    argv = ['run', '--grid', str(grid), '--root', str(tmp_path / 'local'), '--reference', str(ref)]
    assert main(argv) == 130
    table = (tmp_path / 'local' / 'rel' / 'results.csv').read_text().splitlines()
    assert len(table) == 2  # the finished run only: the table agrees with the runs
    monkeypatch.setattr(runs, 'run_experiment', real)
    capsys.readouterr()
    assert main(argv) == 0  # resumes: the finished run is skipped, the other trains
    out, err = capsys.readouterr()
    assert 'gap_ref' in out and 'gap_diff' in out and 'runs: 100%' in err and 'train' in err  # bars over runs and steps
    assert len((tmp_path / 'local' / 'rel' / 'results.csv').read_text().splitlines()) == 3


# -- the installed package works alone -------------------------------------------------------------

def test_grids_and_template_are_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data_file('grids/quick.yaml').read_text() == (ROOT / 'grids' / 'quick.yaml').read_text()
    assert data_file('nbs/experiments/markov.ipynb').is_file()
    assert find_grid('quick') == find_grid('grids/quick.yaml') == data_file('grids/quick.yaml')


def test_package_data_is_declared_for_the_wheel(tmp_path):
    "An install holds every subpackage and, beside them, the grids and the template where `data_file` looks (`templates/`)."
    text = (ROOT / 'setup.py').read_text()
    assert "'grids': ('grids', ['*.yaml'])" in text and "'templates': ('nbs/experiments', ['markov.ipynb', 'regression.ipynb'])" in text
    assert "'reference': ('runs/quick', ['results.csv'])" in text  # `markov-laplace run`'s reference, outside a checkout too
    assert grids.PACKAGE_DATA == {'grids': 'grids', 'nbs/experiments': 'templates', 'runs/quick': 'reference'}
    out = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--no-index', str(ROOT),
                          '--target', str(tmp_path / 'site')], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pkg = tmp_path / 'site' / 'markov_laplace'
    assert (pkg / 'templates' / 'markov.ipynb').is_file() and (pkg / 'grids' / 'quick.yaml').is_file()
    assert (pkg / 'templates' / 'regression.ipynb').is_file() and (pkg / 'grids' / 'icl_main.yaml').is_file()  # each task's template (engines.TEMPLATES)
    assert (pkg / 'experiments' / 'engines.py').is_file() and not (pkg / 'experiments' / 'markov.ipynb').exists()  # a subpackage, not the data
    probe = ("import markov_laplace.experiments.engines as e, markov_laplace.experiments.grids as g; "
             "print(e.__file__); print(g.data_file('nbs/experiments/markov.ipynb'))")
    empty = tmp_path / 'empty'; empty.mkdir()
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=empty,
                         env={**os.environ, 'PYTHONPATH': str(tmp_path / 'site')})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(pkg / 'experiments' / 'engines.py'), str(pkg / 'templates' / 'markov.ipynb')]
    probe = ("from markov_laplace.cli import _reference, main; print(_reference('quick', None, 'runs/local/quick/results.csv')); "
             "main(['template'])")
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=empty,
                         env={**os.environ, 'PYTHONPATH': str(tmp_path / 'site')})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(pkg / 'reference' / 'results.csv'), str(pkg / 'templates' / 'markov.ipynb')]


def test_without_a_kernel_the_sweep_says_so_and_uses_the_python_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runs, 'has_kernel', lambda name='python3': False)
    (cell, res), = run_sweep({**GRID, 'axes': dict(order=[1])}, engine='papermill', root=tmp_path, progress=False)
    assert 'error' not in res and not (Path(cell.out_dir) / 'notebook.ipynb').exists()
    assert 'no Jupyter kernel' in capsys.readouterr().err


def test_papermill_without_out_dir_leaves_no_temporary_folder(tmp_path):
    import papermill as pm
    before = set(Path(tempfile.gettempdir()).glob('markov-run-*'))
    pm.execute_notebook(str(ROOT / 'nbs' / 'experiments' / 'markov.ipynb'), str(tmp_path / 'out.ipynb'), progress_bar=False,
                        parameters=dict(config=dict(task=dict(length=16), model=dict(d_model=4, d_state=4),
                                                    train=dict(steps=2, batch=2, eval_every=1, eval_size=4, device='cpu'))),
                        cwd=str(tmp_path), kernel_name='python3')
    assert set(Path(tempfile.gettempdir()).glob('markov-run-*')) == before


# -- one-line CLI errors ---------------------------------------------------------------------------

@pytest.mark.parametrize('argv,message', [
    (['bayes-risk', '--order', '-1'], 'argument --order: must be an integer >= 1'),
    (['bayes-risk', '--vocab', '1'], 'argument --vocab: must be an integer >= 2'),
    (['bayes-risk', '--beta', '0'], 'argument --beta: must be a finite number > 0'),
    (['bayes-risk', '--order', '4', '--length', '4'], 'argument --length: must be an integer > every order'),
    (['sweep', 'quick', '--shard', 'foo'], 'argument --shard: must be i/n'),
    (['sweep', 'quick', '--shard', '3/2'], 'argument --shard: must be i/n'),
    (['sweep', 'quick', '--workers', '0'], 'argument --workers: must be an integer >= 1'),
    (['sweep', 'quick', '--prefetch', 'x'], 'argument --prefetch: must be an integer >= 1'),
    (['sweep', 'no-such-grid'], 'must be a grid file or one of the shipped grids'),
    (['floors', '--n-seqs', '0'], 'argument --n-seqs: must be an integer >= 1'),
    (['bench', '--device', 'tpu'], 'argument --device: must be cpu, cuda or cuda:N'),
])
def test_bad_arguments_are_one_line_with_exit_code_2(capsys, argv, message):
    code, err = _cli(capsys, *argv)
    assert code == 2 and 'Traceback' not in err
    assert message in err.strip().splitlines()[-1] and err.strip().splitlines()[-1].startswith('markov-laplace')


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available here')
def test_bench_on_cuda_without_cuda_is_one_line(capsys):
    code, err = _cli(capsys, 'bench', '--device', 'cuda')
    assert code == 2 and "'cuda': CUDA is not available on this machine" in err


def test_every_option_has_help_and_version():
    p = _parser()
    subs = next(a for a in p._actions if a.dest == 'command').choices
    for name, sp in [('', p), *subs.items()]:
        for a in sp._actions:
            assert a.help, (name, a.dest)
    from markov_laplace import __version__
    out = subprocess.run([sys.executable, '-m', 'markov_laplace', '--version'], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f'markov-laplace {__version__}'
    out = subprocess.run([sys.executable, '-m', 'markov_laplace', 'sweep', '--help'], capture_output=True, text=True)
    assert out.returncode == 0 and '--restart-broken' in out.stdout


def test_a_run_that_fails_while_training_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    "Validation refuses bad configs up front; what can only fail at run time (here a simulated divergence) is recorded."
    real = runs.run_experiment
    def diverges(run, **kw):
        if run.task.order == 1: raise FloatingPointError('loss is nan at step 1 (simulated)')
        return real(run, **kw)
    monkeypatch.setattr(runs, 'run_experiment', diverges)
    res = run_sweep(GRID, engine='python', root=tmp_path, progress=False)
    assert ['error' in r for _, r in res] == [True, False] and not res[0][1]['broken']
    fails = json.loads((tmp_path / 'rel' / 'failures.json').read_text())
    assert list(fails) == [res[0][0].out_dir] and 'simulated' in fails[res[0][0].out_dir]['error']


def test_the_package_runs_without_its_development_tools():
    "The GPU machines have torch and the scientific stack but no nbdev or fastcore: every module must import without them."
    import pkgutil

    import markov_laplace
    mods = [m.name[len('markov_laplace.'):] for m in pkgutil.walk_packages(markov_laplace.__path__, 'markov_laplace.')
            if not any(p.startswith('_') for p in m.name.split('.')[1:])]  # every module, subpackages' included
    assert {'experiments.engines', 'analysis.icl_claims', 'tasks.nlp.evaluate'} <= set(mods), mods
    code = ('import sys, importlib\nfor dev in ("fastcore", "nbdev", "execnb", "nbval"): sys.modules[dev] = None\n'
            f'for m in {mods!r}: importlib.import_module("markov_laplace." + m)\nprint("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]
