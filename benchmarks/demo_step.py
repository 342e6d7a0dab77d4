"""The detection demo's training step against the same detector with the paper config's
256-channel neck and head, side by side in one process.

    python benchmarks/demo_step.py [--repeat 8] [--batch 4] [--size 256]

`configs/demo/retinanet_pvt_acmix_t_demo.py` narrows the neck and head of
`configs/retinanet_pvt_acmix_t_1x.py` to 128 channels so that `bash tools/demo.sh` trains
in about two thirds of the time. This measures that choice: one training step (forward,
backward, AdamW step) of each detector on the same synthetic batch at the demo's scale,
alternated after a warm-up each, the best of ``--repeat`` kept. Prints both times and
their ratio and records it (``demo.det.step_vs_paper_head``).
"""
import argparse
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from acmix_mm import records
from acmix_mm.analysis import best_times, data_samples_for

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs/demo/retinanet_pvt_acmix_t_demo.py')
PAPER_CHANNELS = 256  # configs/retinanet_pvt_acmix_t_1x.py (mmdet's RetinaNet)


def build(channels=None):
    """The demo detector in training mode, or with ``channels`` in its neck and head, and
    an AdamW optimizer of its parameters."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(DEMO)
    if channels:
        cfg.model.neck.out_channels = channels
        cfg.model.bbox_head.update(in_channels=channels, feat_channels=channels)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def synthetic_batch(model, batch, size):
    """Random images with two boxes each, through the model's data preprocessor."""
    from mmengine.structures import InstanceData
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(batch):
        sample = data_samples_for('mmdet', size, size)[0]
        boxes = torch.tensor([[0.05, 0.05, 0.3, 0.35], [0.4, 0.45, 0.8, 0.8]]) * size
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, 2]))
        samples.append(sample)
    images = list(torch.rand(batch, 3, size, size, generator=generator) * 255)
    return model.data_preprocessor(dict(inputs=images, data_samples=samples), True)


def training_step(model, optimizer, data):
    def step():
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeat', type=int, default=8)
    parser.add_argument('--batch', type=int, default=4, help="the demo's batch size")
    parser.add_argument('--size', type=int, default=256, help="the demo's image scale")
    args = parser.parse_args(argv)
    import acmix_mm  # noqa: F401  (registers the backbones)
    device = torch.device('cpu')
    demo, paper = build(), build(PAPER_CHANNELS)
    steps = [training_step(*model, synthetic_batch(model[0], args.batch, args.size))
             for model in (demo, paper)]
    demo_s, paper_s = best_times(steps, args.repeat, device)
    ratio = demo_s / paper_s
    print(f'torch {torch.__version__}, {records.machine()}; best of {args.repeat}, '
          'alternated')
    print(f'Detection demo training step, batch {args.batch} at {args.size}x{args.size}: '
          f'128-channel neck and head {demo_s:.3f} s / {PAPER_CHANNELS} channels '
          f'{paper_s:.3f} s = {ratio:.2f}')
    figure = records.variant('demo.det.step_vs_paper_head',
                             (args.batch, args.size) != (4, 256) and
                             f'b{args.batch}_{args.size}')
    records.record('demo_step', figure, round(ratio, 2), 'x',
                   "detection demo's training step / the same with the paper's "
                   f'{PAPER_CHANNELS}-channel neck and head',
                   details=dict(seconds=[round(demo_s, 4), round(paper_s, 4)],
                                batch=args.batch, size=args.size, repeat=args.repeat))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
