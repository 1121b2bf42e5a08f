import os

# One torch thread unless the caller says otherwise: the tests' tensors are small, and on CI's 2-core CPU a second
# intra-op thread only adds synchronisation (measured on a shared 2-core machine: 300 steps of the regression toy took
# 12 s on one thread, 27 s on two). Set before torch is imported; pytest_configure applies it too, should a plugin have
# imported torch first.
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs CUDA; skipped where there is none')
    if os.environ['OMP_NUM_THREADS'].isdigit(): torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason='no CUDA device')
    for item in items:
        if 'gpu' in item.keywords: item.add_marker(skip)


@pytest.fixture
def gen():
    "A fresh, seeded CPU generator per test."
    return torch.Generator().manual_seed(1234)
