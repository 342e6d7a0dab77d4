"""Write the small bundled data sets: COCO layout (boxes + instance masks), ADE20K
layout (semantic masks) and ImageNet layout (one shape per image, its class the
label), shapes on textured backgrounds, fully deterministic.

    python tools/make_demo_data.py [--out data/demo] [--num-train 240] [--num-val 60]

Layout written (the standard layouts, under ``--out``)::

    coco/train2017/*.jpg  coco/val2017/*.jpg
    coco/annotations/instances_train2017.json  coco/annotations/instances_val2017.json
    ade/ADEChallengeData2016/images/{training,validation}/*.jpg
    ade/ADEChallengeData2016/annotations/{training,validation}/*.png
    imagenet/{train,val}/<class>/*.jpg  imagenet/meta/{train,val}.txt

Nothing here is committed; the demo and the tests make it on first use.
"""
import argparse
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np

from acmix_mm.runner_utils import UserError, run_with_clear_errors

# Detection classes; each has its own hue range so that colour and geometry both help
# a detector trained for a few minutes.
DET_CLASSES = ('circle', 'square', 'triangle')
CLASS_HUES = ((0, 20), (50, 80), (100, 130))  # OpenCV hue, 0..179
# ADE20K label ids (1-based, 0 = "other", ignored with reduce_zero_label) used by the
# segmentation set: background wall, floor, and the three shapes on top.
ADE_BACKGROUND = (1, 4)  # wall, floor
ADE_SHAPES = (20, 16, 23)  # chair, table, painting: any distinct ADE classes do
IMAGE_SIZE = 320
SEG_SIZE = 256
CLS_SIZE = 128


