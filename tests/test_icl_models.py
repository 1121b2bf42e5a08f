"""The function-class presets: parameter counts at the papers' sizes, shapes, causality and the recurrent
step of the tiny ones, and tiny Mamba-1, transformer and S4D learning linear regression in context."""
import itertools

import pytest
import torch

from markov_laplace.models.registry import ICL_PRESETS, build
from markov_laplace.tasks.regression.functions import ICLTaskConfig, layout, read_x_positions, sample_prompts

IO = dict(d_in=20, d_out=1)

# the exact counts with vector ends (d_in = 20, d_out = 1); the papers': ≈ 9.5M, 10.5M, 10.5M
STANDARD = {'icl-transformer': 9_483_265, 'icl-transformer-pos': 9_548_801, 'icl-mamba1': 10_518_273, 'icl-s4d': 10_491_331, 'icl-s4d-toeplitz': 10_491_331,
            'icl-s4d-padded': 10_491_331}


def test_standard_sizes_have_the_papers_parameter_counts():
    for preset, n in STANDARD.items():
        assert build(preset, IO).n_params() == n, preset
        paper = 9.5e6 if 'transformer' in preset else 10.5e6
        assert abs(n - paper) <= 0.01 * paper, preset


TINY = [p for p in ICL_PRESETS if p.endswith('-tiny')]


@pytest.mark.parametrize('preset', TINY)
def test_tiny_presets_are_causal_and_step_like_forward(preset, gen):
    m = build(preset, dict(IO, length=30), seed=1).eval()
    x = torch.randn(2, 30, 20, generator=gen)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (2, 30)
        x2 = x.clone(); x2[:, 12:] = torch.randn(2, 18, 20, generator=gen)
        torch.testing.assert_close(m(x2)[:, :12], y[:, :12], rtol=1e-5, atol=1e-5)
        if hasattr(m.backbone, 'step'):
            cache = m.init_cache(2)
            torch.testing.assert_close(torch.stack([m.step(x[:, t], cache) for t in range(30)], 1), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('preset,lr,steps,over', [('icl-mamba1-tiny', 1e-2, 300, dict(n_layers=2, d_state=4)),
                                                  ('icl-transformer-tiny', 3e-4, 1000, {}), ('icl-s4d-tiny', 1e-2, 500, {})])
def test_tiny_presets_learn_linear_regression_in_context(preset, lr, steps, over):
    "d = 2, 6 pairs: after a few hundred Adam steps the error at the last three pairs is well below the zero predictor's (1)."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is fastest, and a busy machine's second core is not taken from others
    try: err = _learn(preset, lr, steps, over)
    finally: torch.set_num_threads(threads)
    assert err < 0.6, err


def _learn(preset, lr, steps, over): # nothing random is drawn outside the generators below; dropout is off (eval mode, as the trainer runs)
    cfg, g = ICLTaskConfig(task='linear', d=2, d_cur=2, n_points=6), torch.Generator().manual_seed(0)
    m = build(preset, dict(d_in=2, d_out=1), seed=0, **over).eval()  # Mamba-1 shallower, with a smaller state: CI's CPU time
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    def prompts(B):
        xs, ys = sample_prompts(cfg, B, g)
        return layout(xs, ys), ys  # x1, (y1, 0), x2, ...
    for _ in range(steps):
        z, ys = prompts(64)
        loss = (read_x_positions(m(z)) - ys).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    z, ys = prompts(1024)
    with torch.no_grad(): return (read_x_positions(m(z)) - ys).square()[:, -3:].mean().item() / cfg.d


@pytest.mark.gpu
def test_our_mamba1_mixer_is_mamba_ssm_mamba_given_the_same_weights(monkeypatch):
    "Our Mamba-1 mixer (fused Triton scan) against `mamba_ssm.Mamba` with its weights copied in: outputs and gradients."
    pytest.importorskip('mamba_ssm')
    from mamba_ssm import Mamba
    from markov_laplace.models.mamba import Mamba1Mixer, MambaConfig
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)  # restored after the test: later GPU tests keep their settings
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    torch.manual_seed(0)  # mamba_ssm draws its initial weights from the global generator; they are copied into ours
    theirs = Mamba(d_model=64, d_state=16, d_conv=4, expand=2, dt_rank=16).cuda()
    ours = Mamba1Mixer(MambaConfig(mixer='mamba1', d_model=64, d_state=16, d_conv=4, expand=2, dt_rank=16, d_skip=True)).cuda()
    names = {'in_proj.weight': 'in_proj.weight', 'conv1d.weight': 'conv.conv.weight', 'conv1d.bias': 'conv.conv.bias',
             'x_proj.weight': 'x_proj.weight', 'dt_proj.weight': 'dt_proj.weight', 'dt_proj.bias': 'dt_proj.bias',
             'A_log': 'A_log', 'D': 'D', 'out_proj.weight': 'out_proj.weight'}
    ours.load_state_dict({names[k]: v for k, v in theirs.state_dict().items()})
    u = torch.randn(4, 82, 64, generator=torch.Generator().manual_seed(1)).cuda()
    y_theirs, y_ours = theirs(u), ours(u)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    assert rel(y_ours, y_theirs) <= 1e-4, rel(y_ours, y_theirs)
    w = torch.randn(y_ours.shape, generator=torch.Generator().manual_seed(2)).cuda()
    (y_theirs * w).sum().backward(); (y_ours * w).sum().backward()
    ours_p = dict(ours.named_parameters())
    for k, p in theirs.named_parameters():
        assert rel(ours_p[names[k]].grad, p.grad) <= 1e-3, (k, rel(ours_p[names[k]].grad, p.grad))


