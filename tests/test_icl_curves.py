"Reference curves of the function classes (tasks/regression/04_curves) and the `icl-baselines` command."
import json

import pandas as pd
import pytest
import torch

from markov_laplace.cli import main
from markov_laplace.tasks.regression.curves import CURVE_COLUMNS, PAPER_BASELINES, load_curves, paper_table, predict, reference_curves, reference_methods, task_config
from markov_laplace.tasks.regression.functions import sample_prompts


def test_columns_and_shape():
    cur = reference_curves('sparse_linear', 32, ks=[0, 3, 10, 40])
    assert list(cur.columns) == CURVE_COLUMNS
    assert len(cur) == 4 * len(reference_methods('sparse_linear'))
    assert set(cur.method) == set(reference_methods('sparse_linear')) and set(cur.task) == {'sparse_linear'}
    assert (cur.lo <= cur.error).all() and (cur.error <= cur.hi).all()
    assert (cur[cur.k == 0].error > 0).all()  # every method predicts 0 with no example
    tree = reference_curves('decision_tree', 8, ks=[100], methods=['least_squares', 'greedy_tree_depth2'])
    assert tree.k.tolist() == [100, 100] and task_config('decision_tree').n_points == 101


def test_optimal_at_or_below_the_others():
    "Sparse posterior <= least squares and Lasso; least squares exact on linear prompts once k >= d."
    sp = reference_curves('sparse_linear', 128, ks=[2, 5, 10, 15],
                          methods=['sparse_posterior', 'least_squares', 'lasso_0.01', 'averaging']).pivot(index='k', columns='method', values='error')
    for m in ('least_squares', 'lasso_0.01', 'averaging'): assert (sp.sparse_posterior <= sp[m] + 1e-9).all(), m
    lin = reference_curves('linear', 64, ks=[5, 25, 40]).pivot(index='k', columns='method', values='error')
    assert lin.least_squares[25] < 1e-8 and lin.least_squares[40] < 1e-8
    assert (lin.least_squares[[25, 40]] < lin.nearest_neighbours[[25, 40]]).all()
    noisy = reference_curves('noisy_linear', 256, ks=[19, 20, 22, 30], methods=['ridge', 'least_squares']).pivot(index='k', columns='method', values='error')
    assert (noisy.ridge < noisy.least_squares).all()  # ridge with λ = σ² is the posterior mean; least squares peaks at k = d


def test_resume_keeps_finished_methods(tmp_path):
    out = tmp_path / 'c.csv'
    reference_curves('linear', 16, ks=[0, 5], methods=['least_squares'], out=out)
    meta = json.loads(out.with_suffix('.json').read_text())
    reference_curves('relu_net', 8, ks=[10], methods=['averaging'], out=out)
    again = reference_curves('linear', 16, ks=[0, 5], out=out)
    assert json.loads(out.with_suffix('.json').read_text())['linear/least_squares'] == meta['linear/least_squares']
    df, _ = load_curves(out)
    assert set(zip(df.task, df.method)) == {('relu_net', 'averaging')} | {('linear', m) for m in reference_methods('linear')}
    assert len(again) == 2 * 3
    reference_curves('linear', 32, ks=[0, 5], methods=['least_squares'], out=out)  # a new setting is recomputed
    assert json.loads(out.with_suffix('.json').read_text())['linear/least_squares']['n_prompts'] == 32


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match='`task`'): reference_curves('cubic', 8)
    with pytest.raises(ValueError, match='`n_prompts`'): reference_curves('linear', 0)
    with pytest.raises(ValueError, match='`methods`'): reference_curves('linear', 8, methods=['xgboost'])
    with pytest.raises(ValueError, match='`ks`'): reference_curves('linear', 8, ks=[41])
    with pytest.raises(ValueError, match='`overrides`'): reference_curves('linear', 8, overrides={'least_squares': {}})
    with pytest.raises(ValueError, match='`device`'): reference_curves('linear', 8, device='tpu')


def test_paper_table_marks_agreement():
    rows = [dict(task=t, method=m, k=k, error=p, lo=p - 0.01, hi=p + 0.01) for t, m, k, p, _ in PAPER_BASELINES[:-1]]
    tab = paper_table(pd.DataFrame(rows, columns=CURVE_COLUMNS))
    assert tab.agrees.iloc[:-1].all() and tab.agrees.iloc[-1] is None and len(tab) == len(PAPER_BASELINES)


def test_cli_writes_a_valid_csv(tmp_path, capsys):
    out = tmp_path / 'b.csv'
    assert main(['icl-baselines', '--task', 'sparse_linear', '--prompts', '16', '--out', str(out), '--ks', '0', '5', '10',
                 '--methods', 'sparse_posterior', 'lasso_0.01', '--seed', '3']) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == CURVE_COLUMNS and len(df) == 6 and df.error.notna().all()
    assert 'wrote' in capsys.readouterr().out
    # the same numbers as the function with the same seed
    ref = reference_curves('sparse_linear', 16, ks=[0, 5, 10], seed=3, methods=['sparse_posterior', 'lasso_0.01'])
    pd.testing.assert_frame_equal(df.sort_values(['method', 'k']).reset_index(drop=True),
                                  ref.sort_values(['method', 'k']).reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize('argv, msg', [
    (['--task', 'cubic'], "argument --task: invalid choice: 'cubic'"),
    (['--task', 'linear', '--prompts', '0'], 'argument --prompts: must be an integer >= 1'),
    (['--task', 'linear', '--prompts', 'many'], "argument --prompts: must be an integer >= 1; got 'many'"),
    (['--task', 'linear', '--jobs', '0'], 'argument --jobs: must be an integer >= 1'),
    (['--task', 'linear', '--ks', '-1'], 'argument --ks: must be an integer >= 0'),
    (['--task', 'linear', '--ks', '41'], 'argument --ks: must be integers in [0, 40]'),
    (['--task', 'decision_tree', '--methods', 'lasso_0.01'], "argument --methods: 'lasso_0.01' is not a method of decision_tree"),
    (['--task', 'linear', '--device', 'tpu'], 'argument --device: must be cpu, cuda or cuda:N'),
])
def test_cli_refuses_bad_arguments(tmp_path, capsys, argv, msg):
    out = tmp_path / 'x.csv'
    with pytest.raises(SystemExit) as e: main(['icl-baselines', '--out', str(out), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert msg in err[-1], err[-1]
    assert not out.exists()
