"""Optimal predictors against independent ground truth: least squares' 1 - k/d, numpy's lstsq, the Gaussian posterior
mean written with numpy, the sparse posterior enumerated with numpy, its noiseless limit, and bad input."""
import itertools
import math

import numpy as np
import pytest
import torch

from markov_laplace.tasks.regression.optimal import _least_squares_ref, _spd_solve, _spd_solve_ref, least_squares, optimal_predictor, ridge, sparse_posterior, sparse_supports
from markov_laplace.tasks.regression.functions import ICLTaskConfig, sample_ood_prompts, sample_prompts, squared_error, zero_error_divisor


def _errors(pred, ys, cfg): return squared_error(pred, ys, zero_error_divisor(cfg)).double()


def test_least_squares_error_is_one_minus_k_over_d():
    cfg = ICLTaskConfig(d=12, d_cur=12, n_points=16)
    xs, ys = sample_prompts(cfg, 3000, torch.Generator().manual_seed(0))
    err = _errors(least_squares(xs, ys), ys, cfg)
    for k in (0, 3, 8, 11):
        se = err[:, k].std().item() / math.sqrt(len(err))
        assert abs(err[:, k].mean().item() - (1 - k / 12)) < 4 * se, k
    assert err[:, 12:].mean() < 1e-8 and err[:, 12:].max() < 1e-4  # float32 prompts: rounding, amplified by cond(X) at k = d


@pytest.mark.parametrize('kind,d,d_cur', [('standard', 5, 5), ('standard', 6, 3), ('noisy_y', 6, 6), ('standard', 9, 9)])
def test_least_squares_equals_numpy_lstsq(kind, d, d_cur):
    "Full rank, rank 3 of 6 (the curriculum), noisy (least squares past k = d), and underdetermined throughout."
    p = sample_ood_prompts(kind, ICLTaskConfig(d=d, d_cur=d_cur, n_points=14), 25, torch.Generator().manual_seed(1))
    xs, ys = p.xs.double(), p.ys.double()
    torch.testing.assert_close(least_squares(xs, ys), _least_squares_ref(xs, ys), rtol=1e-8, atol=1e-8)
    assert least_squares(p.xs, p.ys).dtype == torch.float32


def test_ridge_is_the_gaussian_posterior_mean():
    "Against the joint Gaussian of (y_1..y_k, f(x_q)) conditioned on the ys, with numpy (kernel form)."
    xs, ys = sample_prompts(ICLTaskConfig(task='noisy_linear', d=4, d_cur=4, n_points=9, noise_std=0.7), 6,
                            torch.Generator().manual_seed(2))
    x, y, lam = xs.double().numpy(), ys.double().numpy(), 0.49
    ref = np.zeros_like(y)
    for b in range(6):
        for k in range(1, 9):
            X = x[b, :k]
            ref[b, k] = x[b, k] @ X.T @ np.linalg.solve(X @ X.T + lam * np.eye(k), y[b, :k])
    torch.testing.assert_close(ridge(xs.double(), ys.double(), lam), torch.from_numpy(ref), rtol=1e-9, atol=1e-9)


def _gauss_logpdf(y, cov):
    sign, logdet = np.linalg.slogdet(cov)
    return -0.5 * (len(y) * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y))


def _sparse_brute(xs, ys, s, d_cur, sigma):
    "Enumerate the supports with itertools; each one's marginal likelihood and the conditional mean of f(x_k)."
    x, y = xs.double().numpy(), ys.double().numpy()
    out = np.zeros_like(y)
    for b in range(x.shape[0]):
        for k in range(1, x.shape[1]):
            logw, pred = [], []
            for S in itertools.combinations(range(d_cur), s):
                X, q = x[b, :k][:, S], x[b, k][list(S)]
                cov = X @ X.T + sigma ** 2 * np.eye(k)
                logw.append(_gauss_logpdf(y[b, :k], cov))
                pred.append(q @ X.T @ np.linalg.solve(cov, y[b, :k]))
            w = np.exp(np.array(logw) - max(logw))
            out[b, k] = w @ np.array(pred) / w.sum()
    return torch.from_numpy(out)


