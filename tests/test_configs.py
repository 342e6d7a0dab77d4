"""Every config in configs/ parses, has a known scope, and builds its model."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)


def test_configs_exist():
    names = {osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS}
    assert {'retinanet_pvt_acmix_t_1x.py', 'retinanet_pvt_t_1x.py',
            'demo/retinanet_pvt_acmix_t_demo.py'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds_model(path):
    from acmix_mm.runner_utils import init_scope
    cfg = Config.fromfile(path)
    init_scope(cfg)
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_acmix_config_differs_from_baseline_only_in_backbone():
    acmix = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_acmix_t_1x.py'))
    base = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_t_1x.py'))
    assert acmix.model.backbone.type == 'PVTACmix'
    assert acmix.custom_imports.imports == ['acmix_mm']
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader'):
        assert acmix[key] == base[key], key
    assert acmix.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    assert acmix.train_cfg.max_epochs == 12
    assert acmix.param_scheduler[1].milestones == [8, 11]
    assert acmix.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    assert acmix.auto_scale_lr.base_batch_size == 16
    assert acmix.train_dataloader.dataset.data_root == 'data/coco/'
