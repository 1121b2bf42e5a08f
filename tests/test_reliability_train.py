"""Reliability of training (issue 12, part C): configs refused by name before anything trains, checkpoints that
cannot run code, evaluation sets drawn on the CPU."""
import math
import os

import pytest
import torch
import yaml

from markov_laplace.training.loop import task_evaluators, train_batched
from markov_laplace.models.registry import build
from markov_laplace.storage import CorruptFileError, load_torch, save_torch
from markov_laplace.tasks.markov.task import TaskConfig, sample_task
from markov_laplace.tasks.protocol import Evaluator
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import train

TASK = TaskConfig(order=1, length=32)
SMALL = dict(d_model=4, d_state=4)


def _cfg(**kw):
    return TrainConfig(**{**dict(steps=6, batch=4, eval_every=3, eval_size=8, device='cpu'), **kw})


# --- configs --------------------------------------------------------------------------------------------------------

def test_yaml_string_lr_is_converted():
    params = yaml.safe_load('lr: 1e-3\nsteps: 10\nfinal_lr: 0.1\n')
    assert params['lr'] == '1e-3'  # what PyYAML does: the reason for the conversion
    cfg = TrainConfig.from_dict(params)
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float) and cfg.steps == 10
    assert TrainConfig.from_dict({'batch': '16'}).batch == 16
    assert TaskConfig.from_dict(yaml.safe_load('order: "2"\nbeta: 5e-1\n')) == TaskConfig(order=2, beta=0.5)


@pytest.mark.parametrize('params,message', [
    ({'lr': 'abc'}, r"`lr` must be a number \(as text it must read as one"),
    ({'steps': '1e3'}, r'`steps` must be an integer'),
    ({'steps': '12.0'}, r'`steps` must be an integer'),
    ({'learning_rate': 1e-3}, r'`TrainConfig keys` must be fields of TrainConfig \(steps, batch, lr'),
])
def test_text_that_is_not_the_fields_type_is_named(params, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(params)


BAD = [
    (dict(final_lr=-3), r'`final_lr` must be a number in \[0, 1\]'),
    (dict(final_lr=float('nan')), r'`final_lr` must be a number in \[0, 1\]'),
    (dict(clip=-1), r'`clip` must be a finite gradient norm > 0, or 0 for no clipping'),
    (dict(lr=float('inf')), r'`lr` must be a number > 0 and finite'),
    (dict(lr=float('nan')), r'`lr` must be a number > 0 and finite'),
    (dict(lr=0.0), r'`lr` must be a number > 0'),
    (dict(lr='1e-3'), r"`lr` must be a number > 0 and finite; got '1e-3'"),  # Python callers pass numbers
    (dict(device='gpu'), r"`device` must be 'auto' \| 'cpu' \| 'cuda' \| 'cuda:N'; got 'gpu'"),
    (dict(device='cuda:x'), r"`device` must be 'auto' \| 'cpu'"),
    (dict(steps=True), r'`steps` must be an integer >= 1; got True'),  # a bool is not an int
    (dict(steps=0), r'`steps` must be an integer >= 1'),
    (dict(batch=2.0), r'`batch` must be an integer >= 1'),
    (dict(eval_size=0), r'`eval_size` must be an integer >= 1'),
    (dict(eval_every=-5), r'`eval_every` must be an integer >= 1'),
    (dict(warmup=-0.1), r'`warmup` must be a fraction of the steps in \[0, 1\)'),
    (dict(weight_decay=-1e-3), r'`weight_decay` must be a finite number >= 0'),
    (dict(seed=-1), r'`seed` must be an integer in \[0, 2\*\*63\)'),
    (dict(eval_seed=1.5), r'`eval_seed` must be an integer in \[0, 2\*\*63\)'),
    (dict(schedule='linear'), r'`schedule` must be onecycle \| constant'),
]


@pytest.mark.parametrize('bad,message', BAD, ids=[str(b) for b, _ in BAD])
def test_bad_training_field_is_named_before_training(bad, message, tmp_path):
    calls, m = [], build('mamba', seed=0, **SMALL)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        train(m, TASK, _cfg(**bad), run_dir=tmp_path, progress=False, callback=lambda step, model: calls.append(step))
    assert calls == [] and list(tmp_path.iterdir()) == []  # not one step, nothing written
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_clip_zero_means_no_clipping():
    h = train(build('mamba', seed=0, **SMALL), TASK, _cfg(clip=0), progress=False)
    assert len(h) == 3 and h.train_loss.iloc[1:].map(math.isfinite).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is present: asking for it is fine here')
@pytest.mark.parametrize('device', ['cuda', 'cuda:0'])
def test_cuda_without_cuda_is_named_at_validation(device):
    with pytest.raises(ValueError, match=r"`device` must be 'auto' or 'cpu' on this machine \(CUDA is not available here\)"):
        TrainConfig(device=device).validate()
    with pytest.raises(ValueError, match='`device`'):
        TrainConfig.from_dict({'device': device})


def test_nan_loss_names_lr_and_step():
    def poison(step, model):
        if step == 4:
            with torch.no_grad(): model.read_out.weight.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match=r'loss is nan at step 4 \(lr .*smaller `lr` \(now 0.002\)'):
        train(build('mamba', **SMALL), TASK, _cfg(), progress=False, callback=poison)


