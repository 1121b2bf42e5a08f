"""Every command in README.md, GPU.md, runs/README.md and the papermill template is run or parsed here (issue 22, item 7),
so that a changed flag cannot leave a stale line in the docs.

- every `markov-laplace ...` / `python -m markov_laplace ...` line or inline span is parsed by the CLI's own parser (GPU
  commands too: `--device cuda` is accepted as a name here), and the grids it names are found;
- every inline span of options (`--batch --prefetch 50`) parses as the options of some command;
- every `make` target and `tools/` file named exists;
- the shell blocks of README.md and the template run as written, in an empty folder, with the runs root there; a sweep
  of a shipped grid trains its first cell only (`--shard 0/1000` appended), everything else as printed."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import markov_laplace.cli as cli

ROOT = Path(__file__).resolve().parents[1]


def _template_text():
    import json
    return ''.join(json.loads((ROOT / 'nbs' / 'experiments' / 'markov.ipynb').read_text())['cells'][0]['source'])

DOCS = {name: (ROOT / name).read_text() for name in ('README.md', 'GPU.md', 'runs/README.md')} | {'template': _template_text()}
PLACEHOLDERS = {'N': '2', 'G': '1', 'T': 'linear', 'F.csv': 'f.csv', 'GRID': 'quick', 'grids/<name>.yaml': 'grids/fig1.yaml',
                'TASK': 'linear', '"$(cat .commit)"': 'abc'}
BASE = {'run': [], 'sweep': ['quick'], 'collect': ['x'], 'template': [], 'floors': [], 'bayes-risk': [], 'bench': [],
        'icl-baselines': ['--task', 'linear', '--out', 'x.csv'], 'nlp-icl': ['--model', 'm']}


def _blocks(text): # the fenced shell blocks
    return [m.group(1) for m in re.finditer(r'```(?:sh|bash)\n(.*?)```', text, re.S)]

def _spans(text): # inline code spans outside the fenced blocks
    return re.findall(r'`([^`\n]+)`', re.sub(r'```.*?```', '', text, flags=re.S))

def _lines(block): # command lines: continuations joined, comments dropped, split at ; and &&
    out = []
    for line in block.replace('\\\n', ' ').splitlines():
        line = re.sub(r'\s#.*$', '', line) if "'" not in line.split('#')[0][-1:] else line
        out += [p.strip() for p in re.split(r';|&&', line) if p.strip()]
    return out

def _braces(tokens): # bash's {a,b} expansion, enough for grids/{fig1,fig10}.yaml
    out = []
    for t in tokens:
        m = re.search(r'\{([^{}]*,[^{}]*)\}', t)
        out += [t[:m.start()] + x + t[m.end():] for x in m.group(1).split(',')] if m else [t]
    return out

def _own_words(tokens): # a command's own words: those before a pipe or a redirection (`2>&1 | tail`, `> log`)
    out = []
    for t in tokens:
        if t in ('|', '||') or re.match(r'\d*[<>]', t): break
        out.append(t)
    return out

def _cli_argv(line): # the CLI's arguments of a command line, or None
    tokens = _own_words(shlex.split(line, comments=True) if line.count("'") % 2 == 0 else line.split())
    for i, t in enumerate(tokens):
        if t == 'markov-laplace': return _braces([PLACEHOLDERS.get(x, x) for x in tokens[i + 1:]])
        if t == '-m' and i + 1 < len(tokens) and tokens[i + 1] == 'markov_laplace': return _braces([PLACEHOLDERS.get(x, x) for x in tokens[i + 2:]])
    return None

def _commands():
    found = []
    for name, text in DOCS.items():
        for line in [l for b in _blocks(text) for l in _lines(b)] + _spans(text):
            line = PLACEHOLDERS.get(line, line)
            for k, v in PLACEHOLDERS.items(): line = line.replace(k, v) if k.startswith(('"', 'grids/')) else line
            argv = _cli_argv(line)
            if argv is not None and argv and not argv[0].startswith('$('): found.append((name, line, argv))
    return found

COMMANDS = _commands()


def test_the_docs_have_commands():
    assert {'README.md', 'GPU.md', 'runs/README.md'} <= {n for n, _, _ in COMMANDS} and len(COMMANDS) >= 15, COMMANDS


@pytest.mark.parametrize('doc,line,argv', COMMANDS, ids=[f'{n}:{l[:60]}' for n, l, _ in COMMANDS])
def test_every_command_in_the_docs_parses(doc, line, argv, monkeypatch, capsys):
    monkeypatch.setattr(cli, '_device', lambda s: s)  # a GPU command parses on a CPU machine
    try: a = cli._parser().parse_args(argv)
    except SystemExit: pytest.fail(f'{doc}: `{line}` does not parse: {capsys.readouterr().err.strip().splitlines()[-1]}')
    from markov_laplace.experiments.grids import find_grid
    for g in getattr(a, 'grids', None) or ([a.grid] if a.command == 'run' else []):
        if not g.endswith('.yaml') or g.startswith('grids/'): find_grid(g)  # a shipped grid (a user's file is made in its block)


def test_every_option_span_in_the_docs_parses(capsys):
    spans = [(n, s) for n, text in DOCS.items() for s in _spans(text) if s.startswith('--') and not s.startswith('--nbval')]
    assert len(spans) >= 10
    subs = next(a for a in cli._parser()._actions if a.dest == 'command').choices
    flags = {o for p in subs.values() for a in p._actions for o in a.option_strings}
    for doc, span in spans:
        argv = _braces([PLACEHOLDERS.get(x, x) for x in span.split()])
        if len(argv) == 1:  # a flag named in prose
            assert argv[0] in flags, f'{doc}: `{span}` is an option of no command'; continue
        ok = []
        for cmd, base in BASE.items():
            try: cli._parser().parse_args([cmd, *base, *argv]); ok.append(cmd)
            except SystemExit: pass
        capsys.readouterr()
        assert ok, f'{doc}: `{span}` is an option of no command'


def test_make_targets_and_tools_in_the_docs_exist():
    makefile = (ROOT / 'Makefile').read_text()
    for doc, text in DOCS.items():
        for target in re.findall(r'(?:^|`)make ([a-z][a-z-]*)', text, re.M):
            assert re.search(rf'^{target}:', makefile, re.M), f'{doc}: make {target} is not a target'
        for tool in re.findall(r'tools/[A-Za-z_]+\.(?:py|sh)', text):
            assert (ROOT / tool).is_file(), f'{doc}: {tool} does not exist'


RUNNABLE = [(name, b) for name in ('README.md', 'template') for b in _blocks(DOCS[name]) if not re.search(r'^make ', b, re.M)]

@pytest.mark.parametrize('doc,block', RUNNABLE, ids=[f'{n}:{b.splitlines()[0][:50]}' for n, b in RUNNABLE])
def test_the_shell_blocks_run_as_written(doc, block, tmp_path):
    script = '\n'.join(re.sub(r'\s+#.*$', '', l) + ' --shard 0/1000' if re.match(r'markov-laplace sweep ', l) else l for l in block.splitlines())
    assert script.count('--shard 0/1000') == block.count('markov-laplace sweep ')
    prelude = (f'set -euo pipefail\nmarkov-laplace() {{ {sys.executable} -m markov_laplace "$@"; }}\n'
               f'papermill() {{ {sys.executable} -m papermill --no-progress-bar "$@"; }}\n')
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'MARKOV_LAPLACE_RUNS': str(tmp_path / 'runs'), 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    out = subprocess.run(['bash', '-c', prelude + script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, f'{doc}:\n{block}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}'
    assert 'Traceback' not in out.stderr


def test_the_commands_the_makefile_and_the_gpu_script_run_parse(monkeypatch, capsys):
    "`make run`, `make bench`, `make bench-gpu` and `tools/gpu_sweep.sh start` (with GPU.md's grids) call the CLI with flags it takes."
    monkeypatch.setattr(cli, '_device', lambda s: s)
    make = (ROOT / 'Makefile').read_text().replace('\\\n', ' ')
    lines = [l.replace('$(BIN)/markov-laplace', 'markov-laplace') for l in make.splitlines() if 'markov-laplace ' in l or '-m markov_laplace' in l]
    sweep = next(l for l in (ROOT / 'tools' / 'gpu_sweep.sh').read_text().splitlines() if '-m markov_laplace sweep' in l)
    gpu_grids = re.search(r'gpu_sweep\.sh start (grids/\{[^}]+\}\.yaml)', DOCS['GPU.md']).group(1)
    sweep = sweep.split('>>')[0].replace('"$@"', gpu_grids).replace('"$REPO/runs"', 'runs').replace('${WORKERS:-2}', '2')
    argvs = [_cli_argv(l) for l in lines + [sweep]]
    assert len(argvs) == 4 and all(argvs)
    for argv in argvs:
        try: a = cli._parser().parse_args(argv)
        except SystemExit: pytest.fail(f'{argv} does not parse: {capsys.readouterr().err.strip().splitlines()[-1]}')
        from markov_laplace.experiments.grids import find_grid
        for g in getattr(a, 'grids', None) or []: find_grid(g)
