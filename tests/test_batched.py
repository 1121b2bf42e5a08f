"""Runs trained together in one vmapped step against the same runs trained apart."""
import re

import pandas as pd
import pytest
import torch

from markov_laplace.training.loop import train_batched
from markov_laplace.training.step import BatchedTrainer, _clip_per_run
from markov_laplace.models.registry import build
from markov_laplace.tasks.markov.task import TaskConfig
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import train

TASK = TaskConfig(order=2, length=48)
CFG = TrainConfig(steps=40, batch=8, eval_every=20, eval_size=16, device='cpu')


@pytest.mark.parametrize('preset', ['mamba', 'mambazero', 'transformer'])
def test_batched_runs_equal_separate_runs(preset):
    seeds = [0, 1, 2]
    apart = [train(build(preset, seed=s), TASK, TrainConfig(**{**CFG.to_dict(), 'seed': s}), progress=False) for s in seeds]
    together, models = train_batched([build(preset, seed=s) for s in seeds], TASK, CFG, seeds, progress=False)
    for a, b in zip(apart, together):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-6)


def test_per_run_clipping_matches_clip_grad_norm():
    g = torch.Generator().manual_seed(0)
    grads = {'a': torch.randn(3, 4, 5, generator=g) * 3, 'b': torch.randn(3, 7, generator=g) * 0.01}
    clipped = _clip_per_run(grads, 1.0)
    for r in range(3):
        ps = [torch.nn.Parameter(torch.zeros(4, 5)), torch.nn.Parameter(torch.zeros(7))]
        ps[0].grad, ps[1].grad = grads['a'][r].clone(), grads['b'][r].clone()
        torch.nn.utils.clip_grad_norm_(ps, 1.0)
        torch.testing.assert_close(clipped['a'][r], ps[0].grad); torch.testing.assert_close(clipped['b'][r], ps[1].grad)


def test_every_run_of_a_group_trains_on_its_own():
    hs, _ = train_batched([build('mamba', seed=s) for s in range(4)], TaskConfig(order=1, length=64),
                          TrainConfig(steps=80, batch=8, eval_every=80, eval_size=16, device='cpu', lr=5e-3), list(range(4)),
                          progress=False)
    assert all(h.gap.iloc[-1] < 0.8 * h.gap.iloc[0] for h in hs)
    assert len({round(h.loss.iloc[-1], 6) for h in hs}) == 4  # independent runs


def test_bad_batches_fail_clearly():
    with pytest.raises(ValueError, match='`seeds` must be one seed per model'):
        BatchedTrainer([build('mamba')], TASK, CFG, [0, 1])
    with pytest.raises(ValueError, match=re.escape("`compile` must be True | False | 'auto'")):
        BatchedTrainer([build('mamba')], TASK, CFG, [0], compile='yes')


def test_a_model_of_another_alphabet_is_refused_before_training(tmp_path):
    "The task's model_io against what the model reads: a named ValueError, not an indexing error at the first step."
    m = build('mamba', vocab=3, seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r'`model` must be a model that reads what the task gives it \(vocab=2\); got .vocab=3.'):
        train(m, TASK, CFG, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match='`model` must be a model that reads what the task gives it'):
        train_batched([build('mamba', seed=0), m], TASK, CFG, [0, 1], progress=False)
    assert list(tmp_path.iterdir()) == [] and all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    switching = TaskConfig(order=1, length=48, p_switch=0.1)  # S + 1 tokens: the same model is right for it
    assert len(train(m, switching, TrainConfig(**{**CFG.to_dict(), 'steps': 2, 'eval_every': 2}), progress=False)) == 2


def test_sweep_batches_a_shape_and_skips_finished(tmp_path):
    from markov_laplace.experiments.engines import run_sweep
    from markov_laplace.experiments.store import collect
    grid = dict(experiment='b', base=dict(length=32, steps=6, batch=4, eval_every=3, eval_size=8, device='cpu',
                                          model_overrides=dict(d_model=4, d_state=4)),
                axes=dict(order=[1, 2], seed=[0, 1, 2]))
    res = run_sweep(grid, engine='python', root=tmp_path, progress=False, batch=True, max_batch=3)
    assert len(res) == 6 and not any('error' in r for _, r in res)
    tab = collect('b', tmp_path)
    assert sorted(tab.seed) == [0, 0, 1, 1, 2, 2] and all(len(b) == 3 for b in tab.batched_with)
    again = run_sweep(grid, engine='python', root=tmp_path, progress=False, batch=True, max_batch=3)
    assert [r for _, r in again] == [r for _, r in res]  # finished runs are read back, not retrained