@pytest.mark.parametrize('d,d_cur', [(5, 5), (6, 4)])
def test_sparse_posterior_equals_brute_force_with_noise(d, d_cur):
    cfg = ICLTaskConfig(task='sparse_linear', d=d, d_cur=d_cur, s=2, n_points=9, noise_std=0.5)
    xs, ys = sample_prompts(cfg, 8, torch.Generator().manual_seed(3))
    fast = sparse_posterior(xs.double(), ys.double(), 2, d_cur=d_cur, noise_std=0.5)
    torch.testing.assert_close(fast, _sparse_brute(xs, ys, 2, d_cur, 0.5), rtol=1e-8, atol=1e-8)


def test_noiseless_sparse_posterior_is_the_small_noise_limit():
    cfg = ICLTaskConfig(task='sparse_linear', d=5, d_cur=5, s=2, n_points=9)
    xs, ys = sample_prompts(cfg, 8, torch.Generator().manual_seed(4))
    xs, ys = xs.double(), ys.double()
    exact = sparse_posterior(xs, ys, 2)
    torch.testing.assert_close(exact, _sparse_brute(xs, ys, 2, 5, 1e-4), rtol=0, atol=1e-3)
    gaps = [(sparse_posterior(xs, ys, 2, noise_std=sig) - exact).abs().max().item() for sig in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-4, gaps
    torch.testing.assert_close(exact[:, 3:], ys[:, 3:], rtol=0, atol=1e-6)  # exact once k > s


def test_sparse_posterior_beats_least_squares_and_meets_it_at_d():
    "Paired per prompt: E[LS error − posterior error] >= 0 at every k (4 standard errors), > 0 between s and d, both 0 from d."
    cfg = ICLTaskConfig(task='sparse_linear', d=10, d_cur=10, s=3, n_points=14)
    xs, ys = sample_prompts(cfg, 2000, torch.Generator().manual_seed(5))
    sp, ls = _errors(sparse_posterior(xs, ys, 3), ys, cfg), _errors(least_squares(xs, ys), ys, cfg)
    diff = ls - sp
    se = diff.std(0) / math.sqrt(len(diff))
    assert (diff.mean(0) >= -4 * se - 1e-12).all()
    assert (diff.mean(0)[4:10] > 4 * se[4:10]).all()
    assert sp[:, 4:].max() < 1e-8 and ls[:, 10:].max() < 1e-8


def test_sparse_posterior_at_d_20():
    "The spec's size: C(20, 3) supports; exact from k = s + 1 on 256 prompts, and the prior at k = 0."
    assert sparse_supports(20, 3).shape == (1140, 3)
    cfg = ICLTaskConfig(task='sparse_linear', d=20, d_cur=20, s=3, n_points=8)
    xs, ys = sample_prompts(cfg, 256, torch.Generator().manual_seed(6))
    sp = sparse_posterior(xs, ys, 3)
    assert (sp[:, 0] == 0).all() and _errors(sp, ys, cfg)[:, 4:].max() < 1e-8


def test_unrolled_cholesky_equals_torch():
    g = torch.Generator().manual_seed(7)
    for m in (1, 2, 3, 5):
        M = torch.randn(4, 6, m, m, generator=g, dtype=torch.float64)
        M = M @ M.mT + 0.05 * torch.eye(m, dtype=torch.float64)
        A, b = [[M[..., i, j] for j in range(m)] for i in range(m)], list(torch.randn(4, 6, m, generator=g, dtype=torch.float64).unbind(-1))
        for fast, ref in zip(_spd_solve(A, b), _spd_solve_ref(A, b)):
            torch.testing.assert_close(torch.stack(fast) if isinstance(fast, list) else fast,
                                       torch.stack(ref) if isinstance(ref, list) else ref, rtol=1e-10, atol=1e-10)


def test_optimal_predictor_per_task():
    assert optimal_predictor(ICLTaskConfig(task='linear')) is least_squares
    assert optimal_predictor(ICLTaskConfig(task='skewed_linear')) is least_squares
    assert optimal_predictor(ICLTaskConfig(task='decision_tree')) is None
    cfg = ICLTaskConfig(task='sparse_linear', d=6, d_cur=5, s=2, n_points=7)
    xs, ys = sample_prompts(cfg, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(optimal_predictor(cfg)(xs, ys), sparse_posterior(xs, ys, 2, d_cur=5))


X, Y = torch.zeros(2, 4, 3), torch.zeros(2, 4)
BAD = [
    (lambda: least_squares(X, Y[:, :3]), '`ys.shape` must be (B, n) = (2, 4)'),
    (lambda: least_squares(X[0], Y), '`xs.shape` must be (B, n, d)'),
    (lambda: least_squares(X.long(), Y), '`xs` must be a floating-point tensor'),
    (lambda: least_squares(X, Y * float('nan')), '`xs, ys` must be finite'),
    (lambda: ridge(X, Y, 0.0), '`lam` must be a finite number > 0'),
    (lambda: ridge(X, Y, float('inf')), '`lam` must be a finite number > 0'),
    (lambda: sparse_posterior(X, Y, 4), '`s` must be an integer in [1, d_cur = 3]'),
    (lambda: sparse_posterior(X, Y, 0), '`s` must be an integer in [1, d_cur = 3]'),
    (lambda: sparse_posterior(X, Y, 2, d_cur=4), '`d_cur` must be None or an integer in [1, d = 3]'),
    (lambda: sparse_posterior(X, Y, 2, noise_std=-0.1), '`noise_std` must be a finite number >= 0'),
    (lambda: sparse_posterior(X + float('inf'), Y, 2), '`xs, ys` must be finite'),
]


@pytest.mark.parametrize('call,message', BAD, ids=[m for _, m in BAD])
def test_bad_input_names_the_parameter(call, message):
    with pytest.raises(ValueError) as e: call()
    assert message in str(e.value)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cfg = ICLTaskConfig(task='sparse_linear', d=10, d_cur=10, s=3, n_points=15)
    xs, ys = sample_prompts(cfg, 64, torch.Generator().manual_seed(0))
    for f in (least_squares, lambda x, y: ridge(x, y, 0.3), lambda x, y: sparse_posterior(x, y, 3),
              lambda x, y: sparse_posterior(x, y, 3, noise_std=0.2)):
        torch.testing.assert_close(f(xs.cuda(), ys.cuda()).cpu(), f(xs, ys), rtol=1e-4, atol=1e-4)


def test_sparse_posterior_finite_when_a_support_is_singular():
    "A support with dependent columns on the first k <= s points has weight 0; it used to make the prediction NaN."
    for seed in (0, 2, 3):
        xs, ys = sample_prompts(ICLTaskConfig(task='sparse_linear', n_points=5), 1, torch.Generator().manual_seed(seed))
        xs[0, :3, 2] = xs[0, :3, 0] + xs[0, :3, 1]
        assert sparse_posterior(xs, ys, 3).isfinite().all(), seed
        x, y = xs[0].double().numpy(), ys[0].double().numpy()
        lw, pr = [], []
        for S in itertools.combinations(range(20), 3):
            K = x[:3, S] @ x[:3, S].T
            if np.linalg.cond(K) > 1e12: continue
            a = np.linalg.solve(K, y[:3]); lw.append(-(np.linalg.slogdet(K)[1] + y[:3] @ a) / 2); pr.append(x[3, S] @ x[:3, S].T @ a)
        w = np.exp(np.array(lw) - max(lw))
        assert abs(sparse_posterior(xs.double(), ys.double(), 3)[0, 3].item() - float(w @ np.array(pr) / w.sum())) < 1e-8
