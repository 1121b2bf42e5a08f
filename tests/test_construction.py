"""The hand-set constructions against add-β."""
import pytest
import torch

from markov_laplace.tasks.markov.chains import dirichlet_kernels, sample_chains
from markov_laplace.analysis.construction import max_abs_error, max_kl, order_k_model, theorem1_model, theorem4_model, window_counterexample
from markov_laplace.tasks.markov.estimators import laplace_probs
from markov_laplace.models.registry import SequenceModel, from_config


@pytest.mark.parametrize('vocab', [2, 3, 4, 6])
@pytest.mark.parametrize('beta', [0.5, 1.0, 3.0])
def test_theorem1_is_exact(vocab, beta, gen):
    x = sample_chains(dirichlet_kernels(8, 1, vocab, generator=gen), 300, generator=gen)
    assert max_abs_error(theorem1_model(vocab, beta), x, 1, beta) <= 1e-12
    assert max_abs_error(theorem1_model(vocab, beta, torch.float32), x, 1, beta) <= 1e-6


@pytest.mark.parametrize('order', [1, 2, 3, 4])
@pytest.mark.parametrize('beta', [0.5, 1.0, 2.0])
def test_order_k_construction_is_exact(order, beta, gen):
    x = sample_chains(dirichlet_kernels(8, order, generator=gen), 400, generator=gen)
    assert max_abs_error(order_k_model(order, beta), x, order, beta) <= 1e-12


@pytest.mark.parametrize('beta', [0.5, 1.0, 2.0])
@pytest.mark.parametrize('eps', [0.05, 1e-3, 1e-5])
def test_theorem4_kl_bound(beta, eps, gen):
    x = sample_chains(dirichlet_kernels(16, 1, beta=beta, generator=gen), 500, generator=gen)
    m = theorem4_model(beta, eps)
    assert m.config.d_model == 2 and m.config.d_state == 2
    assert max_kl(m, x, 1, beta) <= eps


def test_constructions_are_real_mamba_models():
    for m in (theorem1_model(3), theorem4_model(), order_k_model(3)):
        assert isinstance(m, SequenceModel) and m.family == 'mamba' and m.config.fixed_decay and m.config.head == 'l1'


@pytest.mark.parametrize('order,window', [(1, 1), (2, 1), (2, 2), (3, 3)])
def test_window_counterexample(order, window):
    a, b = window_counterexample(order, window)
    xs = torch.tensor([a, b])
    lap = laplace_probs(xs, order)[:, -1]
    assert (lap[0] - lap[1]).abs().max() > 1e-3
    for seed in range(3):
        m = from_config(dict(family='mamba', d_conv=window, fixed_decay=True, gating=False, layernorm=False, mlp='none',
                             conv_act='relu'), seed=seed).double()
        with torch.no_grad(): out = m.log_probs(xs)[:, -1]
        torch.testing.assert_close(out[0], out[1], rtol=1e-9, atol=1e-9)