def test_runs_of_different_orders_share_a_step():
    tasks = [TaskConfig(order=k, length=48) for k in (1, 3)]
    apart = [train(build('mamba', seed=1), t, TrainConfig(**{**CFG.to_dict(), 'seed': 1}), progress=False) for t in tasks]
    together, _ = train_batched([build('mamba', seed=1) for _ in tasks], tasks, CFG, [1, 1], progress=False)
    for a, b in zip(apart, together):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-6)


def test_prefetch_is_deterministic_and_independent_of_batch_mates():
    a, _ = train_batched([build('mamba', seed=s) for s in (0, 1, 2)], TASK, CFG, [0, 1, 2], prefetch=7, progress=False)
    b, _ = train_batched([build('mamba', seed=2)], TASK, CFG, [2], prefetch=7, progress=False)
    pd.testing.assert_frame_equal(a[2], b[0], check_exact=False, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match='`prefetch` must be an integer >= 1'):
        BatchedTrainer([build('mamba')], TASK, CFG, [0], prefetch=0)


def test_non_finite_loss_is_reported_at_evaluation():
    m = build('mamba', seed=0)
    with torch.no_grad(): m.read_out.weight.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match=r'runs \[0\]'):
        train_batched([m], TASK, CFG, [0], progress=False)


@pytest.mark.gpu
@pytest.mark.parametrize('preset', ['mamba', 'transformer'])
def test_cuda_graph_step_equals_eager_step(preset):
    cfg = TrainConfig(steps=30, batch=16, eval_every=10, eval_size=32, device='cuda')
    tasks = [TaskConfig(order=k, length=128) for k in (1, 2)]
    runs = lambda graph: train_batched([build(preset, seed=s) for s in (0, 1)], tasks, cfg, [0, 1], prefetch=10,
                                       graph=graph, progress=False)
    (eager, _), (graphed, _) = runs(False), runs(True)
    for a, b in zip(eager, graphed):  # bf16 autocast on both; the replay runs the same kernels
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=2e-3, atol=2e-4)


@pytest.mark.gpu
@pytest.mark.parametrize('preset', ['mamba', 'transformer'])
def test_single_run_takes_the_fast_path_on_cuda_and_equals_the_eager_step(preset):
    "`train`'s default on CUDA is the compiled, graph-captured step; in float32 it gives the eager step's numbers."
    from markov_laplace.training.loop import CUDA_PREFETCH, single_run
    cfg = TrainConfig(steps=30, batch=16, eval_every=10, eval_size=32, device='cuda', dtype='float32')
    task = TaskConfig(order=2, length=128)
    tr = single_run(build(preset, seed=0), task, cfg)
    assert (tr.R, tr.graph, tr.compiled, tr.prefetch) == (1, True, True, CUDA_PREFETCH)
    fast = train(build(preset, seed=0), task, cfg, progress=False)
    eager = train(build(preset, seed=0), task, cfg, graph=False, compile=False, progress=False)  # the same data (prefetch 50)
    pd.testing.assert_frame_equal(eager, fast, check_exact=False, rtol=1e-3, atol=1e-4)
    bf16 = TrainConfig(**{**cfg.to_dict(), 'dtype': 'auto'})  # the default: bf16 autocast, where fusion moves the roundings
    fast, eager = (train(build(preset, seed=0), task, bf16, progress=False, **kw) for kw in ({}, dict(graph=False, compile=False)))
    assert fast.gap.iloc[-1] < fast.gap.iloc[0]  # it trains (30 steps: Mamba moves slowly at this lr)
    pd.testing.assert_frame_equal(eager[['step', 'loss', 'gap']], fast[['step', 'loss', 'gap']], check_exact=False, rtol=2e-2, atol=1e-2)


def test_interrupted_batched_training_resumes_to_the_same_numbers(tmp_path):
    class Stop(Exception): pass
    def stop(step):
        if step == 27: raise Stop
    mk = lambda: [build('mamba', seed=s) for s in (3, 4)]
    tasks = [TaskConfig(order=1, length=48), TaskConfig(order=2, length=48)]
    whole, _ = train_batched(mk(), tasks, CFG, [3, 4], prefetch=3, progress=False)
    with pytest.raises(Stop):
        train_batched(mk(), tasks, CFG, [3, 4], prefetch=3, progress=False, ckpt=tmp_path / 'g.pt', callback=stop)
    assert (tmp_path / 'g.pt').exists()
    resumed, _ = train_batched(mk(), tasks, CFG, [3, 4], prefetch=3, progress=False, ckpt=tmp_path / 'g.pt')
    for a, b in zip(whole, resumed):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-7)


