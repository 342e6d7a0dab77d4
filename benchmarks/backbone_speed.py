"""Backbones side by side: forward time of each pair, and their ratio.

    python benchmarks/backbone_speed.py [--size 800 1344] [--repeat 5] [--device cpu]
                                        [--pairs swin pvt attnet-t1 attnet-t2] [--deploy]

Pairs: Swin-ACmix-T vs mmdet's Swin-T and PVT-ACmix-T vs mmdet's PVT-T (ACmix against
its baseline; issue target: ratio at most 1.10 at 800x1344), and ATConv against ACmix
at the sizes our configs compare them: AttNet-T1 vs PVT-ACmix-T, AttNet-T2 vs
Swin-ACmix-T. One image, eval mode, no gradients. The two models of a pair run
alternately, after a warm-up each, and the best time of each is kept, so that both see
the same machine state. Prints the times and the ratio first / second. ``--deploy``
fuses the ACmix convolution paths where that is cheaper (``acmix_mm.layers.fuse_acmix``).
On the CPU the process keeps large freed blocks for reuse, as the tools do there
(``acmix_mm/cpu_memory.py``; the records say so): without it, page faults on fresh
output maps took about half of both models' forward time at 800x1344.
"""
import argparse

import torch
from mmdet.models.backbones import PyramidVisionTransformer, SwinTransformer

import acmix_mm  # noqa: F401
from acmix_mm import records
from acmix_mm.analysis import best_times, device_name
from acmix_mm.backbones import AttNet, PVTACmix, SwinACmix
from acmix_mm.cpu_memory import allocator_note, reuse_freed_memory
from acmix_mm.layers import fuse_acmix

PAIRS = {
    'swin': ('Swin-ACmix-T', lambda: SwinACmix('tiny'), 'Swin-T',
             lambda: SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2],
                                     num_heads=[3, 6, 12, 24])),
    'pvt': ('PVT-ACmix-T', lambda: PVTACmix('tiny'), 'PVT-T',
            lambda: PyramidVisionTransformer(num_layers=[2, 2, 2, 2])),
    'attnet-t1': ('AttNet-T1', lambda: AttNet('t1'), 'PVT-ACmix-T',
                  lambda: PVTACmix('tiny')),
    'attnet-t2': ('AttNet-T2', lambda: AttNet('t2'), 'Swin-ACmix-T',
                  lambda: SwinACmix('tiny')),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=[800, 1344])
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--pairs', nargs='+', default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--deploy', action='store_true',
                        help='fuse the ACmix convolution paths of both models')
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cpu':  # as the tools run on the CPU
        reuse_freed_memory()
    where = device_name(device)
    print(f'1x3x{args.size[0]}x{args.size[1]}, forward, eval, best of {args.repeat}; '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'device {device.type} ({where}){allocator_note()}')
    x = torch.randn(1, 3, *args.size, device=device)
    results = []
    for pair in args.pairs:
        names = list(PAIRS[pair][0::2])
        torch.manual_seed(0)
        models = [build().to(device) for build in PAIRS[pair][1::2]]
        for model in models:  # mmdet's train() (and so eval()) returns None
            model.eval()
        if args.deploy:
            for i, model in enumerate(models):
                if fuse_acmix(model):
                    names[i] += ' (fused)'
        with torch.no_grad():
            first, second = best_times([lambda m=m: m(x) for m in models], args.repeat,
                                       device, warmup=1)
        print(f'  {names[0]}: {first:.3f} s   {names[1]}: {second:.3f} s   '
              f'ratio {first / second:.2f}', flush=True)
        size = f'{args.size[0]}x{args.size[1]}'
        results.append(records.make(
            records.variant(f'backbone_forward.{pair}', args.deploy and 'deploy',
                            list(args.size) != [800, 1344] and size,
                            device.type == 'cuda' and 'cuda'),
            round(first / second, 3), 'x', f'{names[0]} / {names[1]}, backbone forward '
            f'at {size}', details=dict(seconds=[round(first, 4), round(second, 4)],
                                        size=size, repeat=args.repeat), device=device))
    records.write('backbone_forward', results)


if __name__ == '__main__':
    main()
