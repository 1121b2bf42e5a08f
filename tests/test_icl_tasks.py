"""In-context regression tasks: second moments against the metric's divisor, seeding, the vectorised paths against
their twins, the prompt layout, the curriculum, the bootstrap band, the out-of-distribution prompts, and bad input."""
import math

import numpy as np
import pytest
import torch

from markov_laplace.tasks.regression.functions import ICL_TASKS, OOD_KINDS, ICLTaskConfig, _bootstrap_means, _bootstrap_means_ref, _orthogonal_queries, _orthogonal_queries_ref, _tree_eval_ref, curriculum, error_curve, layout, predict_queries, read_x_positions, sample_ood_prompts, sample_prompts, splice, squared_error, tree_eval, zero_error_divisor

TASKS = sorted(ICL_TASKS)


def test_registry_covers_the_spec():
    assert set(TASKS) == {'linear', 'sparse_linear', 'relu_net', 'decision_tree', 'skewed_linear', 'noisy_linear'}


@pytest.mark.parametrize('task', TASKS)
@pytest.mark.parametrize('d_cur', [20, 7])
def test_second_moment_is_the_divisor(task, d_cur):
    "E y² is the zero predictor's error, within 4 standard errors (independent units: calls, as skewed shares T in a call)."
    cfg = ICLTaskConfig(task=task, d=20, d_cur=d_cur, n_points=16)
    g = torch.Generator().manual_seed(11)
    per_call = torch.stack([sample_prompts(cfg, 100, g)[1].double().square().mean() for _ in range(80)])
    mean, se = per_call.mean().item(), per_call.std().item() / math.sqrt(len(per_call))
    assert abs(mean - zero_error_divisor(cfg)) < 4 * se, (mean, se, zero_error_divisor(cfg))


@pytest.mark.parametrize('task', TASKS)
def test_same_seed_same_numbers(task):
    cfg = ICLTaskConfig(task=task, d=6, d_cur=5, n_points=9)
    a = sample_prompts(cfg, 7, torch.Generator().manual_seed(3))
    b = sample_prompts(cfg, 7, torch.Generator().manual_seed(3))
    c = sample_prompts(cfg, 7, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert (a[0][..., 5:] == 0).all() and a[0].dtype == torch.float32


@pytest.mark.parametrize('kind', list(OOD_KINDS))
def test_ood_same_seed_same_numbers(kind):
    cfg = ICLTaskConfig(d=6, d_cur=6, n_points=9)
    scale = 0.5 if kind.startswith('scale') else None
    a = sample_ood_prompts(kind, cfg, 5, torch.Generator().manual_seed(3), scale=scale)
    b = sample_ood_prompts(kind, cfg, 5, torch.Generator().manual_seed(3), scale=scale)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(t.isfinite().all() for t in a)


def test_sparse_support_is_s_coordinates_among_the_first_d_cur():
    "Recover w by least squares from more points than coordinates: exactly s non-zeros, all below d_cur."
    cfg = ICLTaskConfig(task='sparse_linear', d=10, d_cur=6, s=3, n_points=30)
    xs, ys = sample_prompts(cfg, 50, torch.Generator().manual_seed(0))
    w = torch.linalg.lstsq(xs[..., :6].double(), ys.double()[..., None]).solution[..., 0]  # (B, d_cur)
    assert ((w.abs() > 1e-4).sum(-1) == 3).all()
    counts = (w.abs() > 1e-4).double().mean(0)  # each of the 6 coordinates kept with probability s / d_cur
    assert (abs(counts - 0.5) < 0.25).all()


def test_relu_net_matches_its_formula():
    "The sampler's outputs are Σᵢ αᵢ ReLU(wᵢᵀx) with αᵢ = N(0, 1) · √(2/r), parameters drawn by hand in the sampler's order."
    cfg = ICLTaskConfig(task='relu_net', d=5, d_cur=5, n_points=4, hidden=7)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 5, generator=g); W = torch.randn(3, 5, 7, generator=g); a = torch.randn(3, 7, generator=g)
    xs, ys = sample_prompts(cfg, 3, torch.Generator().manual_seed(5))
    assert torch.equal(xs, x)
    torch.testing.assert_close(ys, (torch.relu(x @ W) * a[:, None] * math.sqrt(2 / 7)).sum(-1), rtol=1e-5, atol=1e-5)


