"""README.md from nbs/index.ipynb where Quarto (and so nbdev_readme) is not installed: markdown cells
as they are, code cells as fenced Python, text outputs as fenced blocks, cells tagged or flagged
`#| hide` left out."""
import sys
from pathlib import Path

import nbformat


def convert(nb_path, out_path):
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for cell in nb.cells:
        src = cell.source.strip()
        if cell.cell_type == 'markdown':
            parts.append(src.replace('](../', ']('))  # links are relative to nbs/ in the notebook
            continue
        lines = src.splitlines()
        if any(l.strip() in ('#| hide', '#|hide') for l in lines): continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if code: parts.append(f'```python\n{code}\n```')
        for o in cell.get('outputs', []):
            text = o.get('text') or o.get('data', {}).get('text/plain')
            if text: parts.append('```\n' + (''.join(text) if isinstance(text, list) else text).rstrip() + '\n```')
    Path(out_path).write_text('\n\n'.join(parts) + '\n')


if __name__ == '__main__': convert(*sys.argv[1:3])
