"""Samplers: shapes, seeding, the two walks, the statistics of the draws, and bad input."""
import math

import pytest
import torch

from markov_laplace.tasks.markov.chains import context_index, dirichlet_kernels, holdout_kernels, sample_chains, sample_switching


@pytest.mark.parametrize('order,vocab', [(1, 2), (2, 3), (3, 2), (1, 8), (6, 2)])
def test_loop_and_scan_walks_agree(order, vocab, gen):
    P = dirichlet_kernels(5, order, vocab, generator=gen)
    a = sample_chains(P, 257, generator=torch.Generator().manual_seed(9), method='loop')
    b = sample_chains(P, 257, generator=torch.Generator().manual_seed(9), method='scan')
    assert a.shape == (5, 257) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < vocab


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_scan_in_passes_equals_the_loop(monkeypatch, device):
    "A draw larger than SCAN_BUDGET runs the scan in passes of rows, token for token the loop's draw."
    import markov_laplace.tasks.markov.chains as chains
    P = dirichlet_kernels(50, 4, 2, generator=torch.Generator(device).manual_seed(0), device=device)
    draw = lambda **kw: sample_chains(P, 64, generator=torch.Generator(device).manual_seed(3), **kw)
    loop = draw(method='loop')
    monkeypatch.setattr(chains, 'SCAN_BUDGET', 60 * 16 * 2 * 7)  # 7 sequences per pass
    assert torch.equal(draw(method='scan'), loop)  # 8 passes
    if device == 'cuda': assert torch.equal(draw(), loop)  # 'auto' scans in passes on a GPU
    monkeypatch.setattr(chains, 'SCAN_BUDGET', 10)  # not even one sequence fits: 'auto' walks the loop
    assert torch.equal(draw(), loop)


def test_same_seed_same_numbers():
    draw = lambda s: sample_chains(dirichlet_kernels(4, 2, generator=torch.Generator().manual_seed(s)), 64,
                                   generator=torch.Generator().manual_seed(s))
    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_first_tokens_are_uniform_and_independent_of_kernel(gen):
    # a kernel that always emits 0 leaves only the first k tokens random
    P = torch.zeros(20000, 4, 2); P[..., 0] = 1
    x = sample_chains(P, 6, generator=gen)
    assert (x[:, 2:] == 0).all()
    assert abs(x[:, :2].float().mean().item() - 0.5) < 0.02


def test_transition_frequencies_match_kernel(gen):
    P = dirichlet_kernels(1, 3, generator=gen)
    x = sample_chains(P, 100_000, generator=gen)
    c = context_index(x, 3)[0, :-1]
    ones = torch.zeros(8).index_add_(0, c[c >= 0], x[0, 1:][c >= 0].float())
    n = torch.bincount(c[c >= 0], minlength=8).float()
    se = torch.sqrt(P[0, :, 1] * P[0, :, 0] / n)
    assert ((ones / n - P[0, :, 1]).abs() <= 5 * se + 1e-3).all()


def test_dirichlet_marginals(gen):
    beta, S = 2.0, 3
    p = dirichlet_kernels(30000, 1, S, beta, generator=gen)[..., 0].flatten().double()
    a, b = beta, (S - 1) * beta  # Beta(a, b) marginal
    assert abs(p.mean() - a / (a + b)) < 0.005
    assert abs(p.var() - a * b / ((a + b) ** 2 * (a + b + 1))) < 0.002


def test_holdout_range(gen):
    H = holdout_kernels(5000, 0.5, 1.0, generator=gen)
    flips = torch.stack([H[:, 0, 1], H[:, 1, 0]])
    assert flips.min() >= 0.5 and flips.max() <= 1.0
    assert abs(flips.mean().item() - 0.75) < 0.01
    torch.testing.assert_close(H.sum(-1), torch.ones(5000, 2))


def test_switching_structure(gen):
    sw = sample_switching(32, 3000, order=2, vocab=3, p_switch=0.02, generator=gen)
    x, s = sw.tokens, sw.segments
    assert x.shape == s.shape == (32, 3000) and x.max() <= 3
    assert not (x[:, 0] == 3).any()
    assert torch.equal(x[:, 1:] == 3, s.diff(1) == 1)  # a switch token opens every new segment
    assert abs((x[:, 1:] == 3).float().mean().item() - 0.02) < 0.003
    assert sw.kernels.shape == (32, int(s.max()) + 1, 9, 3)
    # the `order` tokens after a switch are uniform, whatever the kernel
    after = torch.cat([x[:, :-1] == 3, torch.zeros(32, 1, dtype=torch.bool)], 1).roll(1, 1)
    after[:, 0] = False
    y = x[after & (x != 3)]
    assert y.numel() > 500 and all(abs((y == j).float().mean().item() - 1 / 3) < 0.06 for j in range(3))


def test_switching_without_switches_is_one_kernel(gen):
    sw = sample_switching(3, 50, order=1, p_switch=0.0, generator=gen)
    assert sw.kernels.shape[1] == 1 and (sw.segments == 0).all() and (sw.tokens < 2).all()


def test_switching_walks_agree():
    a = sample_switching(8, 500, order=3, p_switch=0.05, generator=torch.Generator().manual_seed(3), method='loop')
    b = sample_switching(8, 500, order=3, p_switch=0.05, generator=torch.Generator().manual_seed(3), method='scan')
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.gpu
def test_cuda_sampler_matches_its_own_seed():
    g = lambda: torch.Generator(device='cuda').manual_seed(0)
    P = dirichlet_kernels(64, 3, generator=g(), device='cuda')
    a = sample_chains(P, 512, generator=g(), method='scan')
    b = sample_chains(P, 512, generator=g(), method='loop')
    assert a.is_cuda and torch.equal(a, b)
