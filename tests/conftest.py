import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs CUDA; skipped where there is none')


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason='no CUDA device')
    for item in items:
        if 'gpu' in item.keywords: item.add_marker(skip)


@pytest.fixture
def gen():
    "A fresh, seeded CPU generator per test."
    return torch.Generator().manual_seed(1234)
