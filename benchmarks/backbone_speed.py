"""ACmix backbones against their baselines: forward time, measured side by side.

    python benchmarks/backbone_speed.py [--size 800 1344] [--repeat 5] [--pairs swin pvt]
                                        [--deploy]

Swin-ACmix-T vs mmdet's Swin-T and PVT-ACmix-T vs mmdet's PVT-T, one image, eval mode,
no gradients. The two models of a pair run alternately, after a warm-up each, and the
best time of each is kept, so that both see the same machine state. Prints the times
and the ratio ACmix / baseline (issue target: at most 1.10 at 800x1344). ``--deploy``
fuses the ACmix convolution paths where that is cheaper (``acmix_mm.layers.fuse_acmix``).
"""
import argparse
import platform
import time

import torch
from mmdet.models.backbones import PyramidVisionTransformer, SwinTransformer

import acmix_mm  # noqa: F401
from acmix_mm.backbones import PVTACmix, SwinACmix
from acmix_mm.layers import fuse_acmix

PAIRS = {
    'swin': ('Swin-ACmix-T', lambda: SwinACmix('tiny'), 'Swin-T',
             lambda: SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2],
                                     num_heads=[3, 6, 12, 24])),
    'pvt': ('PVT-ACmix-T', lambda: PVTACmix('tiny'), 'PVT-T',
            lambda: PyramidVisionTransformer(num_layers=[2, 2, 2, 2])),
}


def best_times(models, x, repeat):
    times = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            model(x)  # warm-up
        for _ in range(repeat):
            for i, model in enumerate(models):
                start = time.perf_counter()
                model(x)
                times[i].append(time.perf_counter() - start)
    return [min(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=[800, 1344])
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--pairs', nargs='+', default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument('--deploy', action='store_true', help='fuse the ACmix models')
    args = parser.parse_args()
    print(f'1x3x{args.size[0]}x{args.size[1]}, forward, eval, best of {args.repeat}; '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{platform.processor() or platform.machine()}')
    x = torch.randn(1, 3, *args.size)
    for pair in args.pairs:
        name, build, base_name, build_base = PAIRS[pair]
        torch.manual_seed(0)
        models = [build().eval(), build_base()]
        models[1].eval()
        if args.deploy:
            fuse_acmix(models[0])
            name += ' (fused)'
        ours, base = best_times(models, x, args.repeat)
        print(f'  {name}: {ours:.3f} s   {base_name}: {base:.3f} s   '
              f'ratio {ours / base:.2f}')


if __name__ == '__main__':
    main()
