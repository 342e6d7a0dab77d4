"""Write docs/model_zoo.md and the README's results block from the configs and records.

    python tools/model_zoo.py                 # write the page and the README block
    python tools/model_zoo.py --check         # exit 1 if either differs from the records
    python tools/model_zoo.py --count [NAME ...] [--missing-only]

The pages list every config under configs/ (not _base_), one table per task. Params
and GFLOPs are the latest records ``params.NAME`` and ``gflops.NAME`` under
benchmarks/results/ (acmix_mm/records.py); ``--count`` counts configs as
tools/get_flops.py does (800x1333 detection, 512x2048 segmentation, 224x224 ImageNet;
minutes per config on 2 CPU cores) and appends those records. The "ours" column is
the latest record of the config's run (the demos); nothing else was trained here. The
paper's columns (Pan et al., CVPR 2022, and the official README for ImageNet) are the
table PAPER below. tests/test_model_zoo.py fails when a page differs from what this
writes, or a config has no count.
"""
import argparse
import glob
import importlib.util
import os.path as osp
import re
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _load_records():
    """acmix_mm/records.py alone, by path: importing the acmix_mm package would import
    torch and the OpenMMLab libraries, which writing pages does not need."""
    spec = importlib.util.spec_from_file_location(
        'acmix_mm_records', osp.join(ROOT, 'acmix_mm', 'records.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


records = _load_records()

ZOO = osp.join(ROOT, 'docs', 'model_zoo.md')
README = osp.join(ROOT, 'README.md')
REGENERATE = 'python tools/model_zoo.py'

# The paper's columns: config -> (params M, GFLOPs, metric, where). '-' where the paper
# gives none. Table 5 (FPS on an Ascend 910 at 576x576) is PVT v1's 3x schedule: PVT v1
# reports PVT-S 40.4 mAP at 1x and 42.2 at 3x, PVT-L 42.6 at 1x and 43.4 at 3x.
PAPER = {
    'retinanet_pvt_t_1x': ('-', '230', '36.7 mAP', 'Table 4'),
    'retinanet_pvt_acmix_t_1x': ('-', '232', '40.5 mAP', 'Table 4'),
    'retinanet_pvt_t_3x': ('-', '230', '39.4 mAP', 'Table 4'),
    'retinanet_pvt_acmix_t_3x': ('-', '232', '42.0 mAP', 'Table 4'),
    'retinanet_pvt_s_3x': ('-', '-', '42.2 mAP, 50.3 FPS', 'Table 5'),
    'retinanet_pvt_acmix_s_3x': ('-', '-', '42.0 mAP, 67.7 FPS', 'Table 5'),
    'retinanet_pvt_l_3x': ('-', '-', '43.4 mAP, 24.3 FPS', 'Table 5'),
    'retinanet_pvt_acmix_l_3x': ('-', '-', '45.3 mAP, 43.9 FPS', 'Table 5'),
    'retinanet_r50_1x': ('-', '250', '36.7 mAP', 'Table 3'),
    'retinanet_r50_acmix_1x': ('-', '230', '38.3 mAP', 'Table 3'),
    'retinanet_san19_1x': ('-', '229', '38.2 mAP', 'Table 3'),
    'retinanet_san19_acmix_1x': ('-', '233', '39.1 mAP', 'Table 3'),
    'mask_rcnn_swin_t_3x': ('-', '272', '46.0 box mAP', 'Table 4'),
    'mask_rcnn_swin_acmix_t_3x': ('-', '275', '47.0 box mAP', 'Table 4'),
    'cascade_mask_rcnn_swin_t_3x': ('-', '750', '69.3 mAP50', 'Table 4'),
    'cascade_mask_rcnn_swin_acmix_t_3x': ('-', '754', '69.8 mAP50', 'Table 4'),
    'sem_fpn_pvt_t_40k': ('17', '158', '37.1 mIoU', 'Table 2'),
    'sem_fpn_pvt_acmix_t_40k': ('17', '160', '42.7 mIoU', 'Table 2'),
    'sem_fpn_pvt_s_40k': ('28', '225', '42.4 mIoU', 'Table 2'),
    'sem_fpn_pvt_acmix_s_40k': ('29', '228', '46.4 mIoU', 'Table 2'),
    'upernet_swin_t_160k': ('60', '945', '44.5 mIoU', 'Table 2'),
    'upernet_swin_acmix_t_160k': ('60', '950', '45.3 mIoU', 'Table 2'),
    'upernet_swin_s_160k': ('81', '1038', '47.6 mIoU', 'Table 2'),
    'upernet_swin_acmix_s_160k': ('81', '1043', '48.7 mIoU', 'Table 2'),
    'pretrain/resnet26_acmix_in1k': ('10.6', '2.3', '76.1 top-1', 'official README'),
    'pretrain/resnet38_acmix_in1k': ('14.6', '2.9', '77.4 top-1', 'official README'),
    'pretrain/resnet50_acmix_in1k': ('18.6', '3.6', '77.8 top-1', 'official README'),
    'pretrain/san10_acmix_in1k': ('12.1', '1.9', '77.6 top-1', 'official README'),
    'pretrain/san15_acmix_in1k': ('16.6', '2.7', '78.4 top-1', 'official README'),
    'pretrain/san19_acmix_in1k': ('21.2', '3.4', '78.7 top-1', 'official README'),
    'pretrain/pvt_acmix_t_in1k': ('13', '2.0', '78.0 top-1', 'official README'),
    'pretrain/pvt_acmix_s_in1k': ('25', '3.9', '81.7 top-1', 'official README'),
    'pretrain/swin_t_in1k': ('29', '4.5', '81.3 top-1', 'Table 6'),
    'pretrain/swin_acmix_t_in1k': ('30', '4.6', '81.9 top-1', 'Table 6'),
    'pretrain/swin_acmix_s_in1k': ('51', '9.0', '83.5 top-1', 'official README'),
}
# Configs whose "ours" is a record: config -> figure.
OURS = {
    'demo/retinanet_pvt_acmix_t_demo': 'demo.det.metric',
    'demo/sem_fpn_pvt_acmix_t_demo': 'demo.seg.metric',
    'demo/pvt_acmix_t_in1k_demo': 'demo.cls.metric',
    'demo/retinanet_attnet_t1_demo': 'demo.attnet_t1.metric',
}
# ImageNet schedules (the configs' own; Appendix B of the paper).
PRETRAIN_SCHEDULE = {'resnet': '100 ep, SGD', 'san': '100 ep, SGD', 'pvt': '300 ep, AdamW',
                     'swin': '300 ep, AdamW'}
TASKS = (
    ('detection', 'COCO detection (mmdet)', 'box mAP on COCO val2017'),
    ('segmentation', 'ADE20K segmentation (mmseg)', 'mIoU on ADE20K val, single scale'),
    ('classification', 'ImageNet-1k classification (mmpretrain)', 'top-1 on ImageNet val'),
    ('demo', 'Demos on the bundled data', 'our own runs, see docs/benchmarks.md'),
)
NOTES = """\
## Where our counts differ from the paper's columns

- Swin-ACmix-T: 28.65 M parameters with its classifier, the paper 30 M (Table 6). Ours
  equal the official code's model (28,649,908; the tests compare the outputs given the
  same weights). Table 6 also gives Swin-T 29 M, where Swin-T has 28.29 M (Swin's own
  paper: 28 M): the paper's counts run about 1 M high.
- ResNet-ACmix-50: 18.33 M, the official README 18.6 M. The official code's model,
  with its 1000-class head, also has 18.33 M.
- Mask R-CNN Swin-T: the 1x and 3x configs build the same model and both count
  275.0 G. The old zoo's 272.8 G for the 1x config was a stale count; a recount on
  2026-12-03 gives 275.0 G. Ours are 3.0 G (Swin-T) and 3.5 G (Swin-ACmix-T) above the
  paper's 272 and 275 G, which we have not traced to a difference in counting.
- PVT-ACmix-T RetinaNet: 238.0 G, the paper 232 G. The full-resolution k and v
  projection that feeds the convolution path costs 3.9 G, the path itself 1.8 G, and
  inputs that are not a multiple of 32 the rest. The paper's +2 G matches the path alone.
- Table 5 gives no GFLOPs; its FPS were measured on an Ascend 910 at 576x576
  (`tools/benchmark.py` measures images/s here, see [benchmarks.md](benchmarks.md)).
"""
def config_names():
    """Every config under configs/ except _base_ files, as paths relative to configs/,
    each ACmix config right after its baseline."""
    paths = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    names = [osp.relpath(p, osp.join(ROOT, 'configs'))[:-3] for p in paths
             if '_base_' not in p]
    return sorted(names, key=lambda n: (n.replace('_acmix', ''), '_acmix' in n))


def task(name):
    if name.startswith('demo/'):
        return 'demo'
    if name.startswith('pretrain/'):
        return 'classification'
    if name.startswith(('sem_fpn', 'upernet')):
        return 'segmentation'
    return 'detection'


def demo_schedule(name):
    """A demo config's schedule as its train_cfg gives it: '6 ep' or '400 it'."""
    from mmengine.config import Config
    train_cfg = Config.fromfile(osp.join(ROOT, 'configs', name + '.py')).train_cfg
    if 'max_epochs' in train_cfg:
        return f'{train_cfg.max_epochs} ep'
    return f'{train_cfg.max_iters} it'


def schedule(name):
    if name.startswith('demo/'):
        return demo_schedule(name)
    if name.startswith('pretrain/'):
        family = re.match(r'pretrain/([a-z]+)', name).group(1)
        return PRETRAIN_SCHEDULE[family]
    suffix = name.rsplit('_', 1)[-1]
    return {'1x': '1x (12 ep)', '3x': '3x (36 ep, multi-scale)', '40k': '40k it',
            '160k': '160k it'}[suffix]


def fmt(value, digits):
    return f'{value:.{digits}f}'


def cells(name, latest):
    """The row's cells after the config: schedule, input, params, GFLOPs, paper, ours."""
    params, gflops = latest.get(f'params.{name}'), latest.get(f'gflops.{name}')
    size = (params or gflops or {}).get('details', {}).get('input', '-')
    paper = PAPER.get(name)
    ours = '-'
    if name in OURS and OURS[name] in latest:
        rec = latest[OURS[name]]
        ours = f'{rec["value"]:g} {rec["unit"]}'
    elif task(name) != 'demo':
        ours = 'not run'
    return [schedule(name), size,
            fmt(params['value'], 2) if params else 'not counted',
            fmt(gflops['value'], 1) if gflops else 'not counted',
            paper[0] if paper else '-', paper[1] if paper else '-',
            f'{paper[2]} ({paper[3]})' if paper else '-', ours]


def render_zoo(all_records):
    latest = records.latest(all_records)
    lines = [
        '# Model zoo', '',
        f'Generated by `{REGENERATE}` from the configs and the records under',
        '`benchmarks/results/`; do not edit by hand.', '',
        'No config here has been trained on the full data sets: that needs 8 GPUs and',
        'no GPU has run this project. Every mAP, mIoU and top-1 under "paper" is the',
        "paper's (Pan et al., CVPR 2022; ImageNet rows: the official README) and only the",
        'demo rows have results of ours. Params and GFLOPs are ours, counted by',
        "`tools/get_flops.py` (mmengine's counter plus attention; one multiply-add is one",
        'FLOP; mask heads on 100 RoIs). "not run": never trained here.', '',
        'Train and test any row (8 GPUs; see [train_test.md](train_test.md)):', '',
        '```bash',
        'bash tools/dist_train.sh configs/NAME.py 8',
        'bash tools/dist_test.sh configs/NAME.py work_dirs/NAME/epoch_12.pth 8',
        '```', '',
        'The AttNet rows (ATConv, Yu et al., 2025) sit beside the ACmix models they are',
        'compared with (T1 beside PVT-ACmix-T, T2 beside Swin-ACmix-T); its authors report',
        'no detection or segmentation results.', '',
    ]
    names = config_names()
    header = ('| config | schedule | input | params (M) | GFLOPs | paper params (M) | '
              'paper GFLOPs | paper | ours |')
    for key, title, metric in TASKS:
        lines += [f'## {title}', '', f'Metric: {metric}.', '', header,
                  '|---|---|---|---|---|---|---|---|---|']
        for name in names:
            if task(name) == key:
                lines.append('| ' + ' | '.join([f'`{name}`'] + cells(name, latest)) + ' |')
        lines.append('')
    lines += NOTES.splitlines()
    return '\n'.join(lines) + '\n'


def render_readme_results(all_records):
    """The README's results block: the configs with a paper metric, one table per task."""
    latest = records.latest(all_records)
    lines = []
    for key, title, metric in TASKS[:3]:
        lines += [f'**{title}**, {metric}:', '',
                  '| config | schedule | params (M) | GFLOPs | paper GFLOPs | paper | ours |',
                  '|---|---|---|---|---|---|---|']
        for name in config_names():
            if task(name) == key and name in PAPER:
                sched, _, params, gflops, _, paper_gflops, paper, ours = cells(name, latest)
                paper = paper.rsplit(' (', 1)[0]
                sched = sched.split(' (')[0]
                lines.append(f'| {name} | {sched} | {params} | {gflops} | {paper_gflops} | '
                             f'{paper} | {ours} |')
        lines.append('')
    return '\n'.join(lines).rstrip('\n') + '\n'


def outputs(all_records):
    """{path: text} of everything this tool writes."""
    readme = open(README).read()
    return {ZOO: render_zoo(all_records),
            README: records.replace_block(readme, 'results',
                                          render_readme_results(all_records), REGENERATE)}


def count(names):
    """Count each config as tools/get_flops.py does; append params and GFLOPs records."""
    from mmengine.config import Config

    from acmix_mm.analysis import count_config
    for name in names:
        print(name, flush=True)
        cfg = Config.fromfile(osp.join(ROOT, 'configs', name + '.py'))
        flops, params, (height, width) = count_config(cfg)
        command = f'python tools/get_flops.py configs/{name}.py'
        details = dict(input=f'{height}x{width}')
        records.write('flops', [
            records.make(f'params.{name}', round(params / 1e6, 2), 'M',
                         f'{name}: parameters', command, details),
            records.make(f'gflops.{name}', round(flops / 1e9, 1), 'G',
                         f'{name}: GFLOPs at {height}x{width}', command, details)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='exit 1 when a page differs from what the records give')
    parser.add_argument('--count', nargs='*', metavar='NAME',
                        help='count these configs (default: all) and record them first')
    parser.add_argument('--missing-only', action='store_true',
                        help='with --count: only configs without a params record')
    args = parser.parse_args(argv)
    if args.count is not None:
        names = args.count or config_names()
        if args.missing_only:
            latest = records.latest(records.read(records.REPO_RESULTS))
            names = [n for n in names if f'params.{n}' not in latest]
        count(names)
    return records.write_pages(outputs(records.read(records.REPO_RESULTS)), args.check,
                               REGENERATE)


if __name__ == '__main__':
    sys.exit(main())
