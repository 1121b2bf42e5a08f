"""The in-context regression baselines against independent ground truth: plain-loop twins, the Lasso's
closed form on an orthogonal design, a per-prompt `nn.Module` + `torch.optim.Adam` loop, hand-made
trees, and invariances."""
import math

import pytest
import torch
from torch import nn

from markov_laplace.tasks.regression.baselines import BASELINES, GD_SETTINGS, LASSO_ALPHAS, TASKS, XGB_SETTINGS, averaging, averaging_loop, baselines_for, gd_init, gd_minibatches, gd_relu_net, gd_relu_net_loop, greedy_tree, lasso, nearest_neighbours, nearest_neighbours_loop, per_prompt_fits, run_baseline, xgboost


def linear(B, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    xs, w = torch.randn(B, n, d, generator=g), torch.randn(B, d, generator=g)
    return xs, (xs @ w[..., None])[..., 0]


def relu_target(B, n, d, seed, width=8):
    g = torch.Generator().manual_seed(seed)
    xs, w = torch.randn(B, n, d, generator=g), torch.randn(B, width, d, generator=g)
    a = torch.randn(B, width, generator=g) * math.sqrt(2 / width)
    return xs, (torch.relu(xs @ w.transpose(1, 2)) * a[:, None]).sum(-1)


def depth1_tree(B, n, d, seed, coord=2, lo=-0.7, hi=1.3):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(B, n, d, generator=g)
    return xs, torch.where(xs[..., coord] > 0, hi, lo)


def err(preds, ys, k):
    "Error at k normalised by the zero predictor's."
    return ((preds[:, k] - ys[:, k]).square().mean() / ys[:, k].square().mean()).item()


def same(a, b):
    "Equal NaN pattern and equal values elsewhere."
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(), b.nan_to_num())


# --- nearest neighbours and averaging: vectorised against plain loops ---

@pytest.mark.parametrize('n_neighbors', [1, 3, 5])
@pytest.mark.parametrize('ks', [None, [0, 2, 7, 13]])
def test_nearest_neighbours_matches_loop(n_neighbors, ks):
    xs, ys = linear(5, 14, 4, seed=n_neighbors)
    fast, ref = nearest_neighbours(xs, ys, n_neighbors, ks=ks), nearest_neighbours_loop(xs, ys, n_neighbors, ks=ks)
    assert torch.equal(fast.isnan(), ref.isnan())
    torch.testing.assert_close(fast.nan_to_num(), ref.nan_to_num(), rtol=1e-5, atol=1e-6)
    assert (fast[:, 0] == 0).all()


def test_nearest_neighbours_exact_match_and_few_examples():
    xs, ys = linear(3, 6, 2, seed=0)
    xs[:, 5] = xs[:, 1]  # the query equals example 1
    p = nearest_neighbours(xs, ys, 1)
    torch.testing.assert_close(p[:, 5], ys[:, 1])
    torch.testing.assert_close(nearest_neighbours(xs, ys, 3)[:, 2], ys[:, :2].mean(1))  # k = 2 < 3: both


def test_averaging_matches_loop():
    xs, ys = linear(5, 14, 4, seed=1)
    torch.testing.assert_close(averaging(xs, ys), averaging_loop(xs, ys), rtol=1e-5, atol=1e-5)
    same(averaging(xs, ys, ks=[3, 0]).isnan(), averaging_loop(xs, ys, ks=[0, 3]).isnan())
    torch.testing.assert_close(averaging(xs, ys, ks=[3, 0]), averaging_loop(xs, ys, ks=[0, 3]), rtol=1e-5, atol=1e-5, equal_nan=True)


def test_averaging_error_falls_with_k():
    xs, ys = linear(512, 201, 5, seed=2)
    p = averaging(xs.double(), ys.double(), ks=[5, 50, 200])
    e = [err(p, ys.double(), k) for k in (5, 50, 200)]
    assert e[0] > e[1] > e[2]
    # for x ~ N(0, I_d) the averaging error is (1 + d) / k (+ 1/k): independent ground truth, loosely
    assert abs(e[2] - (5 + 1) / 200) < 0.02