def test_batched_nan_loss_names_lr():
    m = build('mamba', seed=0, **SMALL)
    with torch.no_grad(): m.read_out.weight.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match=r'runs \[0\] .*smaller `lr` \(now 0.002\)'):
        train_batched([m], TASK, _cfg(), [0], progress=False)


# --- checkpoints ----------------------------------------------------------------------------------------------------

class Payload:
    "What a hostile checkpoint carries: unpickling it calls os.mkdir(marker)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.mkdir, (self.marker,))


def _plain(x):  # tensors and plain Python values only, all the way down
    if isinstance(x, dict): return all(isinstance(k, (str, int)) and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)): return all(map(_plain, x))
    return x is None or isinstance(x, (torch.Tensor, bool, int, float, str))


def _payload_refused(ckpt, run, marker):
    "Write a payload checkpoint at `ckpt`, check that `run()` refuses it without running it, and that it would have run."
    save_torch(ckpt, {'model': Payload(marker), 'step': 3})
    with pytest.raises(CorruptFileError, match=ckpt.name) as e:
        run()
    assert str(ckpt) in str(e.value) and '--restart-broken' in str(e.value)
    assert not marker.exists(), 'the payload ran'
    torch.load(ckpt, weights_only=False)  # the test can fail: without weights_only the payload does run
    assert marker.exists()


def test_single_checkpoint_is_plain_and_reads_with_weights_only(tmp_path):
    class Stop(Exception): pass
    def stop(step, model):
        if step == 4: raise Stop
    with pytest.raises(Stop):
        train(build('mamba', seed=0, **SMALL), TASK, _cfg(), run_dir=tmp_path, progress=False, callback=stop)
    state = load_torch(tmp_path / 'ckpt.pt')
    assert _plain(state) and type(state['trainer']['n_steps']) is int and state['trainer']['n_steps'] == 3
    assert state['trainer']['gens'][0].dtype == torch.uint8 and isinstance(state['histories'][0], list)


def test_single_payload_checkpoint_is_refused_without_running(tmp_path):
    run = lambda: train(build('mamba', **SMALL), TASK, _cfg(), run_dir=tmp_path, progress=False)
    _payload_refused(tmp_path / 'ckpt.pt', run, tmp_path / 'payload-ran')


@pytest.mark.parametrize('content', [b'\x00\x01 garbage, not a checkpoint', b''])
def test_single_garbage_checkpoint_names_the_file(tmp_path, content):
    (tmp_path / 'ckpt.pt').write_bytes(content)
    with pytest.raises(CorruptFileError, match='ckpt.pt: not a checkpoint'):
        train(build('mamba', **SMALL), TASK, _cfg(), run_dir=tmp_path, progress=False)


