"""Test-only models whose predictions are the ground truth of each sample.

Run through ``tools/test.py`` with a config's own data pipeline and evaluator, they
must score 1.0 COCO bbox and segm mAP and 100 mIoU; anything less is a fault in the
data path (category ids, crowd boxes, rescaling, label reduction), not in a model.
Reach them from a config with ``custom_imports = dict(imports=['acmix_mm.testing'])``
and ``model = dict(_delete_=True, type='GroundTruthDetector', data_preprocessor=...)``
(or ``GroundTruthSegmentor``); each holds one weight so that a checkpoint exists.
"""
import torch
import torch.nn as nn
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS as DET_MODELS
from mmengine.structures import InstanceData, PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS as SEG_MODELS


class _GroundTruthModel:
    """One weight (for a checkpoint), a zero loss, no features."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.weight = nn.Parameter(torch.zeros(1))

    def loss(self, inputs, data_samples):
        return dict(loss=self.weight.sum() * 0)

    def extract_feat(self, inputs):
        return inputs

    def _forward(self, inputs, data_samples=None):
        return inputs


@DET_MODELS.register_module()
class GroundTruthDetector(_GroundTruthModel, BaseDetector):
    """Predicts each image's ground-truth instances (not the ignored crowd ones),
    scored 1.

    mmdet's test pipelines load annotations after resizing the image, so the ground
    truth is in original image coordinates, where a detector's ``rescale=True``
    predictions are; a test pipeline that resized them would not score 1.0.

    Args:
        data_preprocessor (dict, optional): The config's data preprocessor.
        init_cfg (dict, optional): Unused. Default: None.
    """

    def predict(self, inputs, data_samples, rescale=True):
        for sample in data_samples:
            gt = sample.gt_instances
            bboxes = gt.bboxes.tensor if hasattr(gt.bboxes, 'tensor') else gt.bboxes
            pred = InstanceData(bboxes=bboxes.clone(), labels=gt.labels.clone(),
                                scores=torch.ones(len(gt.labels)))
            if 'masks' in gt:
                pred.masks = torch.from_numpy(gt.masks.to_ndarray()).bool()
            sample.pred_instances = pred
        return data_samples


@SEG_MODELS.register_module()
class GroundTruthSegmentor(_GroundTruthModel, BaseSegmentor):
    """Predicts each image's ground-truth label map (loaded at the original size, as
    mmseg's test pipelines do after resizing the image).

    Args:
        data_preprocessor (dict, optional): The config's data preprocessor.
        init_cfg (dict, optional): Unused. Default: None.
    """

    def encode_decode(self, inputs, batch_img_metas):
        return inputs

    def predict(self, inputs, data_samples=None):
        for sample in data_samples:
            sample.pred_sem_seg = PixelData(data=sample.gt_sem_seg.data.clone())
        return data_samples
