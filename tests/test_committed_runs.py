"""Committed runs must not change: every model shape under `runs/` still loads with
`figures.load_model` and gives the same log-probabilities as when `tests/data/reference_logprobs.json`
was written. Refactors of the model code (moving layers between modules, renaming internals) must
keep the state-dict names and the numbers; this test is the proof.

Regenerate the reference (only when a change of numbers is intended, and say why in the commit):

    PYTHONPATH=. python tests/test_committed_runs.py
"""
import json
import subprocess
from pathlib import Path

import pytest
import torch

from markov_laplace.experiments.store import load_model

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / 'tests' / 'data' / 'reference_logprobs.json'
BATCH, LENGTH, N_SAMPLED = 2, 64, 10  # the fixed token batch: 2 sequences of 64 tokens
TOKEN_SEED, SAMPLE_SEED = 0, 1  # seeds of the token batch and of the sampled entries


def committed_weights(root=ROOT):
    "The model.pt files git tracks under runs/ (not the ignored weights a checkout may hold: runs/icl, runs/local)."
    out = subprocess.run(['git', 'ls-files', '-z', '--', 'runs'], cwd=root, capture_output=True, text=True, check=True).stdout
    return {root / p for p in out.split('\0') if p.endswith('/model.pt')}


def representative_runs(root=ROOT):
    "The first run directory (sorted) of each distinct model config among the committed runs with weights."
    firsts, weights = {}, committed_weights(root)
    for cfg in sorted((root / 'runs').glob('**/config.json')):
        d = cfg.parent
        if d / 'model.pt' not in weights: continue
        model = json.loads(cfg.read_text()).get('model')
        if model is None: continue
        firsts.setdefault(json.dumps(model, sort_keys=True), d)
    return sorted(firsts.values())


def summary(run_dir):
    "Summary numbers of a run's `log_probs` on the fixed batch: sum, sum of squares and sampled entries (float64)."
    m = load_model(run_dir)
    vocab = m.config.vocab
    tokens = torch.randint(vocab, (BATCH, LENGTH), generator=torch.Generator().manual_seed(TOKEN_SEED))
    with torch.no_grad(): lp = m.log_probs(tokens).double()  # (BATCH, LENGTH, vocab)
    idx = torch.randint(lp.numel(), (N_SAMPLED,), generator=torch.Generator().manual_seed(SAMPLE_SEED))
    return dict(vocab=vocab, shape=list(lp.shape), sum=lp.sum().item(), sum_sq=lp.pow(2).sum().item(),
                index=idx.tolist(), sampled=lp.flatten()[idx].tolist())


def generate(path=REFERENCE):
    "Write the reference file: one entry per representative run, keyed by its path relative to the repository."
    ref = {str(d.relative_to(ROOT)): summary(d) for d in representative_runs()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref, indent=1) + '\n')
    return ref


def _reference():
    return json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}


def test_reference_covers_every_shape():
    "Each model family and switch the committed runs use is in the reference."
    ref = _reference()
    assert len(ref) >= 20, 'tests/data/reference_logprobs.json is missing or nearly empty'
    configs = [json.loads((ROOT / r / 'config.json').read_text())['model'] for r in ref]
    assert {c['family'] for c in configs} >= {'mamba', 'transformer'}
    assert any(c.get('conv') is False for c in configs)  # mamba-noconv
    assert any(c.get('conv_act') == 'none' for c in configs)  # mambazero
    assert any(c.get('conv_qkv') for c in configs)  # transformer-conv
    assert {c['n_layers'] for c in configs if c['family'] == 'transformer'} >= {1, 2, 3, 4}
    assert {c['vocab'] for c in configs} >= {2, 3, 4}  # switching (3) and S > 2
    # and it is every shape committed now: a newly committed shape must join it (regenerate, above)
    assert set(ref) == {str(d.relative_to(ROOT)) for d in representative_runs()}


@pytest.mark.parametrize('run', sorted(_reference()))
def test_committed_run_gives_the_same_numbers(run):
    want, got = _reference()[run], summary(ROOT / run)
    assert got['shape'] == want['shape'] and got['index'] == want['index']
    for key in ('sum', 'sum_sq'):
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-6), key
    assert got['sampled'] == pytest.approx(want['sampled'], rel=1e-6, abs=1e-6)


if __name__ == '__main__':
    print(f'{len(generate())} runs written to {REFERENCE.relative_to(ROOT)}')
