"Reference curves of the function classes (tasks/regression/04_curves) and the `icl-baselines` command."
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from markov_laplace.cli import main
from markov_laplace.tasks.regression.curves import BASELINE_COLUMNS, CURVE_COLUMNS, PAPER_BASELINES, load_curves, paper_table, predict, reference_curves, reference_methods, task_config
from markov_laplace.tasks.regression.functions import sample_prompts


def test_columns_and_shape():
    cur = reference_curves('sparse_linear', 32, ks=[0, 3, 10, 40])
    assert list(cur.columns) == BASELINE_COLUMNS and list(cur.columns)[:6] == CURVE_COLUMNS
    assert len(cur) == 4 * len(reference_methods('sparse_linear'))
    assert set(cur.method) == set(reference_methods('sparse_linear')) and set(cur.task) == {'sparse_linear'}
    assert (cur.lo <= cur.error).all() and (cur.error <= cur.hi).all()
    assert (cur[cur.k == 0].error > 0).all()  # every method predicts 0 with no example
    tree = reference_curves('decision_tree', 8, ks=[100], methods=['least_squares', 'greedy_tree_depth2'])
    assert tree.k.tolist() == [100, 100] and task_config('decision_tree').n_points == 101


def test_optimal_at_or_below_the_others():
    "Sparse posterior <= least squares and Lasso; least squares exact on linear prompts once k >= d."
    from statistics import NormalDist
    from markov_laplace.tasks.regression.curves import paired_differences
    # on one small sample a mean can come out in either order by chance: the comparison is paired, with its interval
    sp = paired_differences('sparse_linear', 128, ks=[2, 5, 10, 15], methods=['least_squares', 'lasso_0.01', 'averaging'])
    assert (sp['diff'] + NormalDist().inv_cdf(0.9995) * sp.se >= -1e-6).all()
    lin = reference_curves('linear', 64, ks=[5, 25, 40]).pivot(index='k', columns='method', values='error')
    assert lin.least_squares[25] < 1e-8 and lin.least_squares[40] < 1e-8
    assert (lin.least_squares[[25, 40]] < lin.nearest_neighbours[[25, 40]]).all()
    noisy = reference_curves('noisy_linear', 256, ks=[10, 19, 20, 22, 30], methods=['ridge', 'least_squares'])
    assert noisy[noisy.method == 'least_squares'].stat.tolist() == ['mean', 'median', 'median', 'median', 'mean']  # no variance near k = d
    means = noisy[noisy.stat == 'mean'].pivot(index='k', columns='method', values='error').dropna()
    assert means.index.tolist() == [10, 30] and (means.ridge < means.least_squares).all()  # ridge with λ = σ² is the posterior mean


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
    t, m, k, p, _ = PAPER_BASELINES[0]  # a band that leaves the paper's number out
    off = paper_table(pd.DataFrame([dict(task=t, method=m, k=k, error=p + 1, lo=p + 0.5, hi=p + 1.5)], columns=CURVE_COLUMNS))
    assert off.agrees.iloc[0] == False  # noqa: E712 (a numpy bool)


def test_cli_writes_a_valid_csv(tmp_path, capsys):
    out = tmp_path / 'b.csv'
    assert main(['icl-baselines', '--task', 'sparse_linear', '--prompts', '16', '--out', str(out), '--ks', '0', '5', '10',
                 '--methods', 'sparse_posterior', 'lasso_0.01', '--seed', '3']) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == BASELINE_COLUMNS and len(df) == 6 and df.error.notna().all()
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


ICL = Path(__file__).resolve().parents[1] / 'runs' / 'icl'


