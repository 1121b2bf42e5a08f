"""The package's folders are its layers: this reads every import of the package and fails when the layering breaks.

Floors, bottom to top: `base`, `storage` (0); `tasks`, `models` (1, and they never import each other); `training` (2);
`experiments` (3); `analysis` (4); `bench`, `cli`, `__main__` (5). A module may import its own floor or below, never
above; the two benchmarks under `tasks/` do not import each other; and no modules import each other in a circle.
Imports inside functions count as much as those at the top: a lazy import upward is still an import upward."""
import ast
import itertools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'markov_laplace'
FLOORS = {'base': 0, 'storage': 0, 'tasks': 1, 'models': 1, 'training': 2, 'experiments': 3, 'analysis': 4,
          'bench': 5, 'cli': 5, '__main__': 5, '__init__': 5}
APART = [('tasks', 'models'), ('tasks.markov', 'tasks.regression'), ('tasks.nlp', 'tasks.markov'), ('tasks.nlp', 'tasks.regression')]  # neither imports the other


def modules(root=PACKAGE):
    "{dotted name: path} of every module of the package, `_modidx` (nbdev's index) aside."
    out = {}
    for p in root.rglob('*.py'):
        if p.name == '_modidx.py': continue
        parts = p.relative_to(root).with_suffix('').parts
        out['.'.join(('markov_laplace',) + (parts[:-1] if parts[-1] == '__init__' else parts))] = p
    return out


def imports(mods):
    "{module: set of package modules it imports}, relative and absolute, at any depth of the file."
    graph = {}
    for name, path in mods.items():
        pkg = name if path.name == '__init__.py' else name.rpartition('.')[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import): targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    up = pkg.split('.')[:len(pkg.split('.')) - node.level + 1]
                    base = '.'.join(up + ([base] if base else []))
                targets = [base] + [f'{base}.{a.name}' for a in node.names]
            out |= {t for t in targets if t in mods and t != name}
        graph[name] = out
    return graph


def floor(module):
    "A module's floor, by its first folder under the package."
    part = module.split('.')[1] if '.' in module else '__init__'
    return FLOORS[part]


def within(module, prefix): return module == f'markov_laplace.{prefix}' or module.startswith(f'markov_laplace.{prefix}.')


def problems(graph):
    "Every broken rule of the layering, one line each."
    out = []
    for m, targets in sorted(graph.items()):
        for t in sorted(targets):
            if floor(t) > floor(m): out.append(f'{m} imports {t}, a higher floor')
            for a, b in APART:
                if (within(m, a) and within(t, b)) or (within(m, b) and within(t, a)): out.append(f'{m} imports {t}: {a} and {b} stay apart')
    out += [f'circle: {" <-> ".join(c)}' for c in circles(graph)]
    return out


def circles(graph):
    "The strongly connected components of more than one module (Tarjan)."
    index, low, stack, on, found, counter = {}, {}, [], set(), [], itertools.count()
    def visit(v):
        index[v] = low[v] = next(counter); stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: found.append(sorted(comp))
    for v in sorted(graph):
        if v not in index: visit(v)
    return found


def test_every_module_sits_in_a_known_folder():
    mods = modules()
    assert {m.split('.')[1] for m in mods if '.' in m} <= set(FLOORS), 'a new top-level folder or module: give it a floor'
    for folder in ('tasks', 'tasks.markov', 'tasks.regression', 'tasks.nlp', 'models', 'training', 'experiments', 'analysis'):
        assert f'markov_laplace.{folder}' in mods, f'{folder}/__init__.py is missing'


def test_the_folders_hold_what_they_say():
    mods = set(modules())
    want = {'tasks': ['protocol'], 'tasks.markov': ['chains', 'estimators', 'task', 'evaluate'],
            'tasks.regression': ['functions', 'optimal', 'baselines', 'curves', 'task'],
            'tasks.nlp': ['data', 'prompts', 'tiny'],
            'models': ['layers', 'scan', 'ends', 'mamba', 'transformer', 'registry'], 'training': ['config', 'step', 'loop'],
            'experiments': ['config', 'store', 'grids', 'schedule', 'engines', 'reevaluate'],
            'analysis': ['construction', 'markov', 'claims', 'figures']}
    for folder, names in want.items():
        for n in names: assert f'markov_laplace.{folder}.{n}' in mods, f'{folder}/{n}.py'
    flat = {m for m in mods if m.count('.') == 1}
    assert flat == {f'markov_laplace.{n}' for n in ('base', 'storage', 'bench', 'cli', '__main__')} | {
        f'markov_laplace.{f}' for f in ('tasks', 'models', 'training', 'experiments', 'analysis')}


def test_the_package_is_layered():
    graph = imports(modules())
    assert sum(map(len, graph.values())) > 50, 'the import reader found almost nothing: it is broken, not the package clean'
    assert problems(graph) == []


@pytest.mark.parametrize('edge, says', [
    (('markov_laplace.tasks.markov.task', 'markov_laplace.models.registry'), 'stay apart'),
    (('markov_laplace.models.ends', 'markov_laplace.tasks.markov.chains'), 'stay apart'),
    (('markov_laplace.tasks.regression.task', 'markov_laplace.tasks.markov.chains'), 'stay apart'),
    (('markov_laplace.tasks.nlp.data', 'markov_laplace.tasks.markov.chains'), 'stay apart'),
    (('markov_laplace.tasks.nlp.tiny', 'markov_laplace.models.mamba'), 'stay apart'),
    (('markov_laplace.training.step', 'markov_laplace.experiments.store'), 'a higher floor'),
    (('markov_laplace.base', 'markov_laplace.tasks.protocol'), 'a higher floor'),
    (('markov_laplace.training.config', 'markov_laplace.training.loop'), 'circle'),
])
def test_the_check_finds_each_kind_of_break(edge, says):
    "Each rule fails when broken: the package's graph with one import added."
    graph = {k: set(v) for k, v in imports(modules()).items()}
    graph[edge[0]].add(edge[1])
    assert any(says in p for p in problems(graph)), problems(graph)


def test_lazy_imports_count(tmp_path):
    "An import inside a function is read like one at the top, so a lazy import cannot hide an upward one."
    pkg = tmp_path / 'markov_laplace'
    for f in ('tasks', 'experiments'): (pkg / f).mkdir(parents=True); (pkg / f / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'experiments' / 'store.py').write_text('')
    (pkg / 'tasks' / 'protocol.py').write_text('def f():\n    from ..experiments.store import x\n')
    graph = imports(modules(pkg))
    assert graph['markov_laplace.tasks.protocol'] == {'markov_laplace.experiments.store'}
    assert problems(graph) == ['markov_laplace.tasks.protocol imports markov_laplace.experiments.store, a higher floor']
