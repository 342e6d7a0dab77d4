"""torch.compile: the backbones trace into one graph each (no graph breaks), in training
and in eval mode, and the tools' --compile flags run."""
import re

import pytest
import torch

from acmix_mm.backbones import AttNet, PVTACmix, ResNetACmix, SANACmix, SwinACmix

from conftest import run_tool

# A small member of each family.
BACKBONES = {
    'PVTACmix': lambda: PVTACmix('tiny'),
    'SwinACmix': lambda: SwinACmix(dict(embed_dims=32, depths=[2, 2, 2, 2],
                                        num_heads=[2, 4, 4, 8])),
    'ResNetACmix': lambda: ResNetACmix(26),
    'SANACmix': lambda: SANACmix(10),
    'AttNet': lambda: AttNet('xxs'),
}


@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_backbone_has_no_graph_break(name, mode):
    torch.manual_seed(0)
    model = BACKBONES[name]()
    getattr(model, mode)()
    torch._dynamo.reset()
    # SAN's 7x7 patches are reflection-padded: its last maps need 4 pixels or more.
    explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 128, 160))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_train_compile_flag_sets_mmengines_compile():
    from conftest import ROOT, load_script
    train = load_script('tools/train.py')
    cfg = train.build_cfg(train.parse_args(
        [f'{ROOT}/configs/demo/retinanet_pvt_acmix_t_demo.py', '--compile']))
    assert cfg.compile is True


def test_test_compile_flag_evaluates(tiny_demo_data, tmp_path):
    """tools/test.py --compile runs the backbone through torch.compile (the eager
    backend here, to keep the test short: the same graph capture without inductor's
    code generation)."""
    coco = f'{tiny_demo_data}/coco/'
    config = 'configs/demo/retinanet_pvt_acmix_t_demo.py'
    from test_export_onnx import random_checkpoint
    checkpoint = random_checkpoint(config, tmp_path / 'model.pth')
    proc = run_tool('tools/test.py', config, checkpoint, '--compile', '--work-dir',
                    str(tmp_path), '--cfg-options', f'test_dataloader.dataset.data_root={coco}',
                    f'test_evaluator.ann_file={coco}annotations/instances_val2017.json',
                    'model.test_cfg.score_thr=0.0', 'compile.backend=eager')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(r'coco/bbox_mAP: [0-9.]+', log)
    assert 'compiled the backbone forward (torch.compile, backend eager)' in log
