"""The add-β estimator against independent ground truth: direct counting, the Bayes posterior by
numerical integration, and convergence to the true kernel; the switching variant and the oracle."""
import math

import pytest
import torch
from scipy import integrate

from markov_laplace.tasks.markov.chains import dirichlet_kernels, sample_chains, sample_switching
from markov_laplace.tasks.markov.estimators import bayes_risk, grouped_prior_counts, laplace_probs, laplace_probs_loop, oracle_probs, position_kl, position_nll, switching_laplace_probs, switching_oracle_probs


@pytest.mark.parametrize('order', [1, 2, 3, 4])
@pytest.mark.parametrize('vocab', [2, 3, 4, 5])
@pytest.mark.parametrize('beta', [0.5, 1.0, 2.5])
def test_laplace_matches_direct_counting(order, vocab, beta):
    g = torch.Generator().manual_seed(order * 100 + vocab * 10 + int(beta * 2))
    x = sample_chains(dirichlet_kernels(3, order, vocab, generator=g), 40, generator=g)
    fast = laplace_probs(x, order, vocab, beta, dtype=torch.float64)
    assert fast.shape == (3, 40, vocab)
    torch.testing.assert_close(fast, laplace_probs_loop(x, order, vocab, beta), rtol=0, atol=1e-12)


def test_laplace_float32_matches_float64(gen):
    x = sample_chains(dirichlet_kernels(8, 3, generator=gen), 512, generator=gen)
    torch.testing.assert_close(laplace_probs(x, 3).double(), laplace_probs(x, 3, dtype=torch.float64),
                               rtol=1e-6, atol=1e-7)


def _posterior_predictive_by_integration(x, t, beta):
    """P(x[t+1] = 1 | x[0..t]) for a binary first-order chain with Beta(β, β) rows, by quadrature of the
    likelihood written as a product over the observed transitions (no counts)."""
    a = x[t]
    transitions = [(x[s], x[s + 1]) for s in range(t) if x[s] == a]  # only row a matters for the prediction

    def likelihood(p):  # p = P(1 | a)
        out = 1.0
        for _, y in transitions: out *= p if y == 1 else 1 - p
        return out

    w = dict(weight='alg', wvar=(beta - 1, beta - 1))  # the Beta(β, β) density, up to a constant
    num, _ = integrate.quad(lambda p: p * likelihood(p), 0, 1, epsabs=1e-14, epsrel=1e-12, **w)
    den, _ = integrate.quad(likelihood, 0, 1, epsabs=1e-14, epsrel=1e-12, **w)
    return num / den


@pytest.mark.parametrize('beta', [0.5, 1.0, 2.0])
def test_laplace_is_the_bayes_posterior_predictive(beta):
    g = torch.Generator().manual_seed(int(beta * 10))
    x = sample_chains(dirichlet_kernels(4, 1, beta=beta, generator=g), 30, generator=g)
    p = laplace_probs(x, 1, beta=beta, dtype=torch.float64)
    for b in range(4):
        seq = x[b].tolist()
        for t in range(30):
            assert abs(p[b, t, 1].item() - _posterior_predictive_by_integration(seq, t, beta)) < 1e-8


def test_laplace_converges_to_the_kernel(gen):
    P = dirichlet_kernels(1, 2, 3, generator=gen)
    x = sample_chains(P, 60_000, generator=gen)
    p = laplace_probs(x, 2, 3)
    ctx_last = {}
    from markov_laplace.tasks.markov.chains import context_index
    c = context_index(x, 2, 3)[0]
    for t in range(59_000, 60_000): ctx_last[c[t].item()] = t
    for ctx, t in ctx_last.items():
        torch.testing.assert_close(p[0, t], P[0, ctx], atol=0.03, rtol=0)


def test_grouped_counts_memory_is_linear():
    # a long order-12 binary chain: a (B, T, S**k) table would need 4096 entries per position
    x = torch.randint(2, (2, 4096), generator=torch.Generator().manual_seed(0))
    p = laplace_probs(x, 12)
    assert p.shape == (2, 4096, 2) and torch.isfinite(p).all()


def _switching_reference(tokens, vocab, beta, order):
    B, T = tokens.shape
    out = torch.full((B, T, vocab), 1 / vocab, dtype=torch.float64)
    for b in range(B):
        counts, since = {}, []
        for t, tok in enumerate(tokens[b].tolist()):
            if tok == vocab:
                counts, since = {}, []
                continue
            if len(since) >= order:
                counts.setdefault(tuple(since[-order:]), [0] * vocab)[tok] += 1
            since.append(tok)
            if len(since) >= order:
                n = counts.get(tuple(since[-order:]), [0] * vocab)
                out[b, t] = torch.tensor([(v + beta) / (sum(n) + vocab * beta) for v in n], dtype=torch.float64)
    return out


