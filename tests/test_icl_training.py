"""Training the function classes (issue 21): the papers' protocol as config, the curriculum as the task's schedule (its
clock stretched to the run, the prompt laid out whole and the loss weighted to its first n_cur points), resuming to
the same numbers, several tasks in one batched step, and a cpu-scale grid run that writes its curve."""
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from markov_laplace.experiments.config import RunConfig
from markov_laplace.experiments.engines import run_sweep, template_for
from markov_laplace.experiments.grids import load_sweep
from markov_laplace.experiments.schedule import sweep_units
from markov_laplace.experiments.store import repo_root, steps_reached
from markov_laplace.models.registry import build
from markov_laplace.tasks.regression.curves import BASELINE_COLUMNS
from markov_laplace.tasks.regression.functions import CURRICULUM_POINTS, ICLTaskConfig, curriculum, curriculum_config
from markov_laplace.tasks.regression.task import REGRESSION
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import train_batched
from markov_laplace.training.step import BatchedTrainer, load_checkpoint

ROOT = repo_root()


@pytest.mark.parametrize('task', ['linear', 'decision_tree'])
def test_the_curriculum_at_the_papers_scale_is_the_papers(task):
    "500,000 steps, full size at 6%: every step's config has curriculum()'s d_cur and prompt length, and the run's shapes."
    cfg = ICLTaskConfig(task=task, n_points=CURRICULUM_POINTS[task][1]).validate()
    for step in list(range(0, 32_001, 250)) + [1999, 2000, 2001, 29_999, 30_000, 123_456, 499_999]:
        c = REGRESSION.step_config(cfg, step, 500_000)
        assert (c.d_cur, c.n_cur or c.n_points) == curriculum(step, task), step
        assert REGRESSION.model_io(c) == REGRESSION.model_io(cfg)  # the tensors never change shape
    assert curriculum_config(replace(cfg, curriculum=0.0), 0, 500_000) is not None
    assert REGRESSION.step_config(replace(cfg, curriculum=0.0), 0, 500_000).d_cur == 20  # 0: no curriculum


def test_the_curriculum_scales_with_the_run():
    "A run of 10,000 steps goes through the same stages, full size at step 600 (6%)."
    cfg = ICLTaskConfig(task='linear').validate()
    sizes = [(c.d_cur, c.n_cur or c.n_points) for c in (REGRESSION.step_config(cfg, t, 10_000) for t in range(0, 10_000, 10))]
    assert sizes[0] == (5, 11) and sizes[59] == (19, 39) and sizes[60] == (20, 41) and sizes[-1] == (20, 41)
    assert sorted(set(sizes)) == sorted(set(curriculum(t, 'linear') for t in range(0, 30_001, 2000)))  # the papers' 16 sizes


