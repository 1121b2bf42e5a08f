"""Progress on every long job, one summary at the end, and Ctrl-C through worker processes (issue 22, item 5)."""
import time

import pandas as pd

from test_cli_user import MARKOV, _cli, _grid, _interrupt
import markov_laplace.bench as bench
from markov_laplace import cli


# -- progress on every long job, one summary -----------------------------------------------------------

def test_papermill_sweep_shows_runs_done_and_one_summary(tmp_path):
    grid = _grid(tmp_path, MARKOV.replace('order: [1, 2]', 'order: [1]'))
    out = _cli('sweep', grid, '--root', tmp_path / 'r', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'runs: 100%' in out.stderr and '1/1' in out.stderr and 'Executing' not in out.stderr  # runs done, not papermill's cells
    assert out.stdout.count('runs finished') == 1 and (tmp_path / 'r' / 'mk' / 'order=1' / 'notebook.ipynb').exists()


def test_workers_show_runs_done_and_one_summary(tmp_path):
    out = _cli('sweep', _grid(tmp_path, MARKOV), '--root', tmp_path / 'r', '--engine', 'python', '--workers', '2', '--gpus', '0', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'runs: 100%' in out.stderr and '2/2' in out.stderr
    assert out.stdout.strip().splitlines() == [f"2 of 2 runs finished, 0 failed (0 broken) under {tmp_path / 'r'}"]


def test_ctrl_c_reaches_the_workers(tmp_path):
    grid = _grid(tmp_path, MARKOV.replace('steps: 2', 'steps: 100000').replace('eval_every: 1', 'eval_every: 20'))
    ckpts = lambda: sorted((tmp_path / 'r' / 'mk').glob('*/ckpt.pt'))
    code, err = _interrupt(['sweep', grid, '--root', tmp_path / 'r', '--engine', 'python', '--workers', '2', '--gpus', '0'],
                           lambda: len(ckpts()) == 2, tmp_path)
    assert code == 130 and 'Traceback' not in err and err.count('interrupted:') == 1
    before = [p.stat().st_mtime_ns for p in ckpts()]
    time.sleep(3)
    assert [p.stat().st_mtime_ns for p in ckpts()] == before  # the workers stopped with their parent


def test_floors_and_bench_show_overall_progress(monkeypatch, capsys):
    row = lambda name: pd.DataFrame(dict(benchmark=[name], shape=['-'], ms=[1.0]))
    for name in ('bench_data', 'bench_model', 'bench_icl', 'bench_families', 'bench_clipping'):
        monkeypatch.setattr(bench, name, lambda *a, _n=name, **k: row(_n))
    a = cli._parser().parse_args(['bench', '--repeat', '1'])
    assert len(cli._bench(a)) == 5
    err = capsys.readouterr().err
    assert 'bench: 100%' in err and '5/5' in err  # a bar over the parts


def test_bench_times_the_families_with_and_without_fused_adamw(monkeypatch):
    "`bench --fused-optimizer both` asks bench_families for rows of each optimizer, the other options where they were."
    import inspect
    seen, signature = {}, inspect.signature(bench.bench_families)
    def families(*a, **k):
        seen.update(signature.bind(*a, **k).arguments)
        return pd.DataFrame(dict(benchmark=['f'], shape=['-'], ms=[1.0]))
    clipping, clip_sig = {}, inspect.signature(bench.bench_clipping)
    def clip(*a, **k):
        clipping.update(clip_sig.bind(*a, **k).arguments)
        return pd.DataFrame(dict(benchmark=['c'], shape=['-'], ms=[1.0]))
    monkeypatch.setattr(bench, 'bench_families', families)
    monkeypatch.setattr(bench, 'bench_clipping', clip)
    cli._bench(cli._parser().parse_args(['bench', '--no-markov', '--no-icl', '--families', 'icl-s4d', '--fused-optimizer', 'both']))
    assert seen['fused'] == (False, True) and seen['families'] == ('icl-s4d',) and seen['compile'] == 'auto'
    assert seen['repeat'] == 30 and seen['sizes'] == ('-tiny', '-small') and seen.get('single', True)  # every option where it belongs
    assert clipping['families'] == ('icl-s4d',) and clipping['sizes'] == seen['sizes'] and clipping['runs'] == seen['runs'] == ()
    cli._bench(cli._parser().parse_args(['bench', '--no-markov', '--no-icl', '--family-runs', '3', '--no-single-run']))
    assert seen['fused'] == (False,) and seen['single'] is False and seen['runs'] == (3,)  # the default optimizer; batched rows only


def test_bench_resumes_its_rows_file(tmp_path, capsys):
    "A --rows file of this commit and machine is resumed: the steps it holds are not timed again; another commit's is refused."
    rows = tmp_path / 'rows.csv'
    args = ['bench', '--device', 'cpu', '--no-markov', '--no-icl', '--family-sizes', 'tiny', '--families', 'icl-transformer', 'icl-s4d',
            '--pairs', '5', '--repeat', '2', '--rows', str(rows), '--commit', 'abc']
    cli._bench(cli._parser().parse_args(args))
    first = pd.read_csv(rows)
    keys = {bench.family_row_key(w) for w in first.what} - {None}
    assert keys == {('icl-transformer-tiny', 5, 1, False), ('icl-s4d-tiny', 5, 1, False)} and first.what.str.contains('gradient clipping').any()
    cut = first.what.str.startswith('icl-s4d-tiny training step') & ~first.what.str.contains('first step')
    first[~cut].to_csv(rows, index=False)  # as if cut after S4D's first step, before its timed one
    capsys.readouterr()
    cli._bench(cli._parser().parse_args(args))
    printed = capsys.readouterr().out
    assert 'icl-s4d-tiny training step' in printed and 'icl-transformer-tiny training step' not in printed  # only what was missing
    assert 'gradient clipping' in printed  # seconds: measured again, its old rows replaced
    again = pd.read_csv(rows)
    assert {bench.family_row_key(w) for w in again.what} - {None} == keys and len(again) == len(first)  # nothing written twice
    assert again.what.str.contains('icl-s4d-tiny training step.*first step').sum() == 1
    kept = first[first.what.str.startswith('icl-transformer-tiny training step')].set_index('what').ms
    assert again.set_index('what').ms[kept.index].tolist() == kept.tolist()  # the kept rows as they were
    import pytest
    with pytest.raises(ValueError, match='--rows: .* another commit or machine'):
        cli._bench(cli._parser().parse_args(args[:-1] + ['def']))
    assert len(pd.read_csv(rows)) == len(first)  # refused before any work


def test_bench_keeps_the_rows_of_other_calls_in_its_rows_file(tmp_path, monkeypatch, capsys):
    """Calls with different options fill one --rows file: a call keeps the rows it does not measure again (the anchors'
    without --anchors or at other lengths, another preset's), and replaces those it does, nothing twice."""
    rows = tmp_path / 'rows.csv'
    base = ['bench', '--device', 'cpu', '--no-markov', '--no-icl', '--family-sizes', 'tiny', '--pairs', '5', '--repeat', '2',
            '--rows', str(rows), '--commit', 'abc']
    anchor = 'anchor X (test) training step (eager) [1 parameters, B=64 pairs={} d=20]'
    def anchors(ms):  # a stand-in for bench_anchors (no anchor package needed): a row per length, logged as the real one logs it
        def fake(device, pairs, repeat, log=None, **kwargs):
            out = [dict(benchmark=anchor.split(' [')[0], shape=f'1 parameters, B=64 pairs={n} d=20', ms=ms, target_ms=None) for n in pairs]
            for row in out: log(row)
            return pd.DataFrame(out)
        return fake
    monkeypatch.setattr(bench, 'bench_anchors', anchors(1.5))
    cli._bench(cli._parser().parse_args(base + ['--families', 'icl-transformer', 'icl-s4d', '--anchors']))
    first = pd.read_csv(rows)
    assert (first.what == anchor.format(5)).sum() == 1 and first.what.str.startswith('icl-s4d-tiny training step').sum() == 2
    cli._bench(cli._parser().parse_args(base + ['--families', 'icl-transformer', '--no-single-run', '--family-runs', '2']))
    second = pd.read_csv(rows)
    assert (second.what == anchor.format(5)).sum() == 1  # not measured by this call: kept
    s4d = first[first.what.str.startswith('icl-s4d-tiny')].set_index('what').ms
    assert second.set_index('what').ms[s4d.index].tolist() == s4d.tolist()  # another preset's rows, as they were
    assert second.what.str.contains('icl-transformer-tiny training step, 2 runs batched').sum() == 2  # the new rows beside them
    assert second.what.str.contains('icl-transformer-tiny training step, single run').sum() == 2  # the single run's, kept
    monkeypatch.setattr(bench, 'bench_anchors', anchors(2.5))
    cli._bench(cli._parser().parse_args(base[:-6] + ['--pairs', '7'] + base[-6:] + ['--no-families', '--anchors']))
    third = pd.read_csv(rows)
    assert third.set_index('what').ms[[anchor.format(5), anchor.format(7)]].tolist() == [1.5, 2.5]  # another length's anchor row stays
    cli._bench(cli._parser().parse_args(base + ['--no-families', '--anchors']))
    fourth = pd.read_csv(rows)
    assert fourth.set_index('what').ms[[anchor.format(5), anchor.format(7)]].tolist() == [2.5, 2.5]  # measured again: replaced
    assert len(fourth) == len(third) == len(second) + 1 and fourth.what.is_unique


def test_bench_resumes_a_fused_step_cut_after_its_first_step(tmp_path):
    "A step with fused AdamW cut after its first-step row: the same command again measures it whole, its first step once."
    rows = tmp_path / 'rows.csv'
    args = ['bench', '--device', 'cpu', '--no-markov', '--no-icl', '--family-sizes', 'tiny', '--families', 'icl-s4d', '--pairs', '5',
            '--repeat', '2', '--fused-optimizer', 'yes', '--rows', str(rows), '--commit', 'abc']
    cli._bench(cli._parser().parse_args(args))
    first = pd.read_csv(rows)
    timed = first.what.str.startswith('icl-s4d-tiny training step') & ~first.what.str.contains('first step')
    assert timed.sum() == 1 and first[timed].what.iloc[0].count('fused AdamW') == 1
    first[~timed].to_csv(rows, index=False)  # cut after the first step
    cli._bench(cli._parser().parse_args(args))
    again = pd.read_csv(rows)
    assert again.what.str.contains('icl-s4d-tiny training step.*first step').sum() == 1 and len(again) == len(first)
    assert again.what.is_unique
