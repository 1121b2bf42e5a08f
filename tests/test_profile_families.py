"""tools/profile_families.py on a CPU: a tiny preset's eager step profiled, the kinds summed, the kernels' CSV written."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from markov_laplace.bench import KERNEL_KINDS

ROOT = Path(__file__).resolve().parents[1]


def test_profile_families_on_cpu(tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.run([sys.executable, 'tools/profile_families.py', '5', '--device', 'cpu', '--csv', str(tmp_path),
                        'icl-transformer-tiny'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert '## icl-transformer-tiny, 5 pairs, eager: ' in p.stdout and 'ms of operator time' in p.stdout
    t = pd.read_csv(tmp_path / 'profile_icl-transformer-tiny_5_eager.csv')
    assert list(t.columns) == ['kernel', 'kind', 'ms', 'launches'] and len(t) and (t.ms > 0).all()
    assert set(t.kind) <= {k for k, _ in KERNEL_KINDS} | {'other'} and 'matmul' in set(t.kind)
    assert 'attention' in set(t.kind)  # the transformer's fused attention (SDPA) on a CPU
    from markov_laplace.bench import kernel_kind
    assert (t.kind == t.kernel.map(kernel_kind)).all()


def test_profile_families_refuses_a_missing_value(tmp_path):
    p = subprocess.run([sys.executable, 'tools/profile_families.py', '5', '--device'], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode != 0 and '--device needs a value' in p.stderr
