"""Issue 24, the evaluation harness on models we make here: tiny random Mamba, RWKV and GPT-NeoX models of
`transformers` with a tokenizer trained on the task data, saved to a folder and loaded back by path (the path a
hub id takes). The prompt format, the seeded draw of demonstrations apart from the query, the scoring, a model
that knows every answer (accuracy 1) and one that writes a constant token (accuracy = its answer's share)."""
import collections
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

pytest.importorskip('transformers'); pytest.importorskip('tokenizers')  # a guard only: make test installs the nlp extra

from markov_laplace.tasks.nlp.data import NLP_TASKS, single_token_pairs, task_pairs
from markov_laplace.tasks.nlp.evaluate import COLUMNS, evaluate_lm, load_lm, next_tokens, nlp_icl, respects_padding, score_task
from markov_laplace.tasks.nlp.prompts import format_prompt, is_correct, sample_prompts
from markov_laplace.tasks.nlp.tiny import save_tiny, task_lines, train_tokenizer

KINDS = ('mamba', 'rwkv', 'gpt_neox')


@pytest.fixture(scope='module')
def tok():
    return train_tokenizer(task_lines())


@pytest.fixture(scope='module')
def folders(tok, tmp_path_factory):
    return {k: save_tiny(k, tmp_path_factory.mktemp(k), tokenizer=tok) for k in KINDS}


class Oracle(torch.nn.Module):
    "Knows every answer: reads the query line off the unpadded prompt and writes its answer's first token."
    def __init__(self, tok, pairs):
        super().__init__(); self.tok, self.pairs, self.w = tok, pairs, torch.nn.Parameter(torch.zeros(1))
    def forward(self, input_ids, attention_mask):
        out = torch.zeros(len(input_ids), 1, len(self.tok))
        for i, (ids, m) in enumerate(zip(input_ids, attention_mask)):
            line = self.tok.decode(ids[m.bool()]).split('\n')[-1]
            answer = self.pairs.get(line.removeprefix('example:').removesuffix('->'))
            out[i, 0, self.tok(answer, add_special_tokens=False)['input_ids'][0] if answer else 0] = 1.0
        return type('Out', (), dict(logits=out))


class Constant(torch.nn.Module):
    "Writes one token whatever it reads."
    def __init__(self, vocab, token):
        super().__init__(); self.V, self.t, self.w = vocab, token, torch.nn.Parameter(torch.zeros(1))
    def forward(self, input_ids, attention_mask):
        out = torch.zeros(len(input_ids), 1, self.V); out[:, 0, self.t] = 1.0
        return type('Out', (), dict(logits=out))


def test_the_prompt_format_is_the_papers():
    demos = [('France', 'Paris'), ('Italy', 'Rome')]
    assert format_prompt(demos, 'Spain') == 'example:France->Paris\nexample:Italy->Rome\nexample:Spain->'
    p = sample_prompts({'a': 'A', 'b': 'B', 'c': 'C'}, 2, 1, torch.Generator().manual_seed(0))[0]
    lines = p.text.split('\n')
    assert len(lines) == 3 and all(re.fullmatch(r'example:[a-c]->[A-C]', l) for l in lines[:2]) and lines[2] == f'example:{p.query}->'
    assert sample_prompts({'a': 'A', 'b': 'B'}, 0, 1, torch.Generator().manual_seed(0))[0].text in ('example:a->', 'example:b->')


@pytest.mark.parametrize('task', ['to_upper', 'antonyms', 'location_continent'])
def test_demonstrations_are_seeded_and_never_the_query(task):
    pairs = task_pairs(task)
    a = sample_prompts(pairs, 5, 300, torch.Generator().manual_seed(7))
    assert a == sample_prompts(pairs, 5, 300, torch.Generator().manual_seed(7)) != sample_prompts(pairs, 5, 300, torch.Generator().manual_seed(8))
    for p in a:
        inputs = [x for x, _ in p.demos]
        assert p.query not in inputs and len(set(inputs)) == 5 and p.answer == pairs[p.query]
        assert f'example:{p.query}->' not in p.text[:-len(f'example:{p.query}->')]  # the query's line appears only at the end
    assert len({p.query for p in a}) > 1


def test_scoring_strips_spaces_and_nothing_else():
    assert is_correct(' Paris', 'Paris') and is_correct('Paris ', ' Paris')
    assert not is_correct('paris', 'Paris') and not is_correct('Pari', 'Paris') and not is_correct(' ', 'Paris')