def test_tree_fast_equals_reference():
    g = torch.Generator().manual_seed(2)
    for depth in (1, 2, 4):
        xs = torch.randn(6, 13, 7, generator=g)
        coords = torch.randint(0, 7, (6, 2 ** depth - 1), generator=g)
        leaves = torch.randn(6, 2 ** depth, generator=g)
        assert torch.equal(tree_eval(xs, coords, leaves), _tree_eval_ref(xs, coords, leaves))


def test_skewed_inputs_have_the_skewed_spectrum():
    cfg = ICLTaskConfig(task='skewed_linear', d=8, d_cur=8, n_points=4000)
    xs, _ = sample_prompts(cfg, 1, torch.Generator().manual_seed(0))  # one call, one T
    cov = (xs[0].double().T @ xs[0].double()) / xs.shape[1]
    ev = torch.linalg.eigvalsh(cov).flip(0)
    assert abs(ev.sum().item() - 8) < 0.5  # E‖x‖² = d
    ratio = ev[:4] / ev[0]
    torch.testing.assert_close(ratio, 1 / torch.arange(1., 5.).double() ** 2, rtol=0.15, atol=0.01)


def test_layout_and_read_back():
    xs = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    ys = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    t = layout(xs, ys)
    assert t.shape == (3, 10, 4)
    assert torch.equal(t[:, 0::2], xs) and torch.equal(t[:, 1::2, 0], ys) and (t[:, 1::2, 1:] == 0).all()
    assert torch.equal(read_x_positions(t[..., 0]), xs[..., 0])
    assert torch.equal(read_x_positions(t[..., :1]), xs[..., 0])


def test_curriculum_follows_the_public_schedule():
    "start + floor(step / 2000) * increment, capped: full size at step 30,000."
    for step in range(0, 40000, 500):
        t = step // 2000
        assert curriculum(step, 'sparse_linear') == (min(5 + t, 20), min(11 + 2 * t, 41))
        assert curriculum(step, 'relu_net') == (min(5 + t, 20), min(26 + 5 * t, 101))
    assert curriculum(29999, 'linear') == (19, 39) and curriculum(30000, 'linear') == (20, 41)