def test_optimum_never_above_a_baseline_beyond_the_paired_interval():
    "Committed paired differences (baseline - optimum) on shared prompts, and a fresh small set."
    from statistics import NormalDist
    from markov_laplace.tasks.regression.curves import paired_differences
    z = NormalDist().inv_cdf(0.9995)
    paired = pd.read_csv(ICL / 'paired.csv')
    assert set(paired.task) == {'sparse_linear', 'linear', 'skewed_linear', 'noisy_linear'}
    assert (paired['diff'] + z * paired.se >= -1e-6).all()  # 1e-6: float32 round-off where both are exact (k >= d)
    # the committed curves: the posterior's mean below least squares' at every k (before: above at k = 2, on 1,280 prompts)
    df, meta = load_curves(ICL / 'baselines.csv')
    sp = df[df.task == 'sparse_linear'].pivot(index='k', columns='method', values='error')
    assert (sp.sparse_posterior <= sp.least_squares + 1e-6).all(), sp[sp.sparse_posterior > sp.least_squares + 1e-6]
    assert meta['sparse_linear/sparse_posterior']['n_prompts'] == meta['sparse_linear/least_squares']['n_prompts'] > 1280
    fresh = paired_differences('sparse_linear', 256, seed=5, ks=[1, 2, 3, 4, 10], methods=['least_squares', 'lasso_0.01', 'averaging'])
    assert (fresh['diff'] + z * fresh.se >= -1e-6).all() and (fresh[fresh.k >= 4]['diff'] > 0).all()


def test_medians_exactly_where_theory_gives_no_variance():
    from markov_laplace.tasks.regression.optimal import least_squares_moments
    cur = reference_curves('relu_net', 64, ks=[10, 17, 20, 23, 24], methods=['least_squares', 'averaging'])
    assert cur[cur.method == 'least_squares'].stat.tolist() == ['mean', 'median', 'median', 'median', 'mean']
    assert set(cur[cur.method == 'averaging'].stat) == {'mean'}
    df, meta = load_curves(ICL / 'baselines.csv')
    for task in ('noisy_linear', 'decision_tree', 'relu_net'):
        ls = df[(df.task == task) & (df.method == 'least_squares')]
        assert sorted(ls[ls.stat == 'median'].k) == [k for k in range(20 * 2 + 1) if not least_squares_moments(k, 20)[1]], task
    assert set(df[df.stat == 'median'].method) == {'least_squares'}
    assert {meta[f'noisy_linear/{m}']['divisor_value'] for m in reference_methods('noisy_linear')} == {21.0}


def test_no_verdict_flips_between_two_prompt_seeds():
    "Per seed, no comparison is reproduced on one and not reproduced on the other; the stable verdict is inconclusive wherever they differ."
    from markov_laplace.tasks.regression.curves import paper_verdicts, stable_verdicts
    checks = pd.read_csv(ICL / 'paper_checks.csv')
    assert sorted(set(checks.seed)) == [0, 1] and checks.n_prompts.min() > 1280
    comps = list(PAPER_BASELINES) + [(t, l, k, p, 0.005) for t, l, k in set(zip(checks.task, checks.label, checks.k))
                                     for p in {'decision_tree': (0.80, 0.62, 0.50, 0.31), 'sparse_linear': (0.62, 0.08), 'relu_net': (0.17,)}[t]]
    v = paper_verdicts(checks, comps)
    per = v.groupby(['task', 'label', 'k', 'paper']).status.agg(set)
    assert not any({'reproduced', 'not reproduced'} <= s for s in per), per[per.map(lambda s: len(s) > 1)]
    st = stable_verdicts(v).set_index(['task', 'label', 'k', 'paper'])
    assert (st.loc[per[per.map(len) > 1].index].verdict == 'inconclusive').all()


def test_every_paper_number_is_scored_on_two_seeds():
    "Each of Garg et al.'s baseline numbers has our score of its setting at its k on seeds 0 and 1, on more prompts than the paper's."
    checks = pd.read_csv(ICL / 'paper_checks.csv')
    for t, label, k, *_ in PAPER_BASELINES:
        got = checks[(checks.task == t) & (checks.label == label) & (checks.k == k)]
        assert sorted(got.seed) == [0, 1] and (got.n_prompts > 1280).all(), (t, label, k)
