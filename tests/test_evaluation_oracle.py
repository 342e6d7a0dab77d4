"""Evaluation that can fail: models that predict the ground truth must score 1.0 bbox
and segm mAP and 100 mIoU through ``tools/test.py`` with a paper config's own data
pipeline and evaluator, on awkward data (non-contiguous category ids, a crowd
region, an image without objects, a grayscale JPEG, a PNG)."""
import json
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch

from conftest import ROOT, run_tool

CATEGORIES = [dict(id=3, name='disc'), dict(id=7, name='block'), dict(id=12, name='wedge')]


def polygon_annotation(ann_id, image_id, category_id, points):
    points = np.asarray(points, dtype=np.float64)
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    area = 0.5 * abs(np.dot(points[:, 0], np.roll(points[:, 1], 1)) -
                     np.dot(points[:, 1], np.roll(points[:, 0], 1)))
    return dict(id=ann_id, image_id=image_id, category_id=category_id, iscrowd=0,
                segmentation=[points.flatten().tolist()], area=float(area),
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)])


def crowd_annotation(ann_id, image_id, category_id, height, width, box):
    """A crowd region as COCO stores it: uncompressed RLE (column-major run lengths,
    starting with a run of zeros)."""
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    flat = mask.flatten(order='F')
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return dict(id=ann_id, image_id=image_id, category_id=category_id, iscrowd=1,
                segmentation=dict(counts=counts, size=[height, width]),
                area=float(mask.sum()), bbox=[x0, y0, x1 - x0, y1 - y0])


def write_coco(root):
    """Three images: a grayscale JPEG with two objects and a crowd region, a colour
    PNG with three objects of all categories, and a JPEG without objects."""
    (root / 'val2017').mkdir(parents=True)
    (root / 'annotations').mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    specs = [
        ('gray.jpg', 240, 320, [
            (3, [(40, 40), (120, 30), (130, 110), (50, 120)]),
            (12, [(200, 150), (300, 220), (190, 230)]),
        ], (150, 20, 230, 90)),
        ('colour.png', 300, 200, [
            (7, [(10, 10), (90, 10), (90, 70), (10, 70)]),
            (3, [(100, 120), (180, 140), (150, 260)]),
            (12, [(20, 180), (80, 170), (70, 290), (15, 280)]),
        ], None),
        ('empty.jpg', 200, 260, [], None),
    ]
    for image_id, (name, height, width, objects, crowd) in enumerate(specs, start=5):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        if name.startswith('gray'):
            pixels = pixels[..., 0]
        cv2.imwrite(str(root / 'val2017' / name), pixels)
        images.append(dict(id=image_id * 10, file_name=name, height=height, width=width))
        for category_id, points in objects:
            annotations.append(polygon_annotation(len(annotations) + 1, image_id * 10,
                                                  category_id, points))
        if crowd:
            annotations.append(crowd_annotation(len(annotations) + 1, image_id * 10, 7,
                                                height, width, crowd))
    ann_file = root / 'annotations' / 'instances_val2017.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations,
                                        categories=CATEGORIES)))
    return ann_file


def write_ade(root):
    """ADE20K layout: label maps with 0 (ignored after reduce_zero_label), the first
    and the last of the 150 classes; a grayscale image."""
    for sub in ('images/validation', 'annotations/validation'):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate([(180, 240), (256, 200)]):
        labels = np.zeros((height, width), np.uint8)
        labels[20:120, 30:150] = 1
        labels[100:170, 60:190] = 150
        labels[5:15, 5:60] = 37 + i
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        cv2.imwrite(str(root / 'images/validation' / f'val_{i}.jpg'),
                    image[..., 0] if i == 0 else image)
        cv2.imwrite(str(root / 'annotations/validation' / f'val_{i}.png'), labels)


def oracle_checkpoint(path):
    torch.save({'state_dict': {'weight': torch.zeros(1)}, 'meta': {}}, path)
    return str(path)


