"""tools/export_onnx.py: the exported graph is checked and equals PyTorch's outputs
through ONNX Runtime on a real image (static, dynamic and fused forms)."""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT, run_tool


def random_checkpoint(config, path):
    """The config's whole model, initialised as for training, saved as a checkpoint."""
    from mmengine.registry import MODELS, DefaultScope

    from acmix_mm.runner_utils import init_scope
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_scope(cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


@pytest.mark.parametrize('config,options,flags', [
    ('configs/demo/retinanet_pvt_acmix_t_demo.py', 'coco', ['--dynamic']),
    ('configs/demo/sem_fpn_pvt_acmix_t_demo.py', 'ade', ['--deploy']),
])
def test_export_checks_parity_on_a_real_image(config, options, flags, tiny_demo_data,
                                              tmp_path):
    checkpoint = random_checkpoint(config, tmp_path / 'model.pth')
    if options == 'coco':
        root = osp.join(tiny_demo_data, 'coco') + '/'
        ann = root + 'annotations/instances_val2017.json'
        cfg_options = [f'test_dataloader.dataset.data_root={root}',
                       f'test_evaluator.ann_file={ann}']
    else:
        root = osp.join(tiny_demo_data, 'ade', 'ADEChallengeData2016')
        cfg_options = [f'test_dataloader.dataset.data_root={root}']
    out = tmp_path / 'model.onnx'
    proc = run_tool('tools/export_onnx.py', config, checkpoint, '--out', str(out),
                    '--shape', '256', '256', *flags, '--cfg-options', *cfg_options)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    differences = [float(d) for d in re.findall(r'largest relative difference ([0-9.e+-]+)',
                                                log)]
    assert len(differences) == (2 if '--dynamic' in flags else 1), log[-2000:]
    assert all(d < 1e-4 for d in differences)
    assert 'a drawn image' not in log  # the test set's first image
    if '--deploy' in flags:
        assert re.search(r'fused the convolution path of \d+ ACmix layers', log)
    assert out.is_file()


def test_unsupported_models_and_sizes_are_clear(tmp_path):
    proc = run_tool('tools/export_onnx.py', 'configs/mask_rcnn_swin_acmix_t_3x.py',
                    str(tmp_path / 'x.pth'), '--out', str(tmp_path / 'x.onnx'))
    assert proc.returncode == 1 and 'MaskRCNN is not supported' in proc.stderr
    assert 'Traceback' not in proc.stderr
    proc = run_tool('tools/export_onnx.py', 'configs/retinanet_pvt_acmix_t_1x.py',
                    str(tmp_path / 'x.pth'), '--out', str(tmp_path / 'x.onnx'),
                    '--shape', '300', '300')
    assert proc.returncode == 1 and 'multiples of 32' in proc.stderr
