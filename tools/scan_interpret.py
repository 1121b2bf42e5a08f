"""The fused Mamba-1 scan's Triton backward against its twin on a CPU, through Triton's interpreter (no GPU needed).

The autotuner's trials run for real (each writes its partial-sum slices); a made-up benchmark picks the config of the
channel block given, so every block size can be checked, the first call (trials, then the chosen config) and the
second (cached). Triton is not one of the package's dependencies; for this check only:

    python -m pip install --target /tmp/tsite triton
    PYTHONPATH=/tmp/tsite python tools/scan_interpret.py 4 8 32     # the channel blocks (BD) to choose
"""
import os
import sys

os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported
import torch
from triton.runtime import autotuner

import markov_laplace.models.scan as scan


def check(bd, b=4, l=37, d=24, n=16, G=2):
    "Choose the configs with `bd` channels per program (fewest warps); compare both calls' gradients with the twin's."
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
    scan._s6_bwd_kernel.cache.clear()
    g = torch.Generator().manual_seed(0)
    x, dt = torch.randn(b, l, d, generator=g), torch.rand(b, l, d, generator=g) * 0.5
    A = -torch.rand(G, d, n, generator=g) - 0.1
    B, C, gy = torch.randn(b, l, n, generator=g), torch.randn(b, l, n, generator=g), torch.randn(b, l, d, generator=g)
    _, states = scan._s6_fused_fwd_ref(x, dt, A, B, C, True)
    ref = scan._s6_fused_bwd_ref(x, dt, A, B, C, states, gy)
    for call in ('first', 'second'):
        got = scan._s6_fused_bwd_triton(x, dt, A, B, C, states, gy)
        errs = [((a - r).abs().max() / r.abs().max()).item() for a, r in zip(got, ref)]
        chosen = scan._s6_bwd_kernel.best_config.kwargs['BD']
        print(f'BD {bd}, {call} call: chose BD {chosen}; largest error of dx ddt dA dB dC, relative: ' + ' '.join(f'{e:.1e}' for e in errs))
        assert chosen == bd and max(errs) < 1e-5, (chosen, errs)
    autotuner.Autotuner._bench, autotuner.Autotuner.do_bench = trial, timer  # the class's own again


if __name__ == '__main__':
    for bd in (sys.argv[1:] or ['4', '8', '32']): check(int(bd))
