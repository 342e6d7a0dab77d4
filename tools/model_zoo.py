"""Write docs/model_zoo.md: every config with params and GFLOPs measured by our tools.

    python tools/model_zoo.py [--out docs/model_zoo.md] [--missing-only]

Each config under configs/ (not _base_) is counted as tools/get_flops.py counts it
(800x1333 for detection, 512x2048 for segmentation, 224x224 for ImageNet
classification), next to the paper's own columns (Tables 2-6 of Pan et al., CVPR 2022,
and the official README's ImageNet table), which are labelled as such: nothing here was
trained on the full data sets. tests/test_model_zoo.py fails when a config is missing
from the file, so rerun this after adding one (about half an hour on 2 CPU cores;
``--missing-only`` counts only the configs the file lacks and keeps the other rows).
"""
import argparse
import glob
import os
import os.path as osp
import re
import sys

from acmix_mm.analysis import count_config
from acmix_mm.fileio import atomic_output

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# The paper's columns: (params, GFLOPs, metric), metric as printed in its tables.
PAPER = {
    'retinanet_pvt_t_1x': ('-', '230', '36.7 mAP (Table 4)'),
    'retinanet_pvt_acmix_t_1x': ('-', '232', '40.5 mAP (Table 4)'),
    'retinanet_pvt_t_3x': ('-', '230', '39.4 mAP (Table 4)'),
    'retinanet_pvt_acmix_t_3x': ('-', '232', '42.0 mAP (Table 4)'),
    'retinanet_pvt_s_1x': ('-', '-', '42.2 mAP (Table 5, schedule not stated)'),
    'retinanet_pvt_acmix_s_1x': ('-', '-', '42.0 mAP (Table 5, schedule not stated)'),
    'retinanet_pvt_l_1x': ('-', '-', '43.4 mAP (Table 5, schedule not stated)'),
    'retinanet_pvt_acmix_l_1x': ('-', '-', '45.3 mAP (Table 5, schedule not stated)'),
    'retinanet_r50_1x': ('-', '250', '36.7 mAP (Table 3)'),
    'retinanet_r50_acmix_1x': ('-', '230', '38.3 mAP (Table 3)'),
    'retinanet_san19_1x': ('-', '229', '38.2 mAP (Table 3)'),
    'retinanet_san19_acmix_1x': ('-', '233', '39.1 mAP (Table 3)'),
    'mask_rcnn_swin_t_3x': ('-', '272', '46.0 box mAP (Table 4)'),
    'mask_rcnn_swin_acmix_t_3x': ('-', '275', '47.0 box mAP (Table 4)'),
    'cascade_mask_rcnn_swin_t_3x': ('-', '750', '- (Table 4 lists mAP50 69.3)'),
    'cascade_mask_rcnn_swin_acmix_t_3x': ('-', '754', '- (Table 4 lists mAP50 69.8)'),
    'sem_fpn_pvt_t_40k': ('17', '158', '37.1 mIoU (Table 2)'),
    'sem_fpn_pvt_acmix_t_40k': ('17', '160', '42.7 mIoU (Table 2)'),
    'sem_fpn_pvt_s_40k': ('28', '225', '42.4 mIoU (Table 2)'),
    'sem_fpn_pvt_acmix_s_40k': ('29', '228', '46.4 mIoU (Table 2)'),
    'upernet_swin_t_160k': ('60', '945', '44.5 mIoU (Table 2)'),
    'upernet_swin_acmix_t_160k': ('60', '950', '45.3 mIoU (Table 2)'),
    'upernet_swin_s_160k': ('81', '1038', '47.6 mIoU (Table 2)'),
    'upernet_swin_acmix_s_160k': ('81', '1043', '48.7 mIoU (Table 2)'),
    # ImageNet-1k classification (224x224): the official README's table, whose gains
    # are over the baseline of each family, and the paper's Table 6 for Swin-T.
    'pretrain/resnet26_acmix_in1k': ('10.6', '2.3', '76.1 top-1 (+2.5; official README)'),
    'pretrain/resnet38_acmix_in1k': ('14.6', '2.9', '77.4 top-1 (+1.4; official README)'),
    'pretrain/resnet50_acmix_in1k': ('18.6', '3.6', '77.8 top-1 (+0.9; official README)'),
    'pretrain/san10_acmix_in1k': ('12.1', '1.9', '77.6 top-1 (+0.5; official README)'),
    'pretrain/san15_acmix_in1k': ('16.6', '2.7', '78.4 top-1 (+0.4; official README)'),
    'pretrain/san19_acmix_in1k': ('21.2', '3.4', '78.7 top-1 (+0.5; official README)'),
    'pretrain/pvt_acmix_t_in1k': ('13', '2.0', '78.0 top-1 (+2.9; official README)'),
    'pretrain/pvt_acmix_s_in1k': ('25', '3.9', '81.7 top-1 (+1.9; official README)'),
    'pretrain/swin_t_in1k': ('29', '4.5', '81.3 top-1 (Table 6)'),
    'pretrain/swin_acmix_t_in1k': ('30', '4.6', '81.9 top-1 (Table 6; official README)'),
    'pretrain/swin_acmix_s_in1k': ('51', '9.0', '83.5 top-1 (+0.5; official README)'),
}
# Our own results on the bundled demo data (README, "Measured").
OURS = {
    'demo/retinanet_pvt_acmix_t_demo':
    'demo data: 0.415 bbox mAP (0.398 / 0.476 before the SR norm eps fix)',
    'demo/sem_fpn_pvt_acmix_t_demo': 'demo data: 65.6 / 67.0 mIoU (measured on two machines)',
    'demo/retinanet_attnet_t1_demo':
    'demo data: 0.683 bbox mAP (measured once; PVT-ACmix-T 0.398 there)',
    'demo/pvt_acmix_t_in1k_demo': 'demo data: 98.3 top-1 (3 classes, 60 images)',
}


