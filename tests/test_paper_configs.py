"""The paper configs themselves take real steps: their own pipelines (3x multi-scale
with crops, 1333x800, 512x512 segmentation crops), models and heads, on the bundled
data. One config per backbone family and per head type; the only changes are what a
user with other data changes: data roots and classes, no ImageNet weights, one
epoch or iteration, and every score kept so that evaluation has detections to score.
"""
import os.path as osp
import platform
import re
import subprocess

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT, assert_group_freed_before_exit, distributed_env, run_tool

DEMO_CLASSES = ('circle', 'square', 'triangle')
PAPER_CONFIGS = [
    'retinanet_pvt_acmix_t_3x.py',  # PVT-ACmix, RetinaNet, multi-scale 640-800
    # Swin-ACmix, Cascade Mask R-CNN (masks as Mask R-CNN's), multi-scale with crops;
    # the single-scale 1333x800 pipeline of the 1x configs is the RetinaNet ones' below
    'cascade_mask_rcnn_swin_acmix_t_3x.py',
    'retinanet_r50_acmix_1x.py',  # ResNet-ACmix
    'retinanet_san19_acmix_1x.py',  # SAN-ACmix
    'retinanet_attnet_t1_3x.py',  # AttNet
    'upernet_swin_acmix_t_160k.py',  # UperNet, 512x512 crops
]


def _set_num_classes(head, num_classes):
    for one in head if isinstance(head, (list, tuple)) else [head]:
        one['num_classes'] = num_classes


def small_data_config(name, data_root, out):
    """``configs/{name}`` with the bundled data, as a user's config would set it."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    cfg.model.backbone.init_cfg = None
    detection = cfg.default_scope == 'mmdet'
    root = osp.join(data_root, 'coco') + '/' if detection else osp.join(
        data_root, 'ade', 'ADEChallengeData2016')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        dataset = dataset.get('dataset', dataset)  # a wrapper (RepeatDataset, ...)
        dataset.data_root = root
        if detection:
            dataset.metainfo = dict(classes=DEMO_CLASSES)
    if detection:
        ann = root + 'annotations/instances_val2017.json'
        cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = ann
        if 'roi_head' in cfg.model:
            _set_num_classes(cfg.model.roi_head.bbox_head, len(DEMO_CLASSES))
            _set_num_classes(cfg.model.roi_head.mask_head, len(DEMO_CLASSES))
            cfg.model.test_cfg.rcnn.score_thr = 0.0
        else:
            _set_num_classes(cfg.model.bbox_head, len(DEMO_CLASSES))
            cfg.model.test_cfg.score_thr = 0.0
        cfg.train_cfg.update(max_epochs=1, val_interval=1)
    else:
        cfg.train_cfg.update(max_iters=1, val_interval=1)
    cfg.default_hooks.checkpoint.interval = 1
    cfg.randomness = dict(seed=0)
    cfg.dump(str(out))
    return cfg


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_paper_config_trains_a_step_and_evaluates(name, tiny_demo_data, tmp_path):
    config = tmp_path / name
    cfg = small_data_config(name, tiny_demo_data, config)
    proc = run_tool('tools/train.py', str(config), '--work-dir', str(tmp_path / 'work'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert f"type='{cfg.model.backbone.type}'" in log
    if platform.libc_ver()[0] == 'glibc' and not torch.cuda.is_available():
        assert 'glibc malloc keeps large freed blocks for reuse' in log
    assert re.search(r'(Epoch\(train\) \[1\]\[1/1\]|Iter\(train\) \[1/1\]).*loss: [0-9.]+',
                     log), log[-3000:]
    if cfg.default_scope == 'mmseg':
        assert re.search(r'mIoU: [0-9.]+', log), log[-3000:]
    else:
        assert re.search(r'coco/bbox_mAP: [0-9.]+', log), log[-3000:]
        if 'roi_head' in cfg.model:
            assert re.search(r'coco/segm_mAP: [0-9.]+', log), log[-3000:]


@pytest.mark.parametrize('sync_bn', ['torch', 'mmcv'])
def test_syncbn_paper_config_trains_over_two_cpu_processes(sync_bn, tiny_demo_data,
                                                           tmp_path):
    """Semantic FPN's recipe (SyncBN in its head) over two gloo processes, with
    --sync-bn converting the rest too (torch's or mmcv's SyncBN): no 'SyncBatchNorm
    layers only work with GPU modules' any more."""
    config = tmp_path / 'sem_fpn_pvt_acmix_t_40k.py'
    small_data_config('sem_fpn_pvt_acmix_t_40k.py', tiny_demo_data, config)
    work_dir = tmp_path / 'work'
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--sync-bn', sync_bn,
         '--work-dir', str(work_dir), '--cfg-options', 'train_dataloader.batch_size=1',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=2'],
        cwd=ROOT, env=distributed_env(tmp_path), capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'GPU number: 2' in log and 'Iter(train) [2/2]' in log
    assert re.search(r'mIoU: [0-9.]+', log)
    assert osp.isfile(work_dir / 'iter_2.pth')
    assert_group_freed_before_exit(proc.stderr)
