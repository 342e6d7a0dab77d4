"""PVT-ACmix inside mmseg's encoder-decoder."""
import os.path as osp

import torch
from mmengine.config import Config

from conftest import ROOT


def test_slide_inference_on_an_odd_sized_image():
    from acmix_mm.runner_utils import init_scope
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'sem_fpn_pvt_acmix_t_40k.py'))
    init_scope(cfg)
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg = dict(mode='slide', crop_size=(256, 256), stride=(171, 171))
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        results = model.predict(torch.randn(1, 3, 333, 517))
    assert results[0].seg_logits.data.shape == (150, 333, 517)
    assert results[0].pred_sem_seg.data.shape == (1, 333, 517)