def test_single_foreign_checkpoint_names_the_file(tmp_path):
    save_torch(tmp_path / 'ckpt.pt', {'not': 'a training state'})
    with pytest.raises(CorruptFileError, match=r'ckpt.pt: not a checkpoint of this run \(KeyError'):
        train(build('mamba', **SMALL), TASK, _cfg(), run_dir=tmp_path, progress=False)
    wide = build('mamba', seed=0)  # the default width: another model's weights
    params = {k: v[None] for k, v in wide.named_parameters()}
    save_torch(tmp_path / 'ckpt.pt', dict(trainer=dict(params=params, opt={}, gens=[torch.Generator().get_state()], n_steps=3, queue=[]),
                                          histories=[[]]))
    with pytest.raises(CorruptFileError, match=r'ckpt.pt: not a checkpoint of this run \(RuntimeError'):
        train(build('mamba', **SMALL), TASK, _cfg(), run_dir=tmp_path, progress=False)


def test_batched_checkpoint_is_plain_and_reads_with_weights_only(tmp_path):
    class Stop(Exception): pass
    def stop(step):
        if step == 4: raise Stop
    with pytest.raises(Stop):
        train_batched([build('mamba', seed=s, **SMALL) for s in (0, 1)], TASK, _cfg(), [0, 1], prefetch=2, progress=False,
                      ckpt=tmp_path / 'g.pt', callback=stop)
    state = load_torch(tmp_path / 'g.pt')
    assert _plain(state) and type(state['trainer']['n_steps']) is int and len(state['histories']) == 2
    assert all(g.dtype == torch.uint8 for g in state['trainer']['gens'])


def test_batched_payload_checkpoint_is_refused_without_running(tmp_path):
    run = lambda: train_batched([build('mamba', seed=0, **SMALL)], TASK, _cfg(), [0], progress=False, ckpt=tmp_path / 'g.pt')
    _payload_refused(tmp_path / 'g.pt', run, tmp_path / 'payload-ran')


def test_batched_garbage_checkpoint_names_the_file(tmp_path):
    (tmp_path / 'ckpt-group.pt').write_bytes(b'PK\x03\x04 not really a zip')
    with pytest.raises(CorruptFileError, match='ckpt-group.pt: not a checkpoint'):
        train_batched([build('mamba', seed=0, **SMALL)], TASK, _cfg(), [0], progress=False, ckpt=tmp_path / 'ckpt-group.pt')


def test_batched_checkpoint_of_another_group_names_the_file(tmp_path):
    ck = tmp_path / 'g.pt'
    train_batched([build('mamba', seed=s, **SMALL) for s in (0, 1)], TASK, _cfg(), [0, 1], progress=False, ckpt=ck)
    with pytest.raises(CorruptFileError, match=r'g.pt: not a checkpoint of this run \(ValueError: histories of 2 runs, not 1'):
        train_batched([build('mamba', seed=0, **SMALL)], TASK, _cfg(), [0], progress=False, ckpt=ck)


# --- evaluation sets ------------------------------------------------------------------------------------------------

def test_evaluation_set_is_drawn_on_the_cpu_from_eval_seed():
    ev = Evaluator(TASK, 8, seed=7, device='cpu')
    want = sample_task(TASK, 8, generator=torch.Generator().manual_seed(7), split='eval')
    assert torch.equal(ev.batches[0].tokens, want.tokens) and torch.equal(ev.batches[0].laplace, want.laplace)
    evs = task_evaluators([TASK, TaskConfig(order=2, length=32)], _cfg(eval_seed=7), 'cpu')
    assert torch.equal(evs[0].batches[0].tokens, want.tokens)
    other = sample_task(TaskConfig(order=2, length=32), 8, generator=torch.Generator().manual_seed(7), split='eval')
    assert torch.equal(evs[1].batches[0].tokens, other.tokens)


@pytest.mark.gpu
def test_evaluation_set_is_the_same_on_cuda():
    cpu, gpu = Evaluator(TASK, 8, seed=7, device='cpu'), Evaluator(TASK, 8, seed=7, device='cuda')
    assert gpu.batches[0].tokens.is_cuda and torch.equal(cpu.batches[0].tokens, gpu.batches[0].tokens.cpu())
    cpu_b, gpu_b = task_evaluators([TASK], _cfg(eval_seed=7), 'cpu'), task_evaluators([TASK], _cfg(eval_seed=7, device='cuda'), 'cuda')
    assert torch.equal(cpu_b[0].batches[0].tokens, gpu_b[0].batches[0].tokens.cpu())
