"""nbval settings for the notebooks.

nbdev_clean (nbdev's convention for committed notebooks) strips every execution count but keeps the
outputs the docs render; nbval refuses a cell that has outputs and no execution count ("Unrun
reference cell has outputs"). Under --nbval-lax outputs are not compared anyway, so give such cells
a count: nbval then simply runs them and fails on any error.

Each notebook's kernel starts with this process's environment: one torch thread unless the caller says otherwise (the
notebooks' tensors are small; on CI's 2-core CPU a second intra-op thread only adds synchronisation)."""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')


def pytest_collection_modifyitems(items):
    for item in items:
        cell = getattr(item, 'cell', None)
        if cell is not None and cell.get('execution_count') is None and cell.get('outputs'):
            cell['execution_count'] = 1