def textured_background(rng, size):
    """Low-frequency gradient, stripes and noise, different for every image."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(60, 190, 3)
    slope = rng.uniform(-50, 50, (2, 3))
    img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(8, 30)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq * np.pi)
    img += stripes[..., None] * rng.uniform(5, 25)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_polygon(rng, label, center, radius):
    """Polygon (N, 2) of a circle, a rotated square or a rotated triangle."""
    num_points = {0: 32, 1: 4, 2: 3}[label]
    start = rng.uniform(0, 2 * np.pi)
    angles = start + np.arange(num_points) * 2 * np.pi / num_points
    points = np.stack([np.cos(angles), np.sin(angles)], 1) * radius + center
    return points.astype(np.float32)


def shape_colour(rng, label):
    hue = rng.uniform(*CLASS_HUES[label])
    hsv = np.uint8([[[hue, rng.uniform(150, 255), rng.uniform(120, 255)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def place_shapes(rng, size, max_shapes, min_radius, max_radius):
    """Non-overlapping (label, center, radius) triples."""
    shapes = []
    for _ in range(max_shapes * 10):
        if len(shapes) == max_shapes:
            break
        radius = rng.uniform(min_radius, max_radius)
        center = rng.uniform(radius, size - radius, 2)
        if all(np.linalg.norm(center - c) > radius + r + 4 for _, c, r in shapes):
            shapes.append((int(rng.integers(len(DET_CLASSES))), center, radius))
    return shapes


def make_coco_split(rng, root, split, num_images):
    image_dir = osp.join(root, f'{split}2017')
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        img = textured_background(rng, IMAGE_SIZE)
        count = int(rng.integers(1, 5))
        for label, center, radius in place_shapes(rng, IMAGE_SIZE, count, 18, 70):
            poly = shape_polygon(rng, label, center, radius)
            cv2.fillPoly(img, [np.round(poly).astype(np.int32)], shape_colour(rng, label))
            poly = np.clip(poly, 0, IMAGE_SIZE - 1)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            area = float(cv2.contourArea(poly))
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=label + 1,
                    bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    area=area,
                    segmentation=[poly.reshape(-1).round(2).tolist()],
                    iscrowd=0))
        file_name = f'{image_id:06d}.jpg'
        cv2.imwrite(osp.join(image_dir, file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(
            dict(id=image_id, file_name=file_name, width=IMAGE_SIZE, height=IMAGE_SIZE))
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(DET_CLASSES)
    ]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    with open(osp.join(root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
        json.dump(
            dict(images=images, annotations=annotations, categories=categories), f)


def make_ade_split(rng, root, split, num_images):
    image_dir = osp.join(root, 'images', split)
    ann_dir = osp.join(root, 'annotations', split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for index in range(1, num_images + 1):
        # Two background regions (wall above a random horizon, floor below), each with
        # its own texture, then shapes on top.
        horizon = int(rng.uniform(0.3, 0.7) * SEG_SIZE)
        img = textured_background(rng, SEG_SIZE)
        img[horizon:] = textured_background(rng, SEG_SIZE)[horizon:] // 2 + 60
        label = np.full((SEG_SIZE, SEG_SIZE), ADE_BACKGROUND[0], np.uint8)
        label[horizon:] = ADE_BACKGROUND[1]
        for cls, center, radius in place_shapes(rng, SEG_SIZE, int(rng.integers(1, 4)),
                                                16, 60):
            poly = np.round(shape_polygon(rng, cls, center, radius)).astype(np.int32)
            cv2.fillPoly(img, [poly], shape_colour(rng, cls))
            cv2.fillPoly(label, [poly], ADE_SHAPES[cls])
        name = f'ADE_{split[:5]}_{index:08d}'
        cv2.imwrite(osp.join(image_dir, name + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(osp.join(ann_dir, name + '.png'), label)


def make_imagenet_split(rng, root, split, num_images):
    """ImageNet layout: ``split/<class>/<name>.jpg`` and ``meta/split.txt`` lines
    ``<class>/<name>.jpg <label>``, one shape per image, classes in turn."""
    lines = []
    for index in range(num_images):
        label = index % len(DET_CLASSES)
        img = textured_background(rng, CLS_SIZE)
        radius = rng.uniform(0.2, 0.4) * CLS_SIZE
        center = rng.uniform(radius, CLS_SIZE - radius, 2)
        poly = np.round(shape_polygon(rng, label, center, radius)).astype(np.int32)
        cv2.fillPoly(img, [poly], shape_colour(rng, label))
        name = f'{DET_CLASSES[label]}/{split}_{index:06d}.jpg'
        os.makedirs(osp.join(root, split, DET_CLASSES[label]), exist_ok=True)
        cv2.imwrite(osp.join(root, split, name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines.append(f'{name} {label}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.writelines(lines)


def make_demo_data(out='data/demo', num_train=240, num_val=60, seed=0):
    """Write the data sets under ``out`` (skipped when already complete)."""
    stamp = osp.join(out, f'.complete-cls-{num_train}-{num_val}-{seed}')
    if osp.exists(stamp):
        return out
    rng = np.random.default_rng(seed)
    coco = osp.join(out, 'coco')
    make_coco_split(rng, coco, 'train', num_train)
    make_coco_split(rng, coco, 'val', num_val)
    ade = osp.join(out, 'ade', 'ADEChallengeData2016')
    make_ade_split(rng, ade, 'training', num_train)
    make_ade_split(rng, ade, 'validation', num_val)
    # Its own generator, so that the other sets stay as they were before it existed.
    rng = np.random.default_rng(seed + 1)
    imagenet = osp.join(out, 'imagenet')
    make_imagenet_split(rng, imagenet, 'train', num_train)
    make_imagenet_split(rng, imagenet, 'val', num_val)
    open(stamp, 'w').close()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/demo', help='output root')
    parser.add_argument('--num-train', type=int, default=240)
    parser.add_argument('--num-val', type=int, default=60)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    def make():
        if min(args.num_train, args.num_val) < 1:
            raise UserError(f'--num-train {args.num_train} --num-val {args.num_val}: each '
                            'split needs at least one image.')
        out = make_demo_data(args.out, args.num_train, args.num_val, args.seed)
        print(f'Demo data ready under {out}')

    return run_with_clear_errors(make)


if __name__ == '__main__':
    sys.exit(main())