def config_names():
    """Every config under configs/ except _base_ files, as paths relative to configs/."""
    paths = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    return sorted(osp.relpath(p, osp.join(ROOT, 'configs'))[:-3] for p in paths
                  if '_base_' not in p)


def row(name):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name + '.py'))
    flops, params, (height, width) = count_config(cfg)
    paper = PAPER.get(name, ('-', '-', OURS.get(name, '-')))
    config = f'configs/{name}.py'
    return (f'| `{name}` | {height}x{width} | {params / 1e6:.2f} | {flops / 1e9:.1f} | '
            f'{paper[0]} | {paper[1]} | {paper[2]} | `python tools/train.py {config}`; '
            f'`python tools/test.py {config} CKPT` |')


def existing_rows(path):
    """The rows of an existing zoo file, by config name."""
    if not osp.isfile(path):
        return {}
    rows = {}
    for line in open(path).read().splitlines():
        found = re.match(r'\| `([^`]+)` \| \d+x\d+ \|', line)
        if found:
            rows[found.group(1)] = line
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=osp.join(ROOT, 'docs', 'model_zoo.md'))
    parser.add_argument('--missing-only', action='store_true',
                        help='count only configs the file lacks; keep its other rows')
    args = parser.parse_args(argv)
    kept = existing_rows(args.out) if args.missing_only else {}
    lines = [
        '# Model zoo', '',
        'Generated by `python tools/model_zoo.py` from the configs; do not edit by hand.',
        'Params and GFLOPs are ours, counted by `tools/get_flops.py` (mmengine\'s counter '
        'plus attention; one multiply-add is one FLOP; mask heads on 100 RoIs). The '
        '"paper" columns and every mAP / mIoU are the paper\'s (Pan et al., CVPR 2022), '
        'reported there after full COCO / ADE20K / ImageNet training on 8 GPUs, not '
        'reproduced here (the ImageNet rows\' paper columns are the official README\'s); '
        'only the demo rows are our measurements, on the bundled demo data. The AttNet '
        'rows (ATConv, Yu et al., 2025) sit beside the ACmix ones they are compared with '
        '(T1 beside PVT-ACmix-T, T2 beside Swin-ACmix-T); their authors report no '
        'detection or segmentation results, so they have no paper columns.', '',
        '| config | input | params (M) | GFLOPs | paper params (M) | paper GFLOPs | '
        'paper result | train; test |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for name in config_names():
        if name in kept:
            lines.append(kept[name])
            continue
        print(name, flush=True)
        lines.append(row(name))
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with atomic_output(args.out) as partial, open(partial, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