def test_group_checkpoint_of_another_group_is_discarded(tmp_path):
    import json
    from markov_laplace.experiments.grids import grid_cells
    from markov_laplace.experiments.engines import run_group
    grid = dict(experiment='g', base=dict(length=32, steps=6, batch=4, eval_every=3, eval_size=8, device='cpu',
                                          model_overrides=dict(d_model=4, d_state=4)), axes=dict(order=[1, 2], seed=[0]))
    cells = grid_cells(grid, tmp_path)
    first = tmp_path / 'g' / 'order=1_seed=0'
    first.mkdir(parents=True)
    (first / 'ckpt-group.json').write_text(json.dumps(dict(runs=['g/other'], prefetch=1)))
    torch.save({'not': 'a trainer state'}, first / 'ckpt-group.pt')
    res = run_group(cells, progress=False)
    assert len(res) == 2 and not (first / 'ckpt-group.pt').exists() and not (first / 'ckpt-group.json').exists()


def test_a_vector_task_trains_through_both_trainers():
    "The trainers see a task only through its protocol: in-context regression (vectors in, scalars out) runs unchanged."
    from markov_laplace.tasks.regression.task import REGRESSION
    from markov_laplace.tasks.regression.functions import ICLTaskConfig
    from markov_laplace.tasks.protocol import task_of

    class PerToken(torch.nn.Module):  # no model of the package reads vectors yet: a per-token linear read-out
        def __init__(self, seed):
            super().__init__()
            self.read = torch.nn.Linear(3, 1)
            with torch.no_grad():  # the seed's weights, whatever the global generator
                self.read.weight.copy_(torch.randn(1, 3, generator=torch.Generator().manual_seed(seed))); self.read.bias.zero_()
        def forward(self, tokens): return self.read(tokens)

    task = ICLTaskConfig(task='linear', d=3, d_cur=3, n_points=7)
    assert task_of(task) is REGRESSION
    cfg = TrainConfig(steps=20, batch=8, eval_every=10, eval_size=16, device='cpu', lr=1e-2)
    apart = [train(PerToken(s), task, TrainConfig(**{**cfg.to_dict(), 'seed': s}), progress=False) for s in (0, 1)]
    together, _ = train_batched([PerToken(s) for s in (0, 1)], task, cfg, [0, 1], progress=False)
    for a, b in zip(apart, together):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-6)
    assert list(apart[0].columns) == ['step', 'lr', 'train_loss', 'loss', 'least_squares_loss', 'gap']
    assert (apart[0].least_squares_loss < apart[0].loss).all()


@pytest.mark.parametrize('R', [1, 3])
def test_fused_adamw_gives_the_unfused_weights_and_every_gradient_comes_in_its_parameters_layout(R, monkeypatch):
    """torch's fused AdamW over the stacked parameters (the trainer's `fused`) against its default (foreach) AdamW, graph off:
    the same weights after a few steps. The linear layers take their CUDA path (`split_linear`, whose weight gradients come out
    transposed), and still every gradient reaches the optimizer with its parameter's strides: what fused AdamW's CUDA kernel
    requires (on the H200 it raised 'params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout')."""
    import torch.nn.functional as F
    from markov_laplace.models import layers
    from markov_laplace.tasks.regression.functions import ICLTaskConfig
    from markov_laplace.tasks.regression.task import REGRESSION
    from markov_laplace.training.step import same_layout
    monkeypatch.setattr(layers, 'linear', lambda x, w, b=None: layers.split_linear(x, w, b) if x.dim() == 3 else F.linear(x, w, b))
    task, cfg = ICLTaskConfig(task='linear', d=5, d_cur=5, n_points=9), TrainConfig(steps=100, batch=8, device='cpu', lr=1e-3)
    def trained(fused):
        tr = BatchedTrainer([build('icl-transformer-tiny', REGRESSION.model_io(task), seed=s) for s in range(R)], task, cfg,
                            list(range(R)), fused=fused)
        raw, _ = tr.gradients(tr.batch())
        assert not all(same_layout(tr.params[k], g) for k, g in raw.items())  # the gradients as computed: some of another layout
        layouts = []
        tr.opt.register_step_pre_hook(lambda opt, *_: layouts.append([same_layout(p, p.grad) for g in opt.param_groups for p in g['params']]))
        for _ in range(4): tr.step()
        assert len(layouts) == 4 and all(all(step) for step in layouts) and bool(tr.opt.param_groups[0]['fused']) == fused
        return tr
    unfused, fused = trained(False), trained(True)
    for k, p in unfused.params.items():
        torch.testing.assert_close(fused.params[k], p)  # float32's tolerances: the same update, rounded in another order