@pytest.mark.parametrize('kind', KINDS)
def test_a_tiny_model_loads_by_path_and_batches_like_single_prompts(kind, folders, tok):
    lm, tk = load_lm(folders[kind], device='cpu')
    assert type(lm).__name__ == {'mamba': 'MambaForCausalLM', 'rwkv': 'RwkvForCausalLM', 'gpt_neox': 'GPTNeoXForCausalLM'}[kind]
    assert tk.padding_side == 'left' and tk('example: Spain->')['input_ids'] == tok('example: Spain->')['input_ids']
    assert respects_padding(lm, tk) == (kind != 'rwkv')  # transformers' RWKV ignores the attention mask
    texts = [p.text for p in sample_prompts(single_token_pairs(task_pairs('en_fr'), tk), 3, 10, torch.Generator().manual_seed(0))]
    texts += ['example:a->', 'example:France->Paris\nexample:Spain->']
    assert next_tokens(lm, tk, texts, batch_size=5) == [next_tokens(lm, tk, [t])[0] for t in texts]


@pytest.mark.parametrize('task', ['location_continent', 'list_first', 'es_en'])
def test_a_model_that_knows_the_answers_scores_one(task, folders):
    lm, tk = load_lm(folders['gpt_neox'], device='cpu')
    pairs = single_token_pairs(task_pairs(task), tk)
    for k in (0, 5):
        c, _ = score_task(Oracle(tk, pairs), tk, pairs, k, 50, torch.Generator().manual_seed(k), batch_size=8)
        assert c.all() and len(c) == 50


def test_a_constant_model_scores_the_share_of_its_answer(folders):
    lm, tk = load_lm(folders['gpt_neox'], device='cpu')
    pairs = single_token_pairs(task_pairs('location_religion'), tk)
    top, count = collections.Counter(pairs.values()).most_common(1)[0]
    share, n = count / len(pairs), 400
    token = tk(top, add_special_tokens=False)['input_ids']
    assert len(token) == 1
    c, ps = score_task(Constant(len(tk), token[0]), tk, pairs, 5, n, torch.Generator().manual_seed(0))
    assert c.tolist() == [p.answer == top for p in ps]  # right exactly on the queries whose answer is its token
    assert abs(c.float().mean().item() - share) < 4 * (share * (1 - share) / n) ** 0.5  # the chance level, within 4 standard errors
    other = next(i for i in range(len(tk)) if tk.decode([i]).strip() not in {v.strip() for v in pairs.values()})
    assert not score_task(Constant(len(tk), other), tk, pairs, 5, 50, torch.Generator().manual_seed(0))[0].any()


@pytest.mark.parametrize('kind', KINDS)
def test_the_harness_runs_end_to_end_on_every_class(kind, folders, tmp_path):
    out = tmp_path / 'table.csv'
    tasks = ['list_first', 'person_language', 'en_es']
    tab = nlp_icl(folders[kind], out, device='cpu', tasks=tasks, shots=(0, 2), prompts=6, zero_shot_prompts=4, n_boot=200)
    assert list(tab.columns) == ['model'] + COLUMNS and len(tab) == 2 * len(tasks) + 2
    pd.testing.assert_frame_equal(pd.read_csv(out), tab)
    assert tab.accuracy.between(0, 1).all() and (tab.lo <= tab.accuracy + 1e-12).all() and (tab.accuracy <= tab.hi + 1e-12).all()
    again = nlp_icl(folders[kind], None, device='cpu', tasks=tasks, shots=(0, 2), prompts=6, zero_shot_prompts=4, n_boot=200)
    pd.testing.assert_frame_equal(again, tab)  # seeded: the same table


def test_the_cli_writes_the_table_and_rejects_bad_input(folders, tmp_path):
    out = tmp_path / 'cli.csv'
    cmd = [sys.executable, '-m', 'markov_laplace', 'nlp-icl', '--model', str(folders['mamba']), '--shots', '0', '1',
           '--prompts', '4', '--zero-shot-prompts', '3', '--tasks', 'to_lower', 'fr_en', '--device', 'cpu', '--out', str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    tab = pd.read_csv(out)
    assert tab.task.tolist() == ['to_lower', 'fr_en', 'to_lower', 'fr_en', 'mean', 'mean'] and tab.prompts.tolist()[:4] == [3, 3, 4, 4]
    assert 'mean' in res.stdout
    bad = subprocess.run(cmd[:-2] + ['--tasks', 'capitals', '--out', str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and 'capitals' in bad.stderr.strip().splitlines()[-1]
