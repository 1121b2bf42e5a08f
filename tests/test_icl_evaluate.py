"""tools/icl_evaluate.py on a tiny trained run: every CSV written next to the run, with the columns the figure notebooks
read, the same numbers as the functions on the model in memory (the weights go through model.pt), and a second call
that keeps what is done."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from markov_laplace.analysis.icl_evaluate import OOD_COLUMNS, PROBE_COLUMNS, CROSS_COLUMNS, icl_runs, ood_curves, probe_table
from markov_laplace.experiments.config import RunConfig, build_model, record
from markov_laplace.storage import save_torch, write_json
from markov_laplace.tasks.regression.curves import PAIRED_COLUMNS
from markov_laplace.tasks.regression.functions import ICLTaskConfig
from markov_laplace.training.config import TrainConfig
from markov_laplace.training.loop import train

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'icl_evaluate.py'
spec = importlib.util.spec_from_file_location('icl_evaluate_tool', TOOL)
tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)


def _run(root, name, task, preset):
    cfg = ICLTaskConfig(task=task, d=3, d_cur=3, n_points=9)
    rc = RunConfig(task=cfg, train=TrainConfig(steps=20, batch=16, lr=3e-3, eval_every=20, eval_size=32, device='cpu', seed=1))
    rc.model.preset = preset
    model = build_model(rc.validate())
    train(model, cfg, rc.train, progress=False)
    out = Path(root) / 'cpu_test' / name
    out.mkdir(parents=True)
    write_json(out / 'config.json', record(rc, model))
    write_json(out / 'summary.json', dict(loss=0.0, steps=rc.train.steps))
    save_torch(out / 'model.pt', model.state_dict())
    return model.eval(), cfg, out


def test_icl_evaluate_tool_writes_every_csv(tmp_path, capsys):
    lin, cfg, lin_dir = _run(tmp_path, 'linear_tf', 'linear', 'icl-transformer-tiny')
    _, _, relu_dir = _run(tmp_path, 'relu_s4', 'relu_net', 'icl-s4d-tiny')
    runs = icl_runs(tmp_path)
    assert sorted(runs.run) == ['linear_tf', 'relu_s4'] and runs.weights.all() and set(runs.steps) == {20}
    assert tool.main([str(tmp_path), '--prompts', '16', '--probe-prompts', '8', '--device', 'cpu']) == 0
    assert sorted(p.name for p in lin_dir.glob('*.csv')) == ['cross.csv', 'excess.csv', 'ood.csv', 'probe.csv']
    assert sorted(p.name for p in relu_dir.glob('*.csv')) == ['cross.csv', 'probe.csv']
    for f, cols in (('ood', OOD_COLUMNS), ('probe', PROBE_COLUMNS), ('cross', CROSS_COLUMNS), ('excess', PAIRED_COLUMNS)):
        assert list(pd.read_csv(lin_dir / f'{f}.csv').columns) == cols
    assert pd.read_csv(relu_dir / 'cross.csv').task.unique().tolist() == ['linear']
    # the weights went through model.pt: the tool's numbers are those of the model in memory, on the same prompts
    ood = pd.read_csv(lin_dir / 'ood.csv')
    mem = ood_curves(lin, 'icl-transformer-tiny', cfg, n_prompts=16, seed=0)
    pd.testing.assert_series_equal(ood.error, mem.error, check_exact=False, rtol=1e-5, atol=1e-7)
    probe = pd.read_csv(lin_dir / 'probe.csv')
    assert sorted(probe.method.unique()) == ['gd', 'icl-transformer-tiny', 'preconditioned_gd']
    assert sorted(probe[probe.method == 'icl-transformer-tiny'].layer) == [0, 1, 2, 3]  # 3 layers: h_0..h_3
    pd.testing.assert_frame_equal(probe, probe_table(lin, 'icl-transformer-tiny', cfg, n_prompts=8), check_exact=False, rtol=1e-5, atol=1e-7)
    capsys.readouterr()
    assert tool.main([str(tmp_path), '--prompts', '16', '--device', 'cpu']) == 0  # everything newer than model.pt: kept
    assert capsys.readouterr().out.count('done before') == 2


def test_icl_evaluate_tool_refuses_a_missing_root(tmp_path):
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'nowhere')])


@pytest.mark.gpu
def test_evaluations_on_cuda_match_the_cpu():
    "The model on the GPU, the prompts drawn on the CPU: the same curves and probes within tf32 tolerance."
    from markov_laplace.models.registry import build
    from markov_laplace.tasks.regression.task import REGRESSION
    cfg = ICLTaskConfig(task='linear', d=3, d_cur=3, n_points=9)
    for preset in ('icl-transformer-tiny', 'icl-mamba1-tiny', 'icl-s4d-tiny'):
        m = build(preset, REGRESSION.model_io(cfg), seed=0).eval()
        cpu_probe, cpu_ood = probe_table(m, preset, cfg, n_prompts=32, gd_steps=0), ood_curves(m, preset, cfg, 32, settings=[('skewed', None)])
        m.cuda()
        gpu_probe, gpu_ood = probe_table(m, preset, cfg, n_prompts=32, gd_steps=0), ood_curves(m, preset, cfg, 32, settings=[('skewed', None)])
        pd.testing.assert_frame_equal(cpu_probe, gpu_probe, check_exact=False, rtol=3e-3, atol=1e-5)
        pd.testing.assert_frame_equal(cpu_ood, gpu_ood, check_exact=False, rtol=3e-3, atol=1e-5)


def test_the_committed_cpu_runs_carry_their_evaluations():
    "Every committed cpu-scale run of icl_main has the evaluations that apply to its task (tools/icl_evaluate.py), each with rows."
    import pandas as pd
    from pathlib import Path
    runs = sorted((Path(__file__).resolve().parents[1] / 'runs/icl/cpu/icl_main').glob('*/summary.json'))
    assert len(runs) == 15
    want = {'linear': {'ood', 'cross', 'excess', 'probe'}, 'skewed_linear': {'excess', 'probe'}, 'sparse_linear': {'excess', 'probe'},
            'relu_net': {'cross', 'probe'}, 'decision_tree': {'probe'}}
    for s in runs:
        task = s.parent.name.split('task=')[1].split('_preset=')[0]
        for name in want[task]: assert len(pd.read_csv(s.parent / f'{name}.csv')) > 0, (s.parent.name, name)