@pytest.mark.parametrize('order,vocab', [(1, 2), (2, 2), (1, 3), (3, 2)])
def test_switching_laplace_matches_reference(order, vocab, gen):
    sw = sample_switching(4, 300, order=order, vocab=vocab, p_switch=0.03, generator=gen)
    fast = switching_laplace_probs(sw.tokens, vocab, 0.8, order, dtype=torch.float64)
    torch.testing.assert_close(fast, _switching_reference(sw.tokens, vocab, 0.8, order), rtol=0, atol=1e-12)


def test_switching_oracle(gen):
    sw = sample_switching(8, 400, order=1, p_switch=0.02, generator=gen)
    p = switching_oracle_probs(sw, 0.02)
    torch.testing.assert_close(p.sum(-1), torch.ones(8, 400))
    x, s = sw.tokens, sw.segments
    b, t = ((x[:, :-1] < 2) & (x[:, 1:] < 2)).nonzero()[0].tolist()
    torch.testing.assert_close(p[b, t, :2], 0.98 * sw.kernels[b, s[b, t], x[b, t]])
    # the optimal predictor of switching chains beats the one that never forgets, on average
    lap = switching_laplace_probs(x, 2, p_switch=0.02).log()
    assert position_nll(lap, x).mean() > position_nll(p.log(), x).mean()


def test_oracle_uses_the_context_convention(gen):
    P = dirichlet_kernels(2, 2, generator=gen)
    x = torch.tensor([[1, 0, 1], [0, 1, 1]])
    p = oracle_probs(x, P)
    torch.testing.assert_close(p[0, 1], P[0, 0b10]); torch.testing.assert_close(p[0, 2], P[0, 0b01])
    torch.testing.assert_close(p[1, 2], P[1, 0b11]); torch.testing.assert_close(p[:, 0], torch.full((2, 2), 0.5))


def test_add_beta_is_optimal_under_its_prior(gen):
    # paired comparison on the same chains: the prior's β beats a wrong pseudo-count
    P = dirichlet_kernels(2048, 1, generator=gen)
    x = sample_chains(P, 128, generator=gen)
    loss = lambda b: position_nll(laplace_probs(x, 1, beta=b).log(), x).mean(1)
    for wrong in (0.3, 3.0):
        d = loss(wrong) - loss(1.0)
        assert d.mean() > 3 * d.std() / math.sqrt(len(d))


def test_kl_is_zero_only_for_equal_rows(gen):
    x = sample_chains(dirichlet_kernels(4, 1, generator=gen), 50, generator=gen)
    lp = laplace_probs(x, 1).log()
    assert position_kl(lp, lp).abs().max() < 1e-6
    assert (position_kl(lp, laplace_probs(x, 1, beta=2.0).log()) > 0).any()


def test_bayes_risk_reproduces_paper_floors():
    # the binary order-1 and order-2 floors at T = 256 (paper.md §2): 0.015 and 0.024
    g = torch.Generator().manual_seed(7)
    for k, floor in ((1, 0.015), (2, 0.024)):
        r = bayes_risk(k, length=256, n_seqs=2048, generator=g)
        assert abs(r['oracle_gap'] - floor) < r['oracle_gap_ci'] + 0.0015


def test_same_seed_same_risk():
    r = lambda: bayes_risk(2, length=64, n_seqs=256, generator=torch.Generator().manual_seed(0))
    assert r() == r()


@pytest.mark.gpu
def test_laplace_on_cuda_matches_cpu(gen):
    x = sample_chains(dirichlet_kernels(64, 3, generator=gen), 512, generator=gen)
    torch.testing.assert_close(laplace_probs(x.cuda(), 3).cpu(), laplace_probs(x, 3))


@pytest.mark.gpu
def test_final_evaluation_on_cuda_matches_the_cpu():
    "The final evaluation's per-position quantities computed on the GPU: the same per-sequence means as on the CPU."
    import pandas as pd
    from markov_laplace.models.registry import build
    from markov_laplace.tasks.markov.evaluate import eval_batches, sequence_metrics
    from markov_laplace.tasks.markov.task import TaskConfig
    batches, model = eval_batches(TaskConfig(order=2, length=64).validate(), 256, batch=128), build('mamba', vocab=2, seed=0)
    cpu, gpu = sequence_metrics(model, batches, 'cpu'), sequence_metrics(model, batches, 'cuda')
    pd.testing.assert_frame_equal(cpu, gpu, check_exact=False, rtol=1e-4, atol=1e-5)