# --- Lasso ---

def test_lasso_small_alpha_recovers_linear():
    xs, ys = linear(8, 41, 5, seed=3)
    p = lasso(xs, ys, alpha=1e-4, ks=[40])
    assert err(p, ys, 40) < 1e-5
    ls = torch.linalg.lstsq(xs[:, :40].double(), ys[:, :40, None].double()).solution  # least squares, exact here
    torch.testing.assert_close(p[:, 40].double(), (xs[:, 40:41].double() @ ls)[:, 0, 0], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('alpha', [0.01, 0.3])
def test_lasso_is_soft_thresholding_on_an_orthogonal_design(alpha):
    k, d = 8, 5
    g = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(k, d, generator=g, dtype=torch.float64))
    X = math.sqrt(k) * q  # XᵀX / k = I: the Lasso solution is soft-thresholding of Xᵀy / k
    y = torch.randn(k, generator=g, dtype=torch.float64)
    query = torch.randn(d, generator=g, dtype=torch.float64)
    z = X.T @ y / k
    w = z.sign() * (z.abs() - alpha).clamp(min=0)
    xs = torch.cat([X, query[None]])[None]  # (1, k + 1, d)
    ys = torch.cat([y, torch.zeros(1, dtype=torch.float64)])[None]
    torch.testing.assert_close(lasso(xs, ys, alpha=alpha, ks=[k])[0, k], query @ w, rtol=1e-6, atol=1e-8)


# --- the GD-trained ReLU net ---

def test_gd_init_matches_nn_linear_bounds():
    w = gd_init(1, 1, 400, 1000, torch.Generator().manual_seed(0))
    ref = nn.Linear(400, 1000)
    for ours, theirs in ((w['w1'], ref.weight), (w['b1'], ref.bias)):
        assert abs(ours.abs().max().item() - theirs.detach().abs().max().item()) < 1e-3
        assert abs(ours.std().item() - theirs.detach().std().item()) < 2e-3