@pytest.mark.gpu
def test_s4d_convolution_with_its_written_gradients_is_its_twin_on_cuda():
    "S4D's `fft_causal_conv` (gradients by hand) and `toeplitz_causal_conv` (a matmul) against autograd through the FFT on CUDA: float32, and bf16 input under autocast."
    from markov_laplace.models.s4 import fft_causal_conv, fft_causal_conv_ref, toeplitz_causal_conv
    g = torch.Generator(device='cuda').manual_seed(0)
    for conv, dtype, L in itertools.product((fft_causal_conv, toeplitz_causal_conv), (torch.float32, torch.bfloat16), (82, 202)):
        u = torch.randn(8, L, 435, device='cuda', generator=g).to(dtype).requires_grad_()
        K = torch.randn(435, L, device='cuda', generator=g).div(L).requires_grad_()
        gy = torch.randn(8, L, 435, device='cuda', generator=g)
        with torch.autocast('cuda', torch.bfloat16, enabled=dtype == torch.bfloat16):
            y, y_ref = conv(u, K), fft_causal_conv_ref(u, K)
        assert y.dtype == y_ref.dtype == torch.float32
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4 * y_ref.abs().max().item())
        for a, b in zip(torch.autograd.grad(y, (u, K), gy), torch.autograd.grad(y_ref, (u, K), gy)):
            assert a.dtype == b.dtype
            tol = (1e-2 if a.dtype == torch.bfloat16 else 1e-4) * b.abs().max().item()
            torch.testing.assert_close(a, b, rtol=1e-2 if a.dtype == torch.bfloat16 else 1e-4, atol=tol)


@pytest.mark.gpu
def test_padded_s4d_on_cuda_gives_the_unpadded_numbers(monkeypatch):
    """S4D at an unaligned width (35, twice it 70; 2 layers) with `pad_to=8`, its 1×1 convolution through `padded_linear`,
    against the same weights unpadded on CUDA: outputs and every parameter's gradient, in float32 (eager and compiled)
    and under bf16 autocast, where both round to bfloat16 and only the GEMMs' order of sums differs."""
    from markov_laplace.models import layers
    calls = []
    padded = layers.padded_linear
    monkeypatch.setattr(layers, 'padded_linear', lambda *a, **kw: calls.append(1) or padded(*a, **kw))  # the padded path is taken
    assert layers.fast_paths()  # on: `Linear` pads only on its fast path
    x = torch.randn(4, 30, 20, generator=torch.Generator().manual_seed(0)).cuda()
    for autocast, compiled in ((False, False), (False, True), (True, False)):
        outs, grads = [], []
        for pad_to in (1, 8):
            m = build('icl-s4d-tiny', dict(IO, length=30), seed=1, d_model=35, n_layers=2, dropout=0.0, pad_to=pad_to).cuda()
            assert m.backbone.blocks[0].layer.out.pad_to == pad_to
            f = torch.compile(m) if compiled and pad_to == 8 else m
            before = len(calls)
            with torch.autocast('cuda', torch.bfloat16, enabled=autocast):
                y = f(x).float()
            assert (len(calls) > before) == (pad_to == 8), (pad_to, compiled)  # once a layer when padded (compiled: as it traces), never else
            outs.append(y); grads.append(torch.autograd.grad(y.square().mean(), list(m.parameters())))
        rel = 2e-2 if autocast else 1e-4
        torch.testing.assert_close(outs[1], outs[0], rtol=rel, atol=rel * outs[0].abs().max().item())
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=rel, atol=rel * b.abs().max().item(), msg=lambda m: f'autocast={autocast} compiled={compiled}: {m}')
