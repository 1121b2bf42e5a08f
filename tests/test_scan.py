"""The chunked scans against the sequential recurrences (values and gradients, odd lengths), and the
fused mamba_ssm kernels against the torch backend on CUDA."""
import pytest
import torch
import torch.nn.functional as F

from markov_laplace.models.scan import s6_chunked, s6_scan, s6_sequential, s6_step, ssd_chunked, ssd_scan, ssd_sequential, ssd_step


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
