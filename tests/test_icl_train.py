"""A model of the package learns in-context regression: vectors in through a linear read-in, one number out per
position, trained by the single-run and the batched trainer through the task protocol, to the least-squares error."""
import pandas as pd
import torch

from markov_laplace.training.loop import train_batched
from markov_laplace.tasks.regression.task import REGRESSION
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.models.registry import build
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import train

TOY = ICLTaskConfig(task='linear', d=1, d_cur=1, n_points=8)  # noiseless: least squares is exact from the second point on
# 1,000 steps (was 1,500, for CI's time): measured on this CPU, the batched runs end at gap 0.021 (seed 0) and 0.013 (seed 1)
# of E y² = 1, against the 0.03 asserted below (a margin of 30% for the slower seed); at 800 steps seed 0 ends at 0.031 and fails
CFG = TrainConfig(steps=1000, batch=64, lr=5e-3, eval_every=500, eval_size=1024, device='cpu', seed=0)


def _model(seed): return build('mamba', REGRESSION.model_io(TOY), seed=seed, d_model=32, n_layers=2)


def test_regression_toy_reaches_least_squares_through_both_trainers():
    single = train(_model(0), TOY, CFG, progress=False)
    together, _ = train_batched([_model(0), _model(1)], TOY, CFG, [0, 1], progress=False)
    # one run, either trainer: the same start (weights, evaluation set); 1,000 steps later the paths differ in rounding only
    pd.testing.assert_series_equal(single.iloc[0], together[0].iloc[0], check_exact=False, rtol=1e-6, check_names=False)
    assert abs(single.loss.iloc[-1] - together[0].loss.iloc[-1]) < 0.01
    zero = 1.0  # the zero predictor's error: E y² = E (w x)² = 1 for d = 1
    for h in (single, *together):
        first, last = h.iloc[0], h.iloc[-1]
        assert first.gap > 0.5 * zero  # untrained: far from least squares (the test can fail)
        assert last.gap < 0.03 * zero, h[['step', 'loss', 'least_squares_loss', 'gap']]  # trained: within 3% of E y²
        assert last.least_squares_loss < 0.2 * zero  # least squares itself is far below the zero predictor