@pytest.mark.parametrize('preset', ['icl-transformer-tiny', 'icl-mamba1-tiny', 'icl-s4d-tiny'])
def test_the_weighted_full_prompt_loss_is_the_short_prompt_loss(preset):
    "Causal models: the loss on the whole layout weighted to the first n_cur points equals the loss on the prompt cut to n_cur points, gradients too."
    cfg = ICLTaskConfig(task='linear', d=5, d_cur=5, n_points=21, n_cur=8).validate()
    model = build(preset, REGRESSION.model_io(cfg), seed=0).eval()  # eval: S4D's dropout off, so both passes see one function
    tokens, ys, w = REGRESSION.train_batch(cfg, 16, torch.Generator().manual_seed(0), 'cpu')
    assert tokens.shape == (16, 42, 5) and w.sum(1).tolist() == [8.0] * 16

    def loss_and_grads(batch):
        model.zero_grad()
        loss = REGRESSION.loss(model(batch[0]), batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    full, g_full = loss_and_grads((tokens, ys, w))
    short, g_short = loss_and_grads((tokens[:, :16], ys[:, :8], torch.ones(16, 8)))
    torch.testing.assert_close(full, short, rtol=1e-5, atol=1e-6)  # float32: the longer prompt only changes rounding
    for a, b in zip(g_full, g_short): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    no_mask, _ = loss_and_grads((tokens, ys, torch.ones_like(w)))
    assert not torch.isclose(no_mask, full, rtol=1e-3)  # the weights matter: the test can fail


TINY = dict(n_layers=1, d_model=16, n_heads=2)
CFG = TrainConfig(steps=40, batch=8, lr=3e-3, optimizer='adam', weight_decay=0.0, clip=0.0, schedule='cosine', final_lr=0.0,
                  eval_every=10, eval_size=16, device='cpu')
TASKS = [ICLTaskConfig(task=t, n_points=21, curriculum=0.9).validate() for t in ('linear', 'sparse_linear', 'skewed_linear')]  # d = 20: full size at step 36


def _models(): return [build('icl-transformer', REGRESSION.model_io(t), seed=s, **TINY) for s, t in enumerate(TASKS)]


class Stop(Exception): pass


def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path):
    "Three tasks of one prompt length in one batched step; interrupted mid-curriculum, between checkpoints and inside a prefetch window, then resumed."
    ckpt = tmp_path / 'ckpt.pt'
    whole, models = train_batched(_models(), TASKS, CFG, [0, 1, 2], prefetch=3, progress=False)

    def stop_at_23(step):
        if step == 23: raise Stop
    with pytest.raises(Stop):
        train_batched(_models(), TASKS, CFG, [0, 1, 2], prefetch=3, progress=False, ckpt=ckpt, callback=stop_at_23)
    assert steps_reached(tmp_path) == 20  # the last checkpoint, mid-curriculum (d_cur 13 of 20); the curriculum and the cosine go on from there
    assert REGRESSION.step_config(TASKS[0], 20, CFG.steps).d_cur == 13
    resumed, models2 = train_batched(_models(), TASKS, CFG, [0, 1, 2], prefetch=3, progress=False, ckpt=ckpt)
    for a, b in zip(whole, resumed): pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)
    for m, n in zip(models, models2):
        for p, q in zip(m.parameters(), n.parameters()): torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert not torch.equal(next(models[0].parameters()), next(_models()[0].parameters()))  # it trained: the test can fail
    assert [round(x, 8) for x in whole[0].lr] == [round(x, 8) for x in whole[1].lr]  # one schedule for the three runs


def test_a_step_draws_each_step_from_its_curriculum_config():
    "The queue of a prefetch window that spans a change of size: each step's batch has its step's weights."
    tr = BatchedTrainer(_models(), TASKS, CFG, [0, 1, 2], prefetch=7)
    points = []
    for _ in range(25):
        batch = tr.batch()
        points.append(int(batch[2][0, 0].sum()))
        tr.n_steps += 1
    want = [REGRESSION.step_config(TASKS[0], t, CFG.steps) for t in range(25)]
    assert points == [c.n_cur or c.n_points for c in want] and points[0] == 11 and points[-1] == 21


def test_the_icl_grids_batch_the_tasks_of_one_length_and_pick_the_regression_template():
    for name in ('icl_main', 'icl_seeds', 'icl_long', 'icl_mamba2'):
        for scale in ('gpu', 'cpu'):
            cells = load_sweep(ROOT / 'grids' / f'{name}.yaml', ROOT / 'runs', scale)
            assert all(c.out_dir.startswith(str(ROOT / 'runs' / 'icl' / scale / name)) for _, c in cells)
            assert {template_for(c) for _, c in cells} == {'nbs/experiments/regression.ipynb'}
            assert all(c.train.optimizer == 'adam' and c.train.schedule == 'cosine' and c.train.final_lr == 0 for _, c in cells)
    main = load_sweep(ROOT / 'grids' / 'icl_main.yaml', ROOT / 'runs', 'gpu')
    assert len(main) == 15 and {c.model.preset for _, c in main} == {'icl-transformer', 'icl-mamba1', 'icl-s4d'}
    assert {(c.model.preset, c.train.lr) for _, c in main} == {('icl-transformer', 1e-4), ('icl-mamba1', 1e-4), ('icl-s4d', 1e-3)}
    units = sweep_units(main, batch=True)
    assert sorted(len(u) for u in units) == [2, 2, 2, 3, 3, 3]  # each model: linear, sparse, skewed (41 pairs) together; ReLU, tree (101)
    assert all(len({c.task.n_points for _, c in u}) == 1 and len({c.task.task for _, c in u}) == len(u) for u in units)
    seeds = load_sweep(ROOT / 'grids' / 'icl_seeds.yaml', ROOT / 'runs', 'gpu')
    assert len(seeds) == 30 and {c.train.seed for _, c in seeds} == {2, 3}
    parts = lambda c: frozenset(p for p in Path(c.out_dir).name.split('_') if not p.startswith('seed='))
    assert {parts(c) for _, c in seeds} == {parts(c) for _, c in main}  # icl_main's runs but the seed: conv_method is in no name
    assert {(c.task.n_points, c.model.overrides.get('conv_method', 'fft')) for _, c in seeds if c.model.preset == 'icl-s4d'} == \
        {(41, 'toeplitz'), (101, 'fft')}  # S4D's matmul where the H200 timed it faster (41 pairs)


