"""Every public entry point rejects bad input with a ValueError naming the parameter and the allowed values."""
import pytest
import torch

from markov_laplace.tasks.markov.chains import check_kernels, context_index, dirichlet_kernels, holdout_kernels, sample_chains, sample_switching
from markov_laplace.tasks.markov.estimators import bayes_risk, laplace_probs, oracle_probs, position_kl, position_nll, switching_laplace_probs

X = torch.tensor([[0, 1, 1, 0]])
P1 = torch.full((1, 2, 2), 0.5)

CASES = [
    (lambda: dirichlet_kernels(2, 0), r'`order` must be an integer >= 1'),
    (lambda: dirichlet_kernels(2, 1.5), r'`order` must be an integer >= 1'),
    (lambda: dirichlet_kernels(2, 1, vocab=1), r'`vocab` must be an integer >= 2'),
    (lambda: dirichlet_kernels(2, 1, beta=0.0), r'`beta` must be a finite number > 0'),
    (lambda: dirichlet_kernels(2, 1, beta=-1), r'`beta` must be a finite number > 0'),
    (lambda: dirichlet_kernels(2, 1, beta=float('inf')), r'`beta` must be a finite number > 0'),
    (lambda: dirichlet_kernels(0, 1), r'`n` must be an integer >= 1'),
    (lambda: sample_chains(P1, 1), r'`length` must be an integer > order = 1'),
    (lambda: sample_chains(torch.full((1, 2, 2), 0.7), 8), r'`kernels rows` must be non-negative and summing to 1'),
    (lambda: sample_chains(torch.tensor([[[1.5, -0.5], [0.5, 0.5]]]), 8), r'`kernels rows` must be non-negative'),
    (lambda: sample_chains(torch.full((1, 3, 2), 0.5), 8), r'`kernels.shape` must be \(n, S\*\*k, S\)'),
    (lambda: sample_chains(torch.full((2, 2), 0.5), 8), r'`kernels.shape` must be \(n, S\*\*k, S\)'),
    (lambda: sample_chains(torch.ones(1, 2, 2, dtype=torch.long), 8), r'`kernels` must be a floating-point tensor'),
    (lambda: sample_chains(P1, 8, method='fast'), r"`method` must be 'auto', 'loop' or 'scan'"),
    (lambda: sample_switching(2, 8, p_switch=1.0), r'`p_switch` must be a number in \[0, 1\)'),
    (lambda: sample_switching(2, 8, p_switch=-0.1), r'`p_switch` must be a number in \[0, 1\)'),
    (lambda: sample_switching(2, 2, order=2), r'`length` must be an integer > order = 2'),
    (lambda: holdout_kernels(2, 0.4, 0.2), r'`\(low, high\)` must be numbers with 0 <= low <= high <= 1'),
    (lambda: laplace_probs(X, 0), r'`order` must be an integer >= 1'),
    (lambda: laplace_probs(X, 1, vocab=1), r'`vocab` must be an integer >= 2'),
    (lambda: laplace_probs(X, 1, beta=0), r'`beta` must be a finite number > 0'),
    (lambda: laplace_probs(X + 1, 1), r'`tokens values` must be in \[0, 2\)'),
    (lambda: laplace_probs(X - 1, 1), r'`tokens values` must be in \[0, 2\)'),
    (lambda: laplace_probs(X.float(), 1), r'`tokens.dtype` must be torch.int64'),
    (lambda: laplace_probs(X[0], 1), r'`tokens.shape` must be \(B, T\)'),
    (lambda: laplace_probs(X.tolist(), 1), r'`tokens` must be a torch.LongTensor'),
    (lambda: context_index(X, 1, vocab=2.0), r'`vocab` must be an integer >= 2'),
    (lambda: switching_laplace_probs(X + 2, 2), r'`tokens values` must be in \[0, 3\)'),
    (lambda: switching_laplace_probs(X, 2, p_switch=1.5), r'`p_switch` must be None or a number in \[0, 1\)'),
    (lambda: oracle_probs(X, P1, order=2), r'`order` must be 1, the order of the kernels'),
    (lambda: oracle_probs(X, torch.full((2, 2, 2), 0.5)), r'`kernels.shape\[0\]` must be the batch size'),
    (lambda: oracle_probs(X + 1, P1), r'`tokens values` must be in \[0, 2\)'),
    (lambda: position_nll(torch.zeros(1, 3, 2), X), r'`log_probs.shape` must be \(B, T, S\)'),
    (lambda: position_kl(torch.zeros(1, 4, 2), torch.zeros(1, 4, 3)), r'`log_q.shape` must be the shape of log_p'),
    (lambda: bayes_risk(1, length=1), r'`length` must be an integer > order = 1'),
    (lambda: bayes_risk(1, n_seqs=0), r'`n_seqs` must be an integer >= 1'),
]


@pytest.mark.parametrize('call,message', CASES, ids=[m[:40] for _, m in CASES])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_check_kernels_reads_order_and_vocab():
    assert check_kernels(torch.full((2, 27, 3), 1 / 3)) == (3, 3)
