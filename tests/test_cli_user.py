"""The command line as a researcher meets it (issue 22): each test is one row of the issue's table, now behaving.

Cheap on purpose: runs of one or two steps, tiny grids, everything under tmp_path; subprocesses where the
behaviour is the process's (exit codes, Ctrl-C, the time `--help` takes)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from markov_laplace.cli import main
from markov_laplace.experiments.store import RUNS_ENV, repo_root, runs_root

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
ENV.pop(RUNS_ENV, None)
CLI = [sys.executable, '-m', 'markov_laplace']
# a user's own regression grid: d = 2 alone (d_cur follows it); the 1-layer Mamba preset, fast on a CPU
REG = ('experiment: reg\nbase: {task: {name: regression, task: linear, d: 2, n_points: 11}, preset: mamba, batch: 8, steps: 2,\n'
       '       eval_every: 1, eval_size: 16, device: cpu}\naxes: {seed: [0, 1]}\n')
MARKOV = ('experiment: mk\nbase: {length: 32, batch: 4, steps: 2, eval_every: 1, eval_size: 8, device: cpu, preset: mamba}\n'
          'axes: {order: [1, 2]}\n')


def _grid(tmp_path, text, name='g.yaml'):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _cli(*argv, cwd=None, timeout=300):
    return subprocess.run([*CLI, *map(str, argv)], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=timeout)


def _one_line_error(out, code=2):
    "An error of the user's: usage aside, one line naming the problem, no traceback."
    lines = [l for l in out.stderr.strip().splitlines() if not l.startswith(('usage:', ' '))]
    assert out.returncode == code and 'Traceback' not in out.stderr and len(lines) == 1, out.stderr
    return lines[0]


# -- a fast CLI ----------------------------------------------------------------------------------------

def test_help_is_fast_and_imports_nothing_heavy():
    probe = ('import sys, markov_laplace.cli as c; c._parser().format_help(); '
             'print(sorted(m for m in ("torch", "pandas", "sklearn", "matplotlib") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, env=ENV)
    assert out.stdout.strip() == '[]', out.stdout + out.stderr
    walls = []
    for _ in range(3):
        t0 = time.perf_counter(); out = _cli('--help'); walls.append(time.perf_counter() - t0)
        assert out.returncode == 0 and 'collect' in out.stdout and 'template' in out.stdout
    assert min(walls) < 1.0, walls


# -- both benchmarks from the shell ------------------------------------------------------------------

def test_a_regression_grid_runs_sweeps_and_is_collected(tmp_path, capsys):
    grid = _grid(tmp_path, REG)
    out = _cli('run', '--grid', grid, '--root', tmp_path / 'one')  # the process, as a user types it
    assert out.returncode == 0, out.stderr
    assert 'gap_ref' in out.stdout and 'reference: none' in out.stdout  # no committed reg results: said so, not compared with itself
    cfg = json.loads((tmp_path / 'one' / 'reg' / 'seed=0' / 'config.json').read_text())
    assert cfg['task']['d'] == 2 and cfg['task']['d_cur'] == 2  # derived from d
    assert main(['sweep', str(grid), '--root', str(tmp_path / 'many'), '--engine', 'python', '--quiet']) == 0
    assert '2 of 2 runs finished' in capsys.readouterr().out
    assert main(['collect', 'reg', '--root', str(tmp_path / 'many'), '--out', str(tmp_path / 'reg.csv')]) == 0
    tab = pd.read_csv(tmp_path / 'reg.csv')
    assert list(tab.columns) == ['preset', 'seed', 'task', 'd', 'n_points', 'steps', 'gap', 'wall_s'] and len(tab) == 2
    summaries = [json.loads((tmp_path / 'many' / 'reg' / f'seed={s}' / 'summary.json').read_text()) for s in (0, 1)]
    assert tab.gap.tolist() == pytest.approx([s['gap'] for s in summaries], rel=1e-12)  # each run's summary, through a CSV
    capsys.readouterr()
    assert main(['collect', str(grid), '--root', str(tmp_path / 'many')]) == 0  # a grid names its experiment too
    assert capsys.readouterr().out.count('mamba') == 2


def test_markov_tables_are_the_same_generic_table(tmp_path):
    assert main(['sweep', str(_grid(tmp_path, MARKOV)), '--root', str(tmp_path), '--engine', 'python', '--quiet']) == 0
    from markov_laplace.cli import results_table
    tab = results_table('mk', tmp_path)
    assert list(tab.columns) == ['preset', 'order', 'length', 'steps', 'gap', 'oracle_gap', 'kl_laplace', 'wall_s']
    assert list(pd.read_csv(ROOT / 'runs' / 'quick' / 'results.csv').columns) == list(tab.columns)  # the committed reference's columns


def test_presets_side_by_side_are_matched_with_the_reference_on_preset_and_order(tmp_path):
    "Two presets (as `make run`'s quick grid has): the model fields each preset fixes (conv, width, family) are no settings that vary."
    grid = MARKOV.replace('preset: mamba}', 'preset: mamba}\n').replace('axes: {order: [1, 2]}', 'axes: {order: [1, 2], preset: [mamba, mamba-noconv]}')
    assert main(['sweep', str(_grid(tmp_path, grid)), '--root', str(tmp_path), '--engine', 'python', '--quiet']) == 0
    from markov_laplace.cli import beside_reference, results_table
    tab = results_table('mk', tmp_path)
    assert tab.attrs['keys'] == ['preset', 'order'] and not any(c.startswith('model.') for c in tab.columns)
    ref = tmp_path / 'ref.csv'
    tab.assign(gap=tab.gap + 1).to_csv(ref, index=False)
    b = beside_reference(tab, ref)
    assert len(b) == 4 and b.gap_ref.notna().all() and b.gap_diff.round(12).eq(-1).all()  # every run matched, none twice
    widths = MARKOV.replace('mk', 'wd').replace('axes: {order: [1, 2]}', 'axes: {order: [1], model: [{preset: mamba, d_model: 4}, {preset: mamba, d_model: 8}]}')
    assert main(['sweep', str(_grid(tmp_path, widths, 'w.yaml')), '--root', str(tmp_path), '--engine', 'python', '--quiet']) == 0
    assert results_table('wd', tmp_path).attrs['keys'] == ['preset', 'model.d_model']  # varied within a preset: a setting (Fig 6)
    one_width = MARKOV.replace('mk', 'ow').replace('axes: {order: [1, 2]}', 'axes: {order: [1], model: [{preset: mamba, d_model: 4}, {preset: transformer}]}')
    assert main(['sweep', str(_grid(tmp_path, one_width, 'o.yaml')), '--root', str(tmp_path), '--engine', 'python', '--quiet']) == 0
    assert 'model.d_model' in results_table('ow', tmp_path).attrs['keys']  # a grid's override shows, though one preset has it throughout


def test_the_committed_quick_table_is_matched_with_its_reference_row_by_row():
    "What `make run` prints beside this machine's runs: the committed quick runs, read as a table, against runs/quick/results.csv."
    from markov_laplace.cli import beside_reference, results_table
    tab = results_table('quick', ROOT / 'runs')
    b = beside_reference(tab, ROOT / 'runs' / 'quick' / 'results.csv')
    assert len(b) == 6 and b[[c for c in b.columns if c.endswith('_ref')]].notna().all().all()
    assert (b.gap_diff.abs() < 1e-9).all()  # the same runs: the same numbers


# -- your runs beside the committed ones --------------------------------------------------------------

def test_one_runs_root_resolved_the_same_way(monkeypatch, tmp_path):
    monkeypatch.delenv(RUNS_ENV, raising=False)
    assert runs_root() == repo_root() / 'runs' / 'local'
    assert subprocess.run(['git', 'check-ignore', '-q', 'runs/local/floors/bayes_risk.csv'], cwd=ROOT).returncode == 0
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / 'mine'))
    assert runs_root() == tmp_path / 'mine' and runs_root(str(tmp_path / 'x')) == tmp_path / 'x'
    from markov_laplace.analysis.figures import experiment_root
    (tmp_path / 'mine' / 'cpu' / 'fig1' / 'r').mkdir(parents=True)
    assert experiment_root('fig1') == tmp_path / 'mine' / 'cpu'  # the paper notebooks read the user's runs


def test_a_shipped_grid_shortened_into_its_own_root_never_reads_the_committed_runs(tmp_path):
    committed = ROOT / 'runs' / 'cpu' / 'fig3b'
    before = sorted(p.stat().st_mtime_ns for p in committed.glob('*/summary.json'))
    assert before  # the committed results that `sweep fig3b --scale cpu` used to read back as its own
    out = _cli('sweep', 'fig3b', '--scale', 'cpu', '--steps', '1', '--shard', '0/20', '--root', tmp_path, '--engine', 'python', '--quiet')
    assert out.returncode == 0, out.stderr
    assert '1 of 20 runs finished' in out.stdout and str(tmp_path) in out.stdout  # one run trained here, not 20 read back
    (run,) = [p.parent for p in (tmp_path / 'cpu' / 'fig3b').glob('*/summary.json')]
    assert json.loads((run / 'summary.json').read_text())['steps'] == 1
    assert sorted(p.stat().st_mtime_ns for p in committed.glob('*/summary.json')) == before


def test_floors_writes_under_the_runs_root_with_a_bar(tmp_path):
    committed = (ROOT / 'runs' / 'floors' / 'bayes_risk.csv').stat().st_mtime_ns
    out = subprocess.run([*CLI, 'floors', '--n-seqs', '4'], capture_output=True, text=True, cwd=ROOT / 'nbs', env={**ENV, RUNS_ENV: str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / 'floors' / 'bayes_risk.csv').exists() and 'floors: 100%' in out.stderr
    assert (ROOT / 'runs' / 'floors' / 'bayes_risk.csv').stat().st_mtime_ns == committed
    assert not (ROOT / 'nbs' / 'runs').exists()


# -- papermill as a library user meets it ------------------------------------------------------------

def test_papermill_extra_brings_the_kernel():
    import configparser
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    assert {'papermill', 'ipykernel'} <= set(cfg['DEFAULT']['papermill_requirements'].split())
    assert "'papermill': words('papermill_requirements')" in (ROOT / 'setup.py').read_text()
    assert 'markov_laplace[papermill]' in (ROOT / 'markov_laplace' / 'experiments' / 'engines.py').read_text()  # the fallback's message


def test_template_prints_its_path_and_a_parameter_it_does_not_take_fails(tmp_path):
    out = _cli('template', 'regression', cwd=tmp_path)
    assert out.returncode == 0 and Path(out.stdout.strip()).is_file() and out.stdout.strip().endswith('markov.ipynb')
    assert 'mkdir -p runs/mine' in out.stderr and 'name: regression' in out.stderr
    assert "invalid choice: 'cubic'" in _one_line_error(_cli('template', 'cubic'))
    (tmp_path / 'X').mkdir()
    out = subprocess.run([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'experiments' / 'markov.ipynb'), str(tmp_path / 'out.ipynb'),
                          '-p', 'steps', '5', '-p', 'out_dir', str(tmp_path / 'X'), '--no-progress-bar'],
                         capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert out.returncode != 0 and 'unknown parameters out_dir, steps: this template takes one parameter, `config`' in out.stderr
    assert not any((tmp_path / 'X').iterdir())


# -- no output destroyed, no traceback for a user's mistake -------------------------------------------

def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    out = _cli('icl-baselines', '--task', 'linear', '--prompts', '4', '--out', tmp_path / 'y.json')
    assert "argument --out: must be a .csv file; got" in _one_line_error(out) and not list(tmp_path.iterdir())
    (tmp_path / 'd.csv').mkdir()
    for argv, msg in [(['icl-baselines', '--task', 'linear', '--out', '/proc/x.csv'], 'cannot write /proc/x.csv'),
                      (['icl-baselines', '--task', 'linear', '--out', str(tmp_path / 'd.csv')], 'is a directory'),
                      (['floors', '--out', '/proc/fl'], 'cannot write /proc/fl'),
                      (['collect', 'quick', '--out', str(tmp_path)], 'must be a .csv file'),
                      (['bench', '--out', '/proc/b.csv'], 'cannot write /proc/b.csv'),
                      (['sweep', str(_grid(tmp_path, MARKOV)), '--root', '/proc/r'], 'cannot write /proc/r')]:
        with pytest.raises(SystemExit) as e: main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and 'Traceback' not in err, err


def test_errors_the_user_causes_are_one_line(tmp_path, capsys):
    bad = _grid(tmp_path, 'experiment: bad\nbase: {task: {name: regression, d: 2, d_cur: 3}, steps: 1}\n')
    for argv, msg in [(['sweep', str(bad), '--root', str(tmp_path)], '`d_cur` must be an integer in [1, d = 2]'),
                      (['run', '--grid', str(bad), '--root', str(tmp_path)], '`d_cur` must be an integer in [1, d = 2]'),
                      (['collect', 'nothing', '--root', str(tmp_path)], "no experiment 'nothing' under")]:
        with pytest.raises(SystemExit) as e: main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and 'Traceback' not in err


def _interrupt(argv, wait_for, tmp_path, timeout=240, settle=0):
    "Start a command, wait until `wait_for()` holds, Ctrl-C it: its exit code and stderr."
    # SIGINT at its default in the child, as under a terminal: a background job of a shell without job control (`cmd &`)
    # inherits it ignored, and Python then installs no KeyboardInterrupt (the command would not hear the Ctrl-C we send)
    p = subprocess.Popen([*CLI, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not wait_for() and time.time() - t0 < timeout and p.poll() is None: time.sleep(0.2)
    time.sleep(settle)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return p.returncode, err


def test_ctrl_c_on_sweep_is_one_line_and_resumes(tmp_path):
    grid = _grid(tmp_path, MARKOV.replace('steps: 2', 'steps: 100000').replace('eval_every: 1', 'eval_every: 20'))
    code, err = _interrupt(['sweep', grid, '--root', tmp_path / 'r', '--engine', 'python'],
                           lambda: any((tmp_path / 'r' / 'mk').glob('*/ckpt.pt')), tmp_path)
    assert code == 130 and 'Traceback' not in err and 'KeyboardInterrupt' not in err
    assert err.strip().split('\n')[-1] == ('interrupted: finished runs are kept and an unfinished one resumes from its checkpoint: '
                                            'run the same command again')


def test_ctrl_c_on_icl_baselines_is_one_line(tmp_path):
    out = tmp_path / 'c.csv'
    code, err = _interrupt(['icl-baselines', '--task', 'decision_tree', '--prompts', '1280', '--out', out, '--methods', 'least_squares', 'xgboost'],
                           lambda: out.exists(), tmp_path, settle=3)  # inside XGBoost's 1,280 fits
    assert code == 130 and 'Traceback' not in err
    assert err.strip().split('\n')[-1].startswith('interrupted: the methods finished so far are in --out')
    assert 'decision_tree/xgboost:   0%|          | 0/1280' in err  # a bar per method over its prompts
    assert set(pd.read_csv(out).method) == {'least_squares'}  # the file stays valid, the finished method kept


def test_icl_baselines_resume_inside_a_method(tmp_path, monkeypatch, capsys):
    import markov_laplace.tasks.regression.curves as curves
    real, calls = curves.predict, []
    def interrupted(method, config, xs, *args):  # Ctrl-C in the third chunk of prompts
        calls.append(len(xs))
        if len(calls) == 3: raise KeyboardInterrupt
        return real(method, config, xs, *args)
    monkeypatch.setattr(curves, 'predict', interrupted)
    out = tmp_path / 'c.csv'
    argv = ['icl-baselines', '--task', 'linear', '--prompts', '300', '--out', str(out), '--methods', 'averaging', '--ks', '0', '5', '20']
    assert main(argv) == 130
    assert sorted(p.name for p in (tmp_path / '.c.partial').glob('*/*.pt')) == ['0-128.pt', '128-256.pt']  # the chunks done
    calls.clear()
    assert main(argv) == 0 and calls == [44]  # resumed: only the last chunk is computed
    assert not (tmp_path / '.c.partial').exists()  # the rows are written, the chunks gone
    monkeypatch.setattr(curves, 'predict', real)
    whole = curves.reference_curves('linear', 300, methods=['averaging'], ks=[0, 5, 20])
    assert (pd.read_csv(out).error - whole.error).abs().max() < 1e-9  # the same curve as in one piece
    assert 'linear/averaging' in capsys.readouterr().err  # its bar