def test_a_cpu_scale_run_writes_its_curve_and_learns(tmp_path):
    "icl_main at the cpu scale, the Mamba-1 run on linear (d = 5): config, summary, curve.csv with k = 0..200, error well below 1."
    res = run_sweep(ROOT / 'grids' / 'icl_main.yaml', engine='python', root=tmp_path, scale='cpu', batch=True, progress=False,
                    only=['icl/cpu/icl_main/*task=linear_preset=icl-mamba1-tiny*'])
    (cell, summary), = res
    assert 'error' not in summary, summary
    out = tmp_path / 'icl' / 'cpu' / 'icl_main' / cell.out_dir.split('/')[-1]
    assert {'config.json', 'summary.json', 'curve.csv', 'history.csv', 'model.pt'} <= {p.name for p in out.iterdir()}
    config = json.loads((out / 'config.json').read_text())
    assert config['task']['task'] == 'linear' and config['preset'] == 'icl-mamba1-tiny'
    assert RunConfig.from_dict({**{k: config[k] for k in ('task', 'train')}, 'model': {'preset': config['preset']}}).task.d == 5
    assert {'steps', 'wall_s', 'device', 'final_error', 'final_loss', 'final_least_squares_loss', 'curve_points'} <= set(summary)
    assert summary['steps'] == 300 and summary['device'].startswith('cpu')
    curve = pd.read_csv(out / 'curve.csv')
    assert list(curve.columns) == BASELINE_COLUMNS and curve.k.tolist() == list(range(201))
    assert set(curve.method) == {'icl-mamba1-tiny'} and set(curve.task) == {'linear'} and curve.error.notna().all()
    n = cell.task.n_points
    at_n = curve[curve.k == n - 1].iloc[0]
    assert at_n.hi < 0.8 and at_n.lo <= at_n.error <= at_n.hi, at_n  # the zero predictor scores 1
    assert curve.error[0] > 0.8  # no example, nothing to go on


def test_the_regression_template_takes_the_whole_run_as_one_parameter():
    nb = json.loads((ROOT / 'nbs' / 'experiments' / 'regression.ipynb').read_text())
    params, = [c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    ns = {}
    exec(''.join(params['source']), ns)
    assert [k for k in ns if not k.startswith('__')] == ['config']
    run = RunConfig.from_dict(ns['config'])
    assert isinstance(run.task, ICLTaskConfig) and template_for(run) == 'nbs/experiments/regression.ipynb'


@pytest.mark.gpu
def test_the_gpu_path_trains_a_group_through_the_curriculum_and_writes_its_curves(tmp_path):
    "What the gpu scale does, at the cpu scale's size: one group (three tasks of one length), CUDA graph, compiled, prefetch 50, curves on the GPU."
    from markov_laplace.experiments.engines import run_group
    cells = [c for _, c in load_sweep(ROOT / 'grids' / 'icl_main.yaml', tmp_path, 'cpu') if c.model.preset == 'icl-mamba1-tiny' and c.task.n_points == 11]
    cells = [RunConfig.from_dict({**c.to_dict(), 'train': {**c.train.to_dict(), 'device': 'cuda', 'steps': 120, 'eval_every': 60}}) for c in cells]
    assert len(cells) == 3 and REGRESSION.step_config(cells[0].task, 0, 120).n_cur == 11
    summaries = run_group(cells, progress=False, prefetch=50, compile=True)
    for c, s in zip(cells, summaries):
        curve = pd.read_csv(f'{c.out_dir}/curve.csv')
        assert list(curve.columns) == BASELINE_COLUMNS and curve.k.tolist() == list(range(201)) and curve.error.notna().all()
        assert s['steps'] == 120 and 'cpu' not in s['device'] and s['batched_compiled'] and len(s['batched_with']) == 3