def test_bootstrap_fast_equals_gather_and_band_has_the_right_width():
    err = torch.randn(400, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64).square()
    a = _bootstrap_means(err, 300, torch.Generator().manual_seed(1))
    b = _bootstrap_means_ref(err, 300, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    c = error_curve(err, n_boot=2000, level=0.9, generator=torch.Generator().manual_seed(2))
    assert list(c.columns) == ['k', 'error', 'lo', 'hi'] and list(c.k) == list(range(6))
    np.testing.assert_allclose(c.error, err.mean(0).numpy())
    normal = 2 * 1.6449 * err.std(0).numpy() / math.sqrt(400)  # the normal approximation's 90% width
    np.testing.assert_allclose(c.hi - c.lo, normal, rtol=0.15)
    assert c.equals(error_curve(err, n_boot=2000, level=0.9, generator=torch.Generator().manual_seed(2)))


def test_ood_prompts_mean_what_they_say():
    cfg = ICLTaskConfig(d=6, d_cur=6, n_points=10)
    draw = lambda kind, scale=None: sample_ood_prompts(kind, cfg, 40, torch.Generator().manual_seed(0), scale=scale)
    std = draw('standard')
    assert std.xq is std.xs and std.yq is std.ys
    q = draw('random_quadrants')
    assert ((q.xs > 0) == (q.xs[:, :1] > 0)).all() and not torch.equal(q.xq, q.xs)
    torch.testing.assert_close(q.xq.abs(), q.xs.abs())
    o = draw('orthogonal')
    for i in range(1, 6):
        assert (o.xq[:, i:i + 1] @ o.xs[:, :i].transpose(1, 2)).abs().max() < 1e-4
    torch.testing.assert_close(o.xq[:, :6].norm(dim=-1), o.xs[:, :6].norm(dim=-1))
    torch.testing.assert_close(o.xq, _orthogonal_queries_ref(o.xs, 6), rtol=1e-4, atol=1e-4)
    assert (o.xq[:, 6:] == 0).all()
    v = draw('overlapping')
    assert torch.equal(v.xq[:, 0], v.xs[:, 0])
    assert all((v.xq[b, i] == v.xs[b, :i]).all(-1).any() for b in range(40) for i in range(1, 10))
    assert torch.linalg.matrix_rank(draw('half_subspace').xs.flatten(0, 1).double(), rtol=1e-4) == 3
    torch.testing.assert_close(draw('scale_x', 3.0).xs, 3 * std.xs)
    torch.testing.assert_close(draw('scale_y', 0.5).ys, 0.5 * std.ys)
    assert zero_error_divisor(cfg, 'scale_x', 3.0) == 54.0 and zero_error_divisor(cfg, 'noisy_y') == 6.0


def test_ood_moments():
    "Skewed and half-subspace inputs keep E‖x‖² = d; noisy y is rescaled to E y² = d_cur."
    cfg = ICLTaskConfig(d=10, d_cur=10, n_points=8)
    for kind in ('half_subspace', 'skewed', 'noisy_y'):
        p = sample_ood_prompts(kind, cfg, 4000, torch.Generator().manual_seed(1))
        assert abs(p.xs.double().square().sum(-1).mean().item() - 10) < 0.3
        per_prompt = p.ys.double().square().mean(1)
        assert abs(per_prompt.mean().item() - zero_error_divisor(cfg, kind)) < 4 * per_prompt.std().item() / math.sqrt(4000)


def test_predict_queries_splices_one_prompt_per_k():
    cfg = ICLTaskConfig(d=4, d_cur=4, n_points=7)
    p = sample_ood_prompts('random_quadrants', cfg, 3, torch.Generator().manual_seed(0))
    seen = []
    def spy(xs, ys):  # predicts the query's own first coordinate; records the prompts it saw
        seen.append(xs.shape[1]); return xs[..., 0].clone()
    out = predict_queries(spy, p)
    assert seen == list(range(1, 8)) and torch.equal(out, p.xq[..., 0])
    xs, ys = splice(p, 3)
    assert torch.equal(xs[:, :3], p.xs[:, :3]) and torch.equal(ys[:, 3], p.yq[:, 3])


BAD = [
    (lambda: ICLTaskConfig(d=0).validate(), '`d` must be an integer >= 1'),
    (lambda: ICLTaskConfig(d=4, d_cur=5).validate(), '`d_cur` must be an integer in [1, d = 4]'),
    (lambda: ICLTaskConfig(task='sparse_linear', d=5, d_cur=5, s=6).validate(), '`s` must be an integer in [1, d_cur = 5]'),
    (lambda: ICLTaskConfig(task='sparse_linear', d=5, d_cur=2, s=3).validate(), '`s` must be an integer in [1, d_cur = 2]'),
    (lambda: ICLTaskConfig(depth=0).validate(), '`depth` must be an integer in [1, 20]'),
    (lambda: ICLTaskConfig(hidden=0).validate(), '`hidden` must be an integer >= 1'),
    (lambda: ICLTaskConfig(n_points=2.0).validate(), '`n_points` must be an integer >= 1'),
    (lambda: ICLTaskConfig(noise_std=float('nan')).validate(), '`noise_std` must be None or a finite number >= 0'),
    (lambda: ICLTaskConfig(task='quadratic').validate(), '`task` must be one of'),
    (lambda: ICLTaskConfig.from_dict({'dims': 3}), '`ICLTaskConfig keys` must be fields of ICLTaskConfig'),
    (lambda: sample_prompts(ICLTaskConfig(), 0, torch.Generator()), '`n_prompts` must be an integer >= 1'),
    (lambda: sample_prompts(ICLTaskConfig(), 2, 0), '`generator` must be a torch.Generator'),
    (lambda: sample_prompts({'task': 'linear'}, 2, torch.Generator()), '`config` must be an ICLTaskConfig'),
    (lambda: layout(torch.zeros(2, 3), torch.zeros(2, 3)), '`xs.shape` must be (B, n, d)'),
    (lambda: layout(torch.zeros(2, 3, 4), torch.zeros(2, 4)), '`ys.shape` must be (B, n) = (2, 3)'),
    (lambda: layout(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 3)), '`xs` must be a floating-point tensor'),
    (lambda: layout(torch.full((2, 3, 4), float('inf')), torch.zeros(2, 3)), '`xs, ys` must be finite'),
    (lambda: read_x_positions(torch.zeros(2, 5)), '`out.shape` must be (B, 2n) or (B, 2n, 1)'),
    (lambda: curriculum(1.5, 'linear'), '`step` must be an integer >= 0'),
    (lambda: curriculum(0, 'tree'), '`task_name` must be one of'),
    (lambda: squared_error(torch.zeros(2, 3), torch.zeros(2, 3), 0), '`divisor` must be a finite number > 0'),
    (lambda: squared_error(torch.zeros(2, 3), torch.zeros(3, 2), 1.0), '`preds.shape` must be ys.shape'),
    (lambda: error_curve(torch.zeros(5)), '`err` must be a floating-point tensor (B, n)'),
    (lambda: error_curve(torch.full((4, 2), float('nan'))), '`err` must be finite'),
    (lambda: error_curve(torch.zeros(4, 2), n_boot=0), '`n_boot` must be an integer >= 1'),
    (lambda: sample_ood_prompts('rotated', ICLTaskConfig(), 2, torch.Generator()), '`kind` must be one of'),
    (lambda: sample_ood_prompts('scale_y', ICLTaskConfig(), 2, torch.Generator(), scale=-1.0), '`scale` must be a finite number > 0'),
    (lambda: sample_ood_prompts('skewed', ICLTaskConfig(), 2, torch.Generator(), scale=2.0), "`scale` must be None for 'skewed'"),
    (lambda: sample_ood_prompts('standard', ICLTaskConfig(task='relu_net'), 2, torch.Generator()), '`config.task` must be'),
    (lambda: splice(sample_ood_prompts('standard', ICLTaskConfig(n_points=4), 2, torch.Generator()), 4), '`k` must be an integer in [0, 4)'),
    (lambda: splice(sample_ood_prompts('standard', ICLTaskConfig(n_points=4), 2, torch.Generator()), -1), '`k` must be an integer in [0, 4)'),
]


