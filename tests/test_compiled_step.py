"""The trainer's compiled step (`compile=True`) on the CPU: Mamba-1's fused scan inside it (custom ops opaque to dynamo, the
vmap rules applied when R runs share the step) compiles as one graph and gives the eager step's numbers; on CUDA, fused AdamW
and the compiled step of each family against the eager step (issue 20)."""
import pytest
import torch
import torch._dynamo.utils

from markov_laplace.models.registry import build
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.tasks.regression.task import REGRESSION
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.step import BatchedTrainer


def _eager_and_compiled(family, R, **over):
    """R runs of a tiny preset in one step, 4 steps eager and 4 compiled on one CPU thread (small tensors; a busy machine's
    second core is not taken from others): {compiled: (losses, weights)}, after asserting the compiled step is one graph."""
    task, cfg = ICLTaskConfig(task='linear', d=5, d_cur=5, n_points=9), TrainConfig(steps=100, batch=8, device='cpu', lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for compiled in (False, True):
            torch._dynamo.utils.counters.clear()
            tr = BatchedTrainer([build(family, REGRESSION.model_io(task), seed=s, **over) for s in range(R)],
                                task, cfg, list(range(R)), compile=compiled)
            losses = []
            for _ in range(4): tr.step(); losses.append(tr.take_losses())
            runs[compiled] = torch.tensor(losses), tr.params
        assert not torch._dynamo.utils.counters['graph_break'] and torch._dynamo.utils.counters['stats']['unique_graphs'] == 1
    finally: torch.set_num_threads(threads)
    return runs


def test_compiled_batched_mamba1_step_is_one_graph_with_the_eager_numbers():
    "3 runs of tiny one-layer Mamba-1 in one vmapped step: compiled (~20 s on one core) against eager, 4 steps."
    runs = _eager_and_compiled('icl-mamba1-tiny', 3, n_layers=1)
    (eager, pe), (comp, pc) = runs[False], runs[True]
    torch.testing.assert_close(comp, eager)  # float32's tolerances: inductor's fused kernels round in another order
    for k in pe: torch.testing.assert_close(pc[k], pe[k])


@pytest.mark.parametrize('family', ['icl-transformer-tiny', 'icl-s4d-tiny', 'icl-s4d-toeplitz-tiny'])
def test_compiled_steps_with_their_own_vmap_paths_give_the_eager_numbers(family):
    """Tiny one-layer transformer and S4D, 1 run and 3 runs in one vmapped step: compiled (the transformer's fused attention
    kernel, batched through its vmap fallback traced into the graph: models/04_transformer; S4D's convolution with its
    gradients written out, an autograd.Function allowed in the graph: models/06_s4) it is one graph, and its losses and
    weights are the eager step's, 4 steps (no dropout: compiled code draws other masks)."""
    over = dict(n_layers=1, **(dict(dropout=0.0) if 's4d' in family else {}))
    for R in (1, 3):
        runs = _eager_and_compiled(family, R, **over)
        (eager, pe), (comp, pc) = runs[False], runs[True]
        torch.testing.assert_close(comp, eager, msg=lambda m: f'R={R}: {m}')
        for k in pe:  # Adam's first steps move a weight by about lr (1e-3) whatever its gradient's size, so a gradient
            # near 0 that rounds the other way moves its weight up to ~lr apart: weights within a tenth of lr
            torch.testing.assert_close(pc[k], pe[k], rtol=1e-4, atol=1e-4, msg=lambda m: f'R={R} {k}: {m}')


@pytest.mark.gpu
@pytest.mark.parametrize('family', ['icl-transformer-tiny', 'icl-mamba1-tiny', 'icl-s4d-tiny', 'icl-s4d-toeplitz-tiny'])
def test_fused_adamw_and_the_compiled_step_on_cuda_give_the_eager_numbers(family):
    """On CUDA (linear layers through `split_linear`, the step captured as a graph, capturable fused AdamW reading a CUDA
    learning rate: what raised on the H200), in float32, for 1 and 3 runs: fused AdamW, the compiled step, and both,
    against the eager step with torch's default AdamW."""
    task = ICLTaskConfig(task='linear', d=5, d_cur=5, n_points=9)
    cfg = TrainConfig(steps=100, batch=8, device='cuda', lr=1e-3, dtype='float32')
    over = dict(n_layers=1, **(dict(dropout=0.0) if 's4d' in family else {}))  # no dropout: compiled code draws other masks
    for R in (1, 3):
        def losses(**kw):
            tr = BatchedTrainer([build(family, REGRESSION.model_io(task), seed=s, **over) for s in range(R)], task, cfg,
                                list(range(R)), **kw)
            out = []
            for _ in range(6): tr.step(); out.append(tr.take_losses())  # 3 eager warm-up steps, the capture, replays
            return torch.tensor(out)
        eager = losses(graph=False, compile=False)
        for kw in (dict(fused=True), dict(compile=True), dict(compile=True, fused=True)):
            torch.testing.assert_close(losses(graph=True, **kw), eager, rtol=1e-3, atol=1e-4, msg=lambda m: f'{family} R={R} {kw}: {m}')
