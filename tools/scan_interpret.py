"""The fused Mamba-1 scan's Triton kernels against their twin on a CPU, through Triton's interpreter (no GPU needed).

Two checks:

- `--quick` (what `tests/test_scan_interpret.py` runs in CI): each kernel launched through the package's own launchers
  (`_s6_fused_fwd_triton`, `_s6_fused_bwd_triton`) with the autotuner given one config at a time, so nothing is timed;
  lengths that are and are not multiples of the chunk, a channel count that is not a multiple of the channel block, two
  groups of A (two vmapped runs), float32 and bfloat16 inputs, B and C contiguous and as slices of one wider tensor (as
  x_proj gives them: read by their strides); then one autotuning of two configs (the trials' partial sums timed with
  them, check below); the twin computes in float64 from the same rounded inputs. The interpreter
  casts float32 to bfloat16 by truncation where the GPU rounds, so bfloat16 outputs differ there by up to 2^-8.
- `BD ...` (the default: 4 8 32): the autotuner's trials run for real (each writes its partial-sum slices); a made-up
  benchmark picks the config of the channel block given, so every block size can be checked, the first call (trials,
  then the chosen config) and the second (cached). Minutes: every trial runs in the interpreter.

Triton is a dev dependency (Linux), not one of the package's: `pip install triton` where it is absent.

    python tools/scan_interpret.py --quick
    python tools/scan_interpret.py 4 8 32     # the channel blocks (BD) to choose
"""
import os
import sys

if __name__ == '__main__' and not (sys.argv[1:] == ['--quick'] or all(a.isdigit() for a in sys.argv[1:])):
    sys.exit(f'usage: scan_interpret.py --quick | scan_interpret.py [BD ...] (channel blocks, integers); got {sys.argv[1:]}')  # before the imports below: refused at once
os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported
import torch
import triton
from triton.runtime import autotuner

import markov_laplace.models.scan as scan


