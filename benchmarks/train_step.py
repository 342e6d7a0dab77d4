"""Training cost of each ACmix backbone beside its baseline: step time and memory.

    python benchmarks/train_step.py [--size 512 640] [--repeat 3] [--device cpu]
                                    [--pairs resnet swin pvt swin-onednn pvt-onednn san
                                             san-vs-resnet] [--amp]

One training step of the backbone alone (forward, a sum of its outputs as the loss,
backward) on one 1x3xHxW image, in train mode. The two models of a pair run alternately
after a warm-up each and the best time of each is kept, so both see the same machine
state. Memory is what the step keeps for the backward pass: the bytes of the distinct
tensors autograd saves (the same on every machine; on CUDA the peak allocation is
printed too). Also the forward-only (eval, no gradients) time ratio. Issue target: every
ratio at most 1.10; SAN-19 within 2x of ResNet-50's step. ``--amp`` runs both models
under autocast (float16 on CUDA, as ``tools/train.py --amp``; bfloat16 on the CPU).
On the CPU the process keeps large freed blocks for reuse, as ``tools/train.py`` does
there (``acmix_mm/cpu_memory.py``; the records say so); ``ACMIX_MM_REUSE_FREED_MEMORY=0``
measures with glibc's defaults.
"""
import argparse

import torch
from mmdet.models.backbones import PyramidVisionTransformer, ResNet, SwinTransformer

import acmix_mm  # noqa: F401
from acmix_mm import ops, records
from acmix_mm.analysis import best_times, device_name, saved_bytes
from acmix_mm.backbones import SAN, PVTACmix, ResNetACmix, SANACmix, SwinACmix
from acmix_mm.cpu_memory import allocator_note, reuse_freed_memory
from acmix_mm.layers.linear import native_linears

PAIRS = {
    'resnet': ('ResNet-ACmix-50', lambda: ResNetACmix(50), 'ResNet-50',
               lambda: ResNet(50)),
    'swin': ('Swin-ACmix-T', lambda: SwinACmix('tiny'), 'Swin-T',
             lambda: SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2],
                                     num_heads=[3, 6, 12, 24])),
    'pvt': ('PVT-ACmix-T', lambda: PVTACmix('tiny'), 'PVT-T',
            lambda: PyramidVisionTransformer(num_layers=[2, 2, 2, 2])),
    # The ACmix backbones run their Linear layers through oneDNN (layers/linear.py),
    # mmdet's as shipped through F.linear (MKL; AVX2 kernels on AMD CPUs): these pairs
    # give the baseline the same products.
    'swin-onednn': ('Swin-ACmix-T', lambda: SwinACmix('tiny'), 'Swin-T (oneDNN linears)',
                    lambda: native_linears(
                        SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2],
                                        num_heads=[3, 6, 12, 24]))),
    'pvt-onednn': ('PVT-ACmix-T', lambda: PVTACmix('tiny'), 'PVT-T (oneDNN linears)',
                   lambda: native_linears(PyramidVisionTransformer(num_layers=[2, 2, 2, 2]))),
    'san': ('SAN-ACmix-19', lambda: SANACmix(19), 'SAN-19', lambda: SAN(19)),
    'san-vs-resnet': ('SAN-19', lambda: SAN(19), 'ResNet-50', lambda: ResNet(50)),
}


def train_step(model, x):
    outputs = model(x)
    sum(out.float().sum() for out in outputs).backward()


def cuda_peak(model, x, device):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    train_step(model, x)
    model.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated(device) - before


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=[512, 640])
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--pairs', nargs='+', default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument('--amp', action='store_true',
                        help='autocast: float16 on CUDA, bfloat16 on the CPU')
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cpu':  # as tools/train.py runs on the CPU
        reuse_freed_memory()
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    print(f'1x3x{args.size[0]}x{args.size[1]}, backbone training step (forward + '
          f'backward), best of {args.repeat}; torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, {device.type}: {device_name(device)}'
          f'{", autocast " + str(dtype).split(".")[1] if args.amp else ""}; attention: '
          f'{ops.native_status()}{allocator_note()}')
    x = torch.randn(1, 3, *args.size, device=device)
    # Both models of every pair under the same autocast, if any.
    results = []
    with torch.autocast(device.type, dtype=dtype, enabled=args.amp):
        for pair in args.pairs:
            results += measure_pair(pair, x, device, args.repeat, args)
    records.write('train_step', results)


def measure_pair(pair, x, device, repeat, args):
    """Measure one pair, print its line; returns its records (time, memory, forward)."""
    names = PAIRS[pair][0::2]
    torch.manual_seed(0)
    models = [build().to(device) for build in PAIRS[pair][1::2]]
    for model in models:  # mmdet's train() returns None: not chained
        model.train()

    def reset():
        for model in models:
            model.zero_grad(set_to_none=True)

    step = best_times([lambda m=m: train_step(m, x) for m in models], repeat,
                      device, reset=reset, warmup=1)
    memory = [saved_bytes(lambda m=m: m(x))[0] for m in models]
    for model in models:
        model.eval()
    with torch.no_grad():
        forward = best_times([lambda m=m: m(x) for m in models], repeat, device,
                             warmup=1)
    line = (f'  {names[0]} / {names[1]}: step {step[0]:.3f} s / {step[1]:.3f} s = '
            f'{step[0] / step[1]:.2f}; saved for backward {memory[0] / 2**20:.0f} / '
            f'{memory[1] / 2**20:.0f} MiB = {memory[0] / memory[1]:.2f}; forward '
            f'{forward[0] / forward[1]:.2f}')
    if device.type == 'cuda':
        for model in models:
            model.train()
        peak = [cuda_peak(m, x, device) for m in models]
        line += f'; CUDA peak {peak[0] / peak[1]:.2f}'
    print(line, flush=True)
    size = 'x'.join(map(str, x.shape))
    name = records.variant(f'train_step.{pair}', args.amp and 'amp',
                           list(args.size) != [512, 640] and size,
                           device.type == 'cuda' and 'cuda')
    pair_label = f'{names[0]} / {names[1]}'
    details = dict(seconds=[round(t, 4) for t in step],
                   saved_mib=[round(m / 2**20, 1) for m in memory],
                   forward_seconds=[round(t, 4) for t in forward], size=size,
                   repeat=repeat, amp=args.amp)
    return [records.make(f'{name}.time_ratio', round(step[0] / step[1], 3), 'x',
                         f'{pair_label}, training step time at {size}', details=details,
                         device=device),
            records.make(f'{name}.memory_ratio', round(memory[0] / memory[1], 3), 'x',
                         f'{pair_label}, memory kept for backward at {size}',
                         details=details, device=device),
            records.make(f'{name}.forward_ratio', round(forward[0] / forward[1], 3), 'x',
                         f'{pair_label}, forward time (eval) at {size}', details=details,
                         device=device)]


if __name__ == '__main__':
    main()