def test_dropout_masks_come_from_the_runs_seeds_and_resume_from_a_checkpoint(tmp_path):
    "S4D's dropout draws from the process's generator under vmap: the trainer seeds it from its runs and checkpoints it, so what ran before in the process changes nothing."
    from markov_laplace.tasks.regression.functions import ICLTaskConfig
    from markov_laplace.tasks.regression.task import REGRESSION
    from markov_laplace.training.step import load_checkpoint, save_checkpoint
    task, cfg = ICLTaskConfig(task='linear', d=3, d_cur=3, n_points=5), TrainConfig(steps=50, batch=4, device='cpu', lr=3e-3)
    def trainer(): return BatchedTrainer([build('icl-s4d-tiny', REGRESSION.model_io(task), seed=s, n_layers=1) for s in (0, 1)], task, cfg, [0, 1])
    def steps(tr, n):
        for _ in range(n): tr.step()
        return {k: v.detach().clone() for k, v in tr.params.items()}
    a = steps(trainer(), 4)
    torch.rand(1000)  # other draws in the process in between
    b = steps(trainer(), 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    tr = trainer(); torch.manual_seed(12345)  # the same runs with other masks: dropout acts, so the numbers move
    c = steps(tr, 4)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    whole = trainer(); steps(whole, 2); save_checkpoint(tmp_path / 'ckpt.pt', whole, [[], []]); w = steps(whole, 2)
    torch.rand(1000)
    resumed = trainer(); load_checkpoint(tmp_path / 'ckpt.pt', resumed); r = steps(resumed, 2)
    assert all(torch.equal(w[k], r[k]) for k in w)  # the masks after the checkpoint are those of the run that went on


def test_sweep_trains_a_group_with_fused_adamw_to_the_same_numbers(tmp_path):
    "`sweep --fused-optimizer` (run_sweep(fused=True)): the group's step uses torch's fused AdamW; its summaries say so and its numbers are the unfused ones up to rounding."
    from markov_laplace.cli import main
    from markov_laplace.storage import write_json
    grid = dict(experiment='f', base=dict(length=32, steps=6, batch=4, eval_every=3, eval_size=8, device='cpu',
                                          model_overrides=dict(d_model=4, d_state=4)), axes=dict(order=[1], seed=[0, 1]))
    write_json(tmp_path / 'f.json', grid)
    out = {}
    for flag in ([], ['--fused-optimizer']):
        root = tmp_path / ('fused' if flag else 'plain')
        assert main(['sweep', str(tmp_path / 'f.json'), '--engine', 'python', '--batch', '--root', str(root), '--quiet', *flag]) in (0, None)
        out[bool(flag)] = {p.parent.name: pd.read_json(p, typ='series') for p in sorted((root / 'f').glob('*/summary.json'))}
    assert out[True].keys() == out[False].keys() and len(out[True]) == 2
    for name, s in out[True].items():
        assert bool(s['batched_fused']) and not bool(out[False][name]['batched_fused'])
        assert abs(s['min_gap'] - out[False][name]['min_gap']) <= 1e-5 * max(1.0, abs(s['min_gap']))


def test_a_group_draws_each_final_evaluation_set_once(tmp_path, monkeypatch):
    "The runs of a group are scored task by task: one draw of the final set per task, each summary in its run's place."
    import markov_laplace.tasks.markov.evaluate as ev
    from markov_laplace.experiments.grids import grid_cells
    from markov_laplace.experiments.engines import run_group
    from markov_laplace.storage import read_json
    draws, real = [], ev.eval_batches
    monkeypatch.setattr(ev, 'eval_batches', lambda task, *a, **kw: draws.append(task.order) or real(task, *a, **kw))
    grid = dict(experiment='g', base=dict(length=32, steps=4, batch=4, eval_every=2, eval_size=8, device='cpu',
                                          model_overrides=dict(d_model=4, d_state=4)), axes=dict(order=[2, 1], seed=[0, 1]))
    cells = grid_cells(grid, tmp_path)
    res = run_group(cells, progress=False)
    assert sorted(draws) == [1, 2]  # two tasks, two draws (four before: one per run)
    assert res == [read_json(tmp_path / c.out_dir / 'summary.json') for c in cells]  # in the runs' order
    ref = {c.task.order: r['final_laplace_loss'] for c, r in zip(cells, res)}  # add-β's loss: the task's set, whatever the model
    for c, r in zip(cells, res): assert r['final_laplace_loss'] == ref[c.task.order]
    assert ref[1] != ref[2]


def test_a_compiled_trainer_starts_from_an_empty_dynamo_cache(monkeypatch):
    "Trainers built one after another in a process (a sweep's groups, the benchmark's rows): each compiled one clears dynamo's cache first."
    resets = []
    monkeypatch.setattr(torch._dynamo, 'reset', lambda: resets.append(1))
    for compile, R in ((True, 2), (False, 2), (True, 1), (False, 1)):
        BatchedTrainer([build('mamba', seed=s) for s in range(R)], TASK, CFG, list(range(R)), compile=compile)
        assert len(resets) == 1 + (R == 1)  # the compiled trainers only, batched or single
