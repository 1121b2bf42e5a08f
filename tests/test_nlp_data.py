"""Issue 24, the tasks as data: the copied word-pair files are the ones the README names, every task loads
without repeated inputs or empty outputs, the single-token filter keeps only one-token answers of a real
tokenizer, and the files ship with the installed package."""
import collections
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from markov_laplace.tasks.nlp.data import NLP_TASKS, answer_tokens, data_path, read_pairs, single_token_pairs, task_pairs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / 'markov_laplace' / 'tasks' / 'nlp' / 'data'
FILES = sorted(f for _, f, _ in NLP_TASKS.values() if f)


def test_the_readme_names_every_file_with_its_checksum():
    readme = (DATA / 'README.md').read_text()
    assert 'roeehendel/icl_task_vectors' in readme and re.search(r'`[0-9a-f]{40}`', readme)
    rows = dict(re.findall(r'\| `([a-z_]+\.json)` \| `data/[a-z]+/[a-z_]+\.json` \| `([0-9a-f]{64})` \|', readme))
    assert sorted(rows) == sorted(p.name for p in DATA.glob('*.json')) == sorted(f'{f}.json' for f in FILES)
    for name, sha in rows.items(): assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == sha, name


@pytest.mark.parametrize('task', list(NLP_TASKS))
def test_every_task_has_distinct_inputs_and_non_empty_outputs(task):
    group, file, description = NLP_TASKS[task]
    pairs = task_pairs(task)
    assert len(pairs) >= 25 and description
    assert all(isinstance(k, str) and isinstance(v, str) and k.strip() and v.strip() for k, v in pairs.items())
    assert len({k.strip() for k in pairs}) == len(pairs)  # distinct inputs, also after stripping
    if file:  # the file holds no input twice with two outputs, but for the six antonyms the README names
        raw = json.loads(data_path(file).read_text(encoding='utf-8'), object_pairs_hook=list)
        outs = collections.defaultdict(set)
        for k, v in raw: outs[k].add(v)
        ambiguous = sorted(k for k, vs in outs.items() if len(vs) > 1)
        assert ambiguous == read_pairs(file)[1] == (sorted(['full', 'safe', 'fresh', 'known', 'past', 'give']) if file == 'antonyms' else [])
        assert set(pairs) == set(outs) - set(ambiguous)


def test_the_algorithmic_pairs_are_what_they_say():
    assert all(v == k.split(',')[0] for k, v in task_pairs('list_first').items())
    assert all(v == k.split(',')[-1] for k, v in task_pairs('list_last').items())
    assert all(ord(v) - ord(k) == 1 for k, v in task_pairs('next_letter').items())
    assert all(ord(k) - ord(v) == 1 for k, v in task_pairs('prev_letter').items())
    assert all(v == k.upper() != k for k, v in task_pairs('to_upper').items())
    assert all(v == k.lower() != k for k, v in task_pairs('to_lower').items())


def test_the_filter_keeps_exactly_the_one_token_answers_of_a_real_tokenizer():
    pytest.importorskip('transformers'); pytest.importorskip('tokenizers')
    from markov_laplace.tasks.nlp.tiny import task_lines, train_tokenizer
    tok = train_tokenizer(task_lines())
    for task in NLP_TASKS:
        pairs = task_pairs(task)
        kept = single_token_pairs(pairs, tok)
        assert len(kept) >= 6, task
        spaced = all(k.startswith(' ') and v.startswith(' ') for k, v in kept.items())
        base = {f' {k}': f' {v}' for k, v in pairs.items()} if spaced else pairs
        for k, v in base.items():  # every pair of the chosen form: kept iff its answer is one token after '->'
            ids = tok('example:' + k + '->' + v, add_special_tokens=False)['input_ids']
            one = answer_tokens(tok, v) == 1
            assert (k in kept) == one, (task, k, v)
            if one: assert tok.decode(ids[-1:]) == v and kept[k] == v


def test_the_data_ships_with_the_installed_package(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--no-index', str(ROOT),
                          '--target', str(tmp_path / 'site')], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = tmp_path / 'site' / 'markov_laplace' / 'tasks' / 'nlp' / 'data'
    assert sorted(p.name for p in data.glob('*.json')) == sorted(f'{f}.json' for f in FILES) and (data / 'README.md').is_file()
    probe = 'from markov_laplace.tasks.nlp.data import data_path, task_pairs; print(data_path("antonyms")); print(task_pairs("fr_en")["être"])'
    empty = tmp_path / 'empty'; empty.mkdir()
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=empty, env={'PYTHONPATH': str(tmp_path / 'site'), 'PATH': '/usr/bin:/bin'})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(data / 'antonyms.json'), 'be']


def test_the_harness_imports_without_transformers():
    "transformers and tokenizers are imported inside functions only: without the nlp extra, every module and the CLI's help still load."
    code = ('import sys, importlib\nfor m in ("transformers", "tokenizers"): sys.modules[m] = None\n'
            'for m in ("data", "prompts", "tiny", "evaluate"): importlib.import_module("markov_laplace.tasks.nlp." + m)\n'
            'from markov_laplace.cli import _parser; _parser().parse_args(["nlp-icl", "--model", "x"])\n'
            'from markov_laplace.tasks.nlp.tiny import train_tokenizer\n'
            'try: train_tokenizer(["a"])\nexcept ImportError: print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]
