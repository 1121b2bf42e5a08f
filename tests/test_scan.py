"""The chunked scans against the sequential recurrences (values and gradients, odd lengths), and the
fused mamba_ssm kernels against the torch backend on CUDA."""
import pytest
import torch
import torch.nn.functional as F

from markov_laplace.models.scan import _s6_fused_bwd_ref, _s6_fused_fwd_ref, s6_fused, s6_chunked, s6_scan, s6_sequential, s6_step, ssd_chunked, ssd_scan, ssd_sequential, ssd_step


def _ssd_inputs(g, b=2, l=37, h=2, p=4, groups=1, n=3, dtype=torch.float32, device='cpu'):
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)
    return [r(b, l, h, p), F.softplus(r(b, l, h)), (-torch.rand(h, generator=g, dtype=dtype) * 2).to(device),
            r(b, l, groups, n), r(b, l, groups, n)]


def _s6_inputs(g, b=2, l=29, d=5, n=4, dtype=torch.float32, device='cpu'):
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)
    return [r(b, l, d), F.softplus(r(b, l, d)), (-torch.rand(d, n, generator=g, dtype=dtype) * 3).to(device),
            r(b, l, n), r(b, l, n)]


def _grads(fn, args, w):
    args = [a.detach().clone().requires_grad_() for a in args]
    (fn(*args) * w).sum().backward()
    return [a.grad for a in args]


def _rel(a, b): return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()  # 0 when both are 0


@pytest.mark.parametrize('length', [1, 7, 64, 100, 257])
@pytest.mark.parametrize('chunk', [4, 16, 64])
def test_ssd_chunked_matches_sequential(length, chunk, gen):
    args = _ssd_inputs(gen, l=length, h=4, groups=2)
    y_ref = ssd_sequential(*args)
    y = ssd_chunked(*args, chunk=chunk)
    assert _rel(y, y_ref) <= 1e-5
    w = torch.randn(y.shape, generator=gen)
    for g1, g2 in zip(_grads(lambda *a: ssd_chunked(*a, chunk=chunk), args, w), _grads(ssd_sequential, args, w)):
        assert _rel(g1, g2) <= 1e-5


@pytest.mark.parametrize('length', [1, 9, 33, 100])
@pytest.mark.parametrize('chunk', [1, 8, 32])
def test_s6_chunked_matches_sequential(length, chunk, gen):
    args = _s6_inputs(gen, l=length)
    y_ref = s6_sequential(*args)
    y = s6_chunked(*args, chunk=chunk)
    assert _rel(y, y_ref) <= 1e-5
    w = torch.randn(y.shape, generator=gen)
    for g1, g2 in zip(_grads(lambda *a: s6_chunked(*a, chunk=chunk), args, w), _grads(s6_sequential, args, w)):
        assert _rel(g1, g2) <= 1e-5


@pytest.mark.parametrize('length', [1, 15, 16, 17, 40])  # the fused kernel loads 16 positions at a time
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_s6_fused_matches_sequential(length, dtype, tol, gen):
    args = _s6_inputs(gen, l=length, dtype=dtype)
    y = s6_fused(*args)
    assert _rel(y, s6_sequential(*args)) <= tol
    w = torch.randn(y.shape, generator=gen, dtype=dtype)
    for g1, g2 in zip(_grads(s6_fused, args, w), _grads(s6_sequential, args, w)):
        assert _rel(g1, g2) <= tol


def test_s6_fused_under_vmap_of_grad_is_each_run_alone(gen):
    from torch.func import grad, vmap
    runs = [_s6_inputs(gen, l=19) for _ in range(3)]  # each run its own A, as in the batched trainer
    loss = lambda f: (lambda *a: (f(*a) ** 2).sum())
    batched = vmap(grad(loss(s6_fused), argnums=(0, 1, 2, 3, 4)))(*[torch.stack(z) for z in zip(*runs)])
    for r, args in enumerate(runs):
        for ours, theirs in zip(batched, grad(loss(s6_sequential), argnums=(0, 1, 2, 3, 4))(*args)):
            assert _rel(ours[r], theirs) <= 1e-5


def test_final_states_and_initial_states_chain(gen):
    # scanning two halves, the second from the first's final state, equals scanning the whole
    args = _ssd_inputs(gen, l=50)
    y, s = ssd_chunked(*args, chunk=16, return_state=True)
    first = [a[:, :20] if a.dim() > 1 else a for a in args]
    second = [a[:, 20:] if a.dim() > 1 else a for a in args]
    y1, s1 = ssd_chunked(*first, chunk=16, return_state=True)
    y2, s2 = ssd_chunked(*second, chunk=16, initial_state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, s, rtol=1e-5, atol=1e-5)
    args = _s6_inputs(gen, l=50)
    y, s = s6_chunked(*args, chunk=8, return_state=True)
    y1, s1 = s6_chunked(*[a[:, :20] if a.dim() == 3 and a.shape[1] == 50 else a for a in args], chunk=8, return_state=True)
    y2, s2 = s6_chunked(*[a[:, 20:] if a.dim() == 3 and a.shape[1] == 50 else a for a in args], chunk=8,
                        initial_state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, s, rtol=1e-5, atol=1e-5)


def test_unit_decay_counts(gen):
    # with A = 0 (a_t = 1) and dt = 1 the state is the plain sum of x_t b_t^T
    x, dt, A, B, C = _ssd_inputs(gen, l=12)
    y = ssd_chunked(x, torch.ones_like(dt), torch.zeros_like(A), B, C, chunk=5)
    H = torch.einsum('blhp,bln->blhpn', x, B[:, :, 0]).cumsum(1)
    torch.testing.assert_close(y, torch.einsum('blhpn,bln->blhp', H, C[:, :, 0]), rtol=1e-5, atol=1e-5)