def _inputs(b, l, d, n, G, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    x, dt = r(b, l, d), torch.nn.functional.softplus(r(b, l, d))
    A = -torch.rand(G, d, n, generator=g) * 3 - 0.1
    B, C, gy = r(b, l, n), r(b, l, n), r(b, l, d)
    x, dt, B, C, gy = (t.to(dtype) for t in (x, dt, B, C, gy))
    return x, dt, A, B, C, gy


def _rel(a, ref, floor=0.):
    "|a - ref| / |ref| in the 2-norm, the denominator floored at `floor`."
    return ((a.double() - ref).norm() / max(ref.norm().item(), floor)).item()


def check_one(bd, length, dtype, strided=False, b=4, d=6, n=16, G=2, warps=1):
    """Both kernels with the one config (bd channels per program) against the float64 twin; the errors, relative.
    `strided`: B and C as slices of one wider tensor (as they come from x_proj), read by their row strides."""
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    kernels = (scan._s6_fwd_kernel, scan._s6_bwd_kernel)
    saved = [k.configs for k in kernels]
    try:
        for k in kernels: k.configs = [triton.Config(dict(BD=bd), num_warps=warps)]  # one config: the autotuner times nothing
        x, dt, A, B, C, gy = _inputs(b, length, d, n, G, dtype, seed=length)
        if strided:
            wide = torch.cat([torch.zeros(b, length, 3, dtype=dtype), B, C], -1)
            B, C = wide[..., 3:3 + n], wide[..., 3 + n:]
            assert not B.is_contiguous() and B.stride(-1) == 1
        y0, s0 = scan._s6_fused_fwd_ref(*[t.double() for t in (x, dt, A, B, C)], True)
        g0 = scan._s6_fused_bwd_ref(*[t.double() for t in (x, dt, A, B, C)], s0, gy.double())
        y1, s1 = scan._s6_fused_fwd_triton(x, dt, A, B, C, True)
        y2, _ = scan._s6_fused_fwd_triton(x, dt, A, B, C, False)  # without the saved states: the same outputs
        g1 = scan._s6_fused_bwd_triton(x, dt, A, B, C, s1, gy)
    finally:
        for k, c in zip(kernels, saved): k.configs = c
    assert y1.dtype == dtype and torch.equal(y1, y2), 'the forward without saved states differs'
    assert [t.dtype for t in g1] == [x.dtype, dt.dtype, A.dtype, B.dtype, C.dtype]
    scale = max(r.norm().item() for r in g0)  # a gradient that is exactly 0 comes back as round-off: floored (tests/test_scan.py)
    # one chunk: the state entering it is 0, so its error is floored at 1
    errs = [_rel(y1, y0), _rel(s1, s0, 1.)] + [_rel(a, r, scale / 10) for a, r in zip(g1, g0)]
    print(f'BD {bd:2d}, length {length:3d}, {str(dtype)[6:]:8s}{" strided" if strided else ""}: relative errors of y, states, dx ddt dA dB dC: '
          + ' '.join(f'{e:.1e}' for e in errs), flush=True)
    assert errs[1] <= 1e-5 and max(errs[:1] + errs[2:]) <= tol, errs
    return errs


QUICK = [(4, 37, torch.float32, True), (4, 16, torch.float32), (4, 1, torch.bfloat16), (8, 21, torch.bfloat16, True)]  # d = 6: a last block of 2 or 6 of BD


def check(bd, b=4, l=37, d=24, n=16, G=2, configs=None):
    """Choose the configs with `bd` channels per program (fewest warps); compare both calls' gradients with the twin's.
    Every trial is timed with the partial sums that follow its launch (the kernel's post_hook): called once per trial in the
    first call, never for the chosen config's launch nor in the second call. `configs`: the autotuner's, for this check only."""
    now, trial, timer = {}, autotuner.Autotuner._bench, autotuner.Autotuner.__dict__['do_bench']
    def bench(self, *args, config, **meta):
        now['config'] = config
        return trial(self, *args, config=config, **meta)
    def do_bench(kernel_call, quantiles=None):  # the trial runs; its time is made up
        kernel_call()
        c = now['config']
        fewest = min(k.num_warps for k in scan._CONFIGS if k.kwargs['BD'] == bd)
        return [1.0 if (c.kwargs['BD'], c.num_warps) == (bd, fewest) else 2.0] * 3
    autotuner.Autotuner._bench, autotuner.Autotuner.do_bench = bench, property(lambda self: do_bench)
    kernel = scan._s6_bwd_kernel
    kernel.cache.clear()
    saved, hook, summed = kernel.configs, kernel.post_hook, []
    kernel.configs = configs or saved
    kernel.post_hook = lambda nargs, exception=None: (summed.append(nargs['BD']), hook(nargs, exception))
    g = torch.Generator().manual_seed(0)
    x, dt = torch.randn(b, l, d, generator=g), torch.rand(b, l, d, generator=g) * 0.5
    A = -torch.rand(G, d, n, generator=g) - 0.1
    B, C, gy = torch.randn(b, l, n, generator=g), torch.randn(b, l, n, generator=g), torch.randn(b, l, d, generator=g)
    _, states = scan._s6_fused_fwd_ref(x, dt, A, B, C, True)
    ref = scan._s6_fused_bwd_ref(x, dt, A, B, C, states, gy)
    for call in ('first', 'second'):
        before = len(summed)
        got = scan._s6_fused_bwd_triton(x, dt, A, B, C, states, gy)
        want = sorted(c.kwargs['BD'] for c in kernel.configs) if call == 'first' else []
        assert sorted(summed[before:]) == want, (call, summed[before:], want)  # the sums timed with each trial, and only there
        errs = [((a - r).abs().max() / r.abs().max()).item() for a, r in zip(got, ref)]
        chosen = scan._s6_bwd_kernel.best_config.kwargs['BD']
        print(f'BD {bd}, {call} call: chose BD {chosen}; largest error of dx ddt dA dB dC, relative: ' + ' '.join(f'{e:.1e}' for e in errs))
        assert chosen == bd and max(errs) < 1e-5, (chosen, errs)
    autotuner.Autotuner._bench, autotuner.Autotuner.do_bench = trial, timer  # the class's own again
    kernel.configs, kernel.post_hook = saved, hook
    kernel.cache.clear()


if __name__ == '__main__':
    args = sys.argv[1:]
    if args == ['--quick']:
        for case in QUICK: check_one(*case)
        check(8, b=2, l=16, d=8, G=1, configs=[triton.Config(dict(BD=bd), num_warps=1) for bd in (4, 8)])  # two trials, then BD 8
    else:  # channel blocks: any other argument was refused at the top
        for bd in (args or ['4', '8', '32']): check(int(bd))