def test_gd_minibatches_are_uniform_without_replacement():
    idx, real = gd_minibatches([2, 10], steps=4000, batch_size=4, generator=torch.Generator().manual_seed(1))
    assert real.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert all(len(set(r)) == 4 for r in idx[:, 1].tolist())
    counts = torch.bincount(idx[:, 1].flatten(), minlength=10).double() / (4000 * 4)
    torch.testing.assert_close(counts, torch.full((10,), 0.1, dtype=torch.float64), atol=0.01, rtol=0)
    assert all(sorted(r[:2]) == [0, 1] for r in idx[:, 0].tolist())


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_gd_relu_net_matches_per_prompt_loop(dtype, tol):
    xs, ys = relu_target(3, 9, 4, seed=5)
    xs, ys = xs.to(dtype), ys.to(dtype)
    kw = dict(hidden=6, steps=30, lr=1e-2, batch_size=3, ks=[0, 2, 3, 8])
    fast = gd_relu_net(xs, ys, generator=torch.Generator().manual_seed(6), **kw)
    ref = gd_relu_net_loop(xs, ys, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(fast.isnan(), ref.isnan())
    torch.testing.assert_close(fast.nan_to_num(), ref.nan_to_num(), rtol=tol, atol=tol)


def test_gd_relu_net_fits_a_relu_target_and_is_seeded():
    xs, ys = relu_target(16, 61, 5, seed=7)
    kw = GD_SETTINGS['code'] | dict(steps=200, ks=[60])
    p = gd_relu_net(xs, ys, generator=torch.Generator().manual_seed(8), **kw)
    assert err(p, ys, 60) < 0.3  # far better than the zero predictor's 1
    xs, ys, kw = xs[:4, :8], ys[:4, :8], dict(hidden=10, steps=20, batch_size=3, ks=[2, 7])
    p = gd_relu_net(xs, ys, generator=torch.Generator().manual_seed(8), **kw)
    same(p, gd_relu_net(xs, ys, generator=torch.Generator().manual_seed(8), **kw))
    assert not (p[:, 7] == gd_relu_net(xs, ys, generator=torch.Generator().manual_seed(9), **kw)[:, 7]).any()


@pytest.mark.gpu
def test_gd_relu_net_gpu_matches_cpu():
    xs, ys = relu_target(4, 12, 5, seed=10)
    kw = dict(hidden=16, steps=50, lr=5e-3, batch_size=4, ks=[3, 11])
    cpu = gd_relu_net(xs.double(), ys.double(), generator=torch.Generator().manual_seed(1), **kw)
    gpu = gd_relu_net(xs.double().cuda(), ys.double().cuda(), generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(gpu.cpu().nan_to_num(), cpu.nan_to_num(), rtol=1e-8, atol=1e-8)


# --- trees and XGBoost ---

@pytest.mark.parametrize('max_depth', [1, 2, 4, None])
def test_greedy_tree_recovers_a_depth1_tree(max_depth):
    xs, ys = depth1_tree(32, 51, 5, seed=11)
    p = greedy_tree(xs, ys, max_depth=max_depth, ks=[50])[:, 50]
    # exact except where the query falls between the fitted threshold and 0
    assert ((p - ys[:, 50]).abs() < 1e-6).sum() >= 29
    assert torch.equal(greedy_tree(xs, ys, max_depth=max_depth, sign=True, ks=[50])[:, 50], ys[:, 50])


def test_xgboost_recovers_a_depth1_tree():
    xs, ys = depth1_tree(8, 51, 5, seed=12)
    for setting in XGB_SETTINGS.values():
        assert err(xgboost(xs, ys, **setting, sign=True, ks=[50]), ys, 50) < 1e-3
        assert err(xgboost(xs, ys, **setting, ks=[50]), ys, 50) < 0.3


@pytest.mark.parametrize('fit', [greedy_tree, xgboost])
def test_sign_variants_ignore_positive_scaling(fit):
    xs, ys = linear(4, 21, 5, seed=13)
    same(fit(xs, ys, sign=True, ks=[1, 7, 20]), fit(2.5 * xs, ys, sign=True, ks=[1, 7, 20]))


def test_per_prompt_fits_are_deterministic_across_processes():
    xs, ys = depth1_tree(4, 16, 3, seed=14)
    for fit in (greedy_tree, xgboost):
        same(fit(xs, ys, ks=[5, 15]), fit(xs, ys, ks=[5, 15], n_jobs=2))
        same(fit(xs, ys, ks=[5, 15]), fit(xs, ys, ks=[5, 15]))


# --- registry, interface, bad input ---

def test_every_registered_baseline_runs_on_its_tasks():
    assert set(baselines_for('sparse_linear')) >= {f'lasso_{a:g}' for a in LASSO_ALPHAS}
    xs, ys = linear(2, 5, 3, seed=15)
    for name, b in BASELINES.items():
        assert b.tasks and set(b.tasks) <= set(TASKS)
        fewer = dict(steps=5) if b.fn is gd_relu_net else {}  # the registered settings train for minutes on a CPU
        p = run_baseline(name, xs, ys, generator=torch.Generator().manual_seed(0), ks=[0, 4], **fewer)
        assert p.shape == ys.shape and p.dtype == ys.dtype
        assert (p[:, 0] == 0).all() and p[:, 4].isfinite().all() and p[:, 1:4].isnan().all()


xs0, ys0 = linear(2, 5, 3, seed=16)


@pytest.mark.parametrize('call,name', [
    (lambda: averaging(xs0[0], ys0), 'xs'),
    (lambda: averaging(xs0.long(), ys0), 'xs'),
    (lambda: averaging(xs0, ys0[:, :4]), 'ys'),
    (lambda: averaging(xs0.clone().index_fill_(1, torch.tensor([2]), math.inf), ys0), 'xs'),
    (lambda: nearest_neighbours(xs0, ys0.clone().index_fill_(1, torch.tensor([2]), math.nan)), 'ys'),
    (lambda: nearest_neighbours(xs0, ys0, n_neighbors=0), 'n_neighbors'),
    (lambda: averaging(xs0, ys0, ks=[5]), 'ks'),
    (lambda: averaging(xs0, ys0, ks=[]), 'ks'),
    (lambda: averaging(xs0, ys0, ks=[1.5]), 'ks'),
    (lambda: lasso(xs0, ys0, alpha=0), 'alpha'),
    (lambda: lasso(xs0, ys0, n_jobs=0), 'n_jobs'),
    (lambda: gd_relu_net(xs0, ys0), 'generator'),
    (lambda: gd_relu_net(xs0, ys0, steps=0, generator=torch.Generator()), 'steps'),
    (lambda: gd_relu_net(xs0, ys0, lr=-1.0, generator=torch.Generator()), 'lr'),
    (lambda: greedy_tree(xs0, ys0, max_depth=0), 'max_depth'),
    (lambda: greedy_tree(xs0, ys0, sign=1), 'sign'),
    (lambda: xgboost(xs0, ys0, learning_rate=2.0), 'learning_rate'),
    (lambda: xgboost(xs0, ys0, tree_method='gpu'), 'tree_method'),
    (lambda: baselines_for('trees'), 'task'),
    (lambda: run_baseline('lasso', xs0, ys0), 'name'),
    (lambda: run_baseline('averaging', xs0, ys0, steps=3), 'steps'),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=f'`{name}` must be'):
        call()


def _lasso_k1(xs, ys, alpha):
    "The exact Lasso prediction from one example: all the weight on its largest |x_j|, soft-thresholded."
    x, y, q = xs[:, 0].double(), ys[:, 0].double(), xs[:, 1].double()
    j = x.abs().argmax(-1, keepdim=True)
    t = y.sign() * (y.abs() - alpha / x.gather(1, j)[:, 0].abs()).clamp(min=0)
    return (q.gather(1, j) / x.gather(1, j))[:, 0] * t


def test_lasso_is_the_estimator_not_its_stopping_rule():
    "k = 1 exact at every alpha; the fit satisfies the KKT conditions; the public code's tol = 1e-4 does not converge at alpha = 1e-4."
    import numpy as np
    from markov_laplace.tasks.regression.baselines import LASSO_ALPHAS, LASSO_KKT_TOL, _lasso_fit_predict, lasso, lasso_kkt_violation
    from markov_laplace.tasks.regression.functions import ICLTaskConfig, sample_prompts
    from sklearn.linear_model import LassoLars
    xs, ys = sample_prompts(ICLTaskConfig(task='sparse_linear', n_points=12), 48, torch.Generator().manual_seed(0))
    for a in LASSO_ALPHAS:
        assert (lasso(xs, ys, alpha=a, ks=[1])[:, 1].double() - _lasso_k1(xs, ys, a)).abs().max() < 1e-5, a
    x, y = xs.double().numpy(), ys.double().numpy()
    for b in range(8):
        for k in (3, 10):
            w = LassoLars(alpha=1e-4, fit_intercept=False).fit(x[b, :k], y[b, :k]).coef_
            assert lasso_kkt_violation(x[b, :k], y[b, :k], w, 1e-4) < LASSO_KKT_TOL
    # coordinate descent agrees with it once its tolerance is tight, and not at the default one
    cd_tight = lasso(xs[:8], ys[:8], alpha=0.01, ks=[10], solver='cd', tol=1e-12)[:, 10]
    assert (lasso(xs[:8], ys[:8], alpha=0.01, ks=[10])[:, 10] - cd_tight).abs().max() < 1e-5
    assert (lasso(xs, ys, alpha=1e-4, ks=[1], solver='cd')[:, 1].double() - _lasso_k1(xs, ys, 1e-4)).abs().max() > 1e-2