def test_float64_agreement_is_tight(gen):
    args = _ssd_inputs(gen, l=45, dtype=torch.float64)
    assert _rel(ssd_chunked(*args, chunk=8), ssd_sequential(*args)) <= 1e-12
    args = _s6_inputs(gen, l=45, dtype=torch.float64)
    assert _rel(s6_chunked(*args, chunk=8), s6_sequential(*args)) <= 1e-12


def test_mamba_ssm_backend_fails_clearly_without_cuda(gen):
    if torch.cuda.is_available(): pytest.skip('CUDA is here')
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        ssd_scan(*_ssd_inputs(gen), backend='mamba_ssm')
    with pytest.raises(ValueError, match="`backend` must be 'torch' or 'mamba_ssm'"):
        s6_scan(*_s6_inputs(gen), backend='cuda')


# ---- GPU: the fused kernels against the torch backend (tf32 tolerance) ----

@pytest.mark.gpu
@pytest.mark.parametrize('length', [64, 100, 512])
@pytest.mark.parametrize('scan', ['ssd', 's6'])
def test_mamba_ssm_matches_torch(scan, length):
    pytest.importorskip('mamba_ssm')  # the fused kernels: skipped, not failed, where the package is absent
    g = torch.Generator().manual_seed(length)
    if scan == 'ssd': fn, args = ssd_scan, _ssd_inputs(g, b=4, l=length, h=2, p=16, n=8, device='cuda')
    else: fn, args = s6_scan, _s6_inputs(g, b=4, l=length, d=16, n=8, device='cuda')
    y_ref = fn(*args, backend='torch')
    y = fn(*args, backend='mamba_ssm')
    assert _rel(y, y_ref) <= 3e-3, _rel(y, y_ref)
    w = torch.randn(y.shape, generator=g).cuda()
    for a, b in zip(_grads(lambda *a: fn(*a, backend='mamba_ssm'), args, w),
                    _grads(lambda *a: fn(*a, backend='torch'), args, w)):
        assert _rel(a, b) <= 3e-3, _rel(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize('length', [1, 16, 37, 82, 202])
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_fused_triton_kernels_match_their_twin(length, dtype, tol):
    pytest.importorskip('triton')
    g = torch.Generator().manual_seed(length)
    r = lambda *s: torch.randn(*s, generator=g)
    b, d, n, G = 6, 70, 16, 2  # d not a multiple of the channel block; two groups of A (two vmapped runs)
    x, dt, A, B, C = r(b, length, d), F.softplus(r(b, length, d)), -torch.rand(G, d, n, generator=g) * 3, r(b, length, n), r(b, length, n)
    gy = r(b, length, d)
    cast = lambda *ts: [t.to(dtype) for t in ts]
    x, dt, B, C, gy = cast(x, dt, B, C, gy)  # the twin reads the same rounded inputs, computes in float64
    if length % 2:  # B and C as x_proj gives them: slices of one wider tensor, read by their strides
        wide = torch.cat([torch.zeros(b, length, 3, dtype=dtype), B, C], -1)
        B, C = wide[..., 3:3 + n], wide[..., 3 + n:]
    y0, s0 = _s6_fused_fwd_ref(*[t.double() for t in (x, dt, A, B, C)], True)
    g0 = _s6_fused_bwd_ref(*[t.double() for t in (x, dt, A, B, C)], s0, gy.double())
    from markov_laplace.models.scan import _s6_fused_bwd_triton, _s6_fused_fwd_triton
    y1, s1 = _s6_fused_fwd_triton(*[t.cuda() for t in (x, dt, A, B, C)], True)
    g1 = _s6_fused_bwd_triton(*[t.cuda() for t in (x, dt, A, B, C, s1, gy)])
    g2 = _s6_fused_bwd_triton(*[t.cuda() for t in (x, dt, A, B, C, s1, gy)])  # the autotuned config, chosen by the first call
    for a, b_ in zip(g1, g2): assert torch.equal(a, b_)  # the first call, which tries every config, leaves no trial's sums behind
    assert _rel(y1.double().cpu(), y0) <= tol and _rel(s1.double().cpu(), s0) <= 1e-5
    # a gradient that is exactly 0 (dA at length 1: no earlier state) comes back as float32 round-off, since the kernel
    # forms a_t h_{t-1} as h_t - u_t (on one H200: |dA| = 2.7e-6 beside 85 for the largest gradient, 3e-8 of it): each
    # gradient is judged relative to its own size, floored at a tenth of the largest one's
    scale = max(b_.norm() for b_ in g0)
    for a, b_ in zip(g1, g0): assert ((a.double().cpu() - b_).norm() / torch.maximum(b_.norm(), scale / 10)).item() <= tol


@pytest.mark.gpu
def test_mamba_ssm_s6_under_bf16_autocast_and_clear_under_vmap():
    pytest.importorskip('mamba_ssm')
    g = torch.Generator().manual_seed(0)
    x, dt, A, B, C = _s6_inputs(g, b=4, l=64, d=32, n=16, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        y = s6_scan(x.bfloat16(), dt, A, B.bfloat16(), C.bfloat16(), backend='mamba_ssm')  # dt stays float32, as after a softplus
    assert y.dtype == torch.bfloat16 and _rel(y.float(), s6_sequential(x.bfloat16().float(), dt, A, B.bfloat16().float(), C.bfloat16().float())) <= 1e-2
    from torch.func import vmap
    with pytest.raises(RuntimeError, match='torch.func transforms'):
        vmap(lambda *a: s6_scan(*a, backend='mamba_ssm'))(*[t[None].expand(2, *t.shape) for t in (x, dt, A, B, C)])
