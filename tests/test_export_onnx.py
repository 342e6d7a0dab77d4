"""tools/export_onnx.py: the exported graph is checked and equals PyTorch's outputs
through ONNX Runtime on a real image (static, dynamic and fused forms)."""
import os
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


DET_DEMO = 'configs/demo/retinanet_pvt_acmix_t_demo.py'
SEG_DEMO = 'configs/demo/sem_fpn_pvt_acmix_t_demo.py'


def data_options(config, data_root):
    if config == DET_DEMO:
        root = osp.join(data_root, 'coco') + '/'
        ann = root + 'annotations/instances_val2017.json'
        # every score kept, so that the comparison below sees every box
        return [f'test_dataloader.dataset.data_root={root}',
                f'test_evaluator.ann_file={ann}', 'model.test_cfg.score_thr=0.0']
    root = osp.join(data_root, 'ade', 'ADEChallengeData2016')
    return [f'test_dataloader.dataset.data_root={root}']


@pytest.fixture(scope='module', params=[(DET_DEMO, ['--dynamic']),
                                        (SEG_DEMO, ['--deploy', '--dynamic'])],
                ids=['retinanet', 'sem_fpn-fused'])
def exported(request, tiny_demo_data, tmp_path_factory):
    """A checkpoint of the config's model (as initialised for training), exported."""
    config, flags = request.param
    tmp_path = tmp_path_factory.mktemp('onnx')
    checkpoint = random_checkpoint(config, tmp_path / 'model.pth')
    out = tmp_path / 'model.onnx'
    proc = run_tool('tools/export_onnx.py', config, checkpoint, '--out', str(out),
                    '--shape', '256', '256', *flags, '--cfg-options',
                    *data_options(config, tiny_demo_data))
    return config, flags, checkpoint, str(out), proc


def test_export_checks_parity_on_a_real_image(exported):
    config, flags, _, out, proc = exported
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    differences = [float(d) for d in re.findall(r'largest relative difference ([0-9.e+-]+)',
                                                log)]
    assert len(differences) == (2 if '--dynamic' in flags else 1), log[-2000:]
    assert all(d < 1e-4 for d in differences)
    assert 'a drawn image' not in log  # the test set's first image
    if '--deploy' in flags:
        assert re.search(r'fused the convolution path of \d+ ACmix layers', log)
    assert osp.isfile(out)


def metrics(log):
    """The metrics tools/test.py prints, by name."""
    line = [ln for ln in log.splitlines() if '(test)' in ln][-1]
    return {k: float(v) for k, v in re.findall(r'(\S+): (-?[0-9.]+)', line.split(']', 1)[1])
            if not k.endswith('time')}


def test_test_tool_evaluates_the_onnx_file_as_the_checkpoint(exported, tiny_demo_data,
                                                              tmp_path):
    """Through ONNX Runtime, with the config's pipeline, post-processing and evaluator:
    the same predictions and the same metrics as the checkpoint in PyTorch."""
    config, _, checkpoint, onnx_file, proc = exported
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = {}
    for name, model in (('torch', checkpoint), ('onnx', onnx_file)):
        out = str(tmp_path / (f'{name}.pkl' if config == DET_DEMO else name))
        proc = run_tool('tools/test.py', config, model, '--work-dir', str(tmp_path),
                        '--out', out, '--cfg-options', *data_options(config, tiny_demo_data))
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-3000:]
        results[name] = (metrics(log), out)
    (torch_metrics, torch_out), (onnx_metrics, onnx_out) = results['torch'], results['onnx']
    assert torch_metrics.keys() == onnx_metrics.keys() and torch_metrics
    tolerance = 0.01 if config == DET_DEMO else 1.0  # mAP; mIoU in percent
    for key, value in torch_metrics.items():
        assert abs(onnx_metrics[key] - value) <= tolerance, (key, value, onnx_metrics[key])
    if config == DET_DEMO:
        import pickle
        with open(torch_out, 'rb') as f_torch, open(onnx_out, 'rb') as f_onnx:
            for ours, theirs in zip(pickle.load(f_torch), pickle.load(f_onnx)):
                a, b = ours['pred_instances'], theirs['pred_instances']
                assert len(a['scores']) == len(b['scores']) > 0
                torch.testing.assert_close(b['scores'], a['scores'], rtol=1e-3, atol=1e-4)
                # Near-equal scores may swap places: each box has its twin (same
                # label, score and corners) among the other's boxes.
                same = (b['labels'][:, None] == a['labels'][None]) & (
                    (b['scores'][:, None] - a['scores'][None]).abs() < 1e-4)
                corners = (b['bboxes'][:, None] - a['bboxes'][None]).abs().amax(-1)
                assert corners.masked_fill(~same, float('inf')).amin(1).max() < 1e-2
    else:
        import cv2
        names = sorted(os.listdir(torch_out))
        assert names and names == sorted(os.listdir(onnx_out))
        for name in names:
            a = cv2.imread(osp.join(torch_out, name), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(osp.join(onnx_out, name), cv2.IMREAD_UNCHANGED)
            assert (a == b).mean() > 0.999


def test_test_tool_refuses_foreign_onnx_files(exported, tiny_demo_data, tmp_path):
    config, _, _, onnx_file, _ = exported
    other = SEG_DEMO if config == DET_DEMO else DET_DEMO
    proc = run_tool('tools/test.py', other, onnx_file, '--work-dir', str(tmp_path),
                    '--cfg-options', *data_options(other, tiny_demo_data))
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert f'holds another model than {other}' in proc.stderr
    assert f'exported from {config}' in proc.stderr
    not_onnx = tmp_path / 'broken.onnx'
    not_onnx.write_bytes(b'not a model')
    proc = run_tool('tools/test.py', config, str(not_onnx), '--work-dir', str(tmp_path),
                    '--cfg-options', *data_options(config, tiny_demo_data))
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert f'Cannot read {not_onnx} as an ONNX model' in proc.stderr


def test_unsupported_models_and_sizes_are_clear(tmp_path):
    proc = run_tool('tools/export_onnx.py', 'configs/mask_rcnn_swin_acmix_t_3x.py',
                    str(tmp_path / 'x.pth'), '--out', str(tmp_path / 'x.onnx'))
    assert proc.returncode == 1 and 'MaskRCNN is not supported' in proc.stderr
    assert 'Traceback' not in proc.stderr
    proc = run_tool('tools/export_onnx.py', 'configs/retinanet_pvt_acmix_t_1x.py',
                    str(tmp_path / 'x.pth'), '--out', str(tmp_path / 'x.onnx'),
                    '--shape', '300', '300')
    assert proc.returncode == 1 and 'multiples of 32' in proc.stderr