@pytest.mark.parametrize('call,message', BAD, ids=[m for _, m in BAD])
def test_bad_input_names_the_parameter(call, message):
    with pytest.raises(ValueError) as e: call()
    assert message in str(e.value)


def test_config_json_round_trip():
    cfg = ICLTaskConfig(task='noisy_linear', d=8, d_cur=6, n_points=11, noise_std=0.5)
    assert ICLTaskConfig.from_json(cfg.to_json()) == cfg and ICLTaskConfig.from_dict(cfg.to_dict()) == cfg
    assert ICLTaskConfig(task='noisy_linear').sigma == 1.0 and ICLTaskConfig().sigma == 0.0


@pytest.mark.gpu
@pytest.mark.parametrize('task', TASKS)
def test_cuda_draws(task):
    cfg = ICLTaskConfig(task=task, n_points=21)
    xs, ys = sample_prompts(cfg, 8, torch.Generator('cuda').manual_seed(0), device='cuda')
    assert xs.is_cuda and ys.is_cuda and ys.isfinite().all()
    a = sample_prompts(cfg, 8, torch.Generator().manual_seed(0), device='cuda')  # drawn on the CPU: the CPU's numbers
    b = sample_prompts(cfg, 8, torch.Generator().manual_seed(0))
    assert torch.equal(a[0].cpu(), b[0]) and torch.equal(a[1].cpu(), b[1])
    torch.testing.assert_close(tree_eval(xs, torch.zeros(8, 15, dtype=torch.long, device='cuda'), torch.ones(8, 16, device='cuda')),
                               torch.ones(8, 21, device='cuda'))