def metrics(log, names):
    found = {}
    for name in names:
        match = re.search(rf'{re.escape(name)}: ([0-9.]+)', log)
        assert match, f'{name} not in the log:\n{log[-3000:]}'
        found[name] = float(match.group(1))
    return found


def test_ground_truth_detector_scores_full_bbox_and_segm_map(tmp_path):
    root = tmp_path / 'coco'
    ann_file = write_coco(root)
    classes = tuple(c['name'] for c in CATEGORIES)
    config = tmp_path / 'oracle_mask_rcnn.py'
    config.write_text('\n'.join([
        f"_base_ = '{osp.join(ROOT, 'configs', 'mask_rcnn_swin_acmix_t_3x.py')}'",
        "custom_imports = dict(imports=['acmix_mm', 'acmix_mm.testing'],",
        "                      allow_failed_imports=False)",
        "model = dict(_delete_=True, type='GroundTruthDetector',",
        "             data_preprocessor={{_base_.model.data_preprocessor}})",
        f"test_dataloader = dict(dataset=dict(data_root='{root}/',",
        "    ann_file='annotations/instances_val2017.json',",
        f"    data_prefix=dict(img='val2017/'), metainfo=dict(classes={classes!r})))",
        f"test_evaluator = dict(ann_file='{ann_file}')",
    ]))
    proc = run_tool('tools/test.py', str(config), oracle_checkpoint(tmp_path / 'gt.pth'),
                    '--work-dir', str(tmp_path / 'work'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    found = metrics(log, ['coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_75',
                          'coco/segm_mAP_75'])
    assert all(value == 1.0 for value in found.values()), found


def test_ground_truth_segmentor_scores_full_miou(tmp_path):
    root = tmp_path / 'ade' / 'ADEChallengeData2016'
    write_ade(root)
    config = tmp_path / 'oracle_sem_fpn.py'
    config.write_text('\n'.join([
        f"_base_ = '{osp.join(ROOT, 'configs', 'sem_fpn_pvt_acmix_t_40k.py')}'",
        "custom_imports = dict(imports=['acmix_mm', 'acmix_mm.testing'],",
        "                      allow_failed_imports=False)",
        "model = dict(_delete_=True, type='GroundTruthSegmentor',",
        "             data_preprocessor={{_base_.model.data_preprocessor}})",
        f"test_dataloader = dict(dataset=dict(data_root='{root}'))",
    ]))
    proc = run_tool('tools/test.py', str(config), oracle_checkpoint(tmp_path / 'gt.pth'),
                    '--work-dir', str(tmp_path / 'work'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    found = metrics(log, ['mIoU', 'aAcc'])
    assert found == {'mIoU': 100.0, 'aAcc': 100.0}, found


@pytest.mark.parametrize('wrong', ['labels', 'boxes'])
def test_a_wrong_prediction_does_not_score_full_map(tmp_path, monkeypatch, wrong):
    """The oracle check can fail: shifting boxes or labels costs mAP."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import acmix_mm.testing as testing
    root = tmp_path / 'coco'
    ann_file = write_coco(root)
    predict = testing.GroundTruthDetector.predict

    def spoiled(self, inputs, data_samples, rescale=True):
        samples = predict(self, inputs, data_samples, rescale)
        for sample in samples:
            pred = sample.pred_instances
            if wrong == 'labels':
                pred.labels = (pred.labels + 1) % 3
            else:
                pred.bboxes = pred.bboxes + 15
        return samples

    monkeypatch.setattr(testing.GroundTruthDetector, 'predict', spoiled)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_acmix_t_1x.py'))
    cfg.model = dict(type='GroundTruthDetector',
                     data_preprocessor=cfg.model.data_preprocessor)
    cfg.test_dataloader.dataset.update(
        data_root=f'{root}/', ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        metainfo=dict(classes=tuple(c['name'] for c in CATEGORIES)))
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.test_evaluator.ann_file = str(ann_file)
    cfg.work_dir = str(tmp_path / 'work')
    from acmix_mm.runner_utils import init_scope
    init_scope(cfg)
    result = Runner.from_cfg(cfg).test()
    assert result['coco/bbox_mAP'] < 0.5
