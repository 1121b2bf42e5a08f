"""The fused Mamba-1 scan's Triton kernels against their float64 twin on the CPU, through Triton's interpreter.

The GPU tests (tests/test_scan.py, marked gpu) compare the compiled kernels on CUDA; this runs the same kernel source,
launched by the package's own launchers, on every machine where Triton installs (a dev dependency on Linux). The
interpreter must be switched on before Triton is imported, so the check runs in a process of its own
(tools/scan_interpret.py --quick).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_fused_kernels_match_their_twin_in_the_interpreter():
    pytest.importorskip('triton')
    env = {**os.environ, 'TRITON_INTERPRET': '1', 'OMP_NUM_THREADS': '1'}
    p = subprocess.run([sys.executable, 'tools/scan_interpret.py', '--quick'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [l for l in p.stdout.splitlines() if 'relative errors of y' in l]
    assert len(lines) == 4, p.stdout  # every case of QUICK reported
    for l in lines:
        errs = [float(e) for e in re.findall(r'\d\.\de[+-]\d\d', l.split(':', 1)[1])]
        assert len(errs) == 7 and max(errs) <= (1e-2 if 'bfloat16' in l else 1e-5), l
    # one autotuning of two configs: each trial timed with the partial sums after it, the chosen config's launch without
    assert 'BD 8, first call: chose BD 8' in p.stdout and 'BD 8, second call: chose BD 8' in p.stdout, p.stdout


def test_interpret_tool_refuses_bad_arguments():
    pytest.importorskip('triton')
    p = subprocess.run([sys.executable, 'tools/scan_interpret.py', '--fast'], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, 'TRITON_INTERPRET': '1'})
    assert p.returncode != 0 and 'usage: scan_interpret.py --quick' in p.stderr
