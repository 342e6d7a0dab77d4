"""The native operators against their PyTorch fallbacks and baselines, side by side in
one process: the ACmix layer of ResNet-ACmix (native, fallback) and the 3x3 convolution
it replaces; SAN's patchwise attention layer (native, fallback); and the training steps
of SAN-19 (native, fallback), SAN-ACmix-19 and mmdet's ResNet-50.

    python benchmarks/native_ops.py [--parts resnet-layer san-layer san-step]
                                    [--cases 64:200x336 256:50x84] [--stride 1]
                                    [--san-cases 256:128x160 1024:32x40]
                                    [--san-size 512 640] [--repeat 5] [--device cpu]

One forward + backward of each layer on a (1, C, H, W) map (64 channels at 200x336 is a
1333x800 image at stride 4; 256 at 50x84 the same image at stride 16; a SAN case names
the block's channels: its attention works on a quarter of them, 256 at 128x160 is
SAN-19's first 7x7 stage at 512x640). The training step is that of
``benchmarks/train_step.py`` (the backbone alone, batch 1; issue targets SAN-19 /
ResNet-50 at most 2.0, SAN-ACmix-19 / SAN-19 at most 1.10). The steps of a case run
alternately after a warm-up each and the best time of each is kept, so that all see the
same machine state; the ratios are what to compare between machines (times move with
the CPU and with whatever else it runs). Also the peak of the bytes held through
PyTorch's allocator during each layer step. On a CUDA device only the ResNet-ACmix layer
runs (SAN's native ops are CPU kernels): the native operator is the Triton kernel and
the fallback the masked fused attention; the figures get a ``.cuda`` suffix.
On the CPU the process keeps large freed blocks for reuse, as ``tools/train.py`` does
there (``acmix_mm/cpu_memory.py``; the records say so); ``ACMIX_MM_REUSE_FREED_MEMORY=0``
measures with glibc's defaults.
"""
import argparse

import torch
import torch.nn as nn

from acmix_mm import ops, records
from acmix_mm.analysis import best_times, device_name, peak_allocated_bytes
from acmix_mm.cpu_memory import allocator_note, reuse_freed_memory
from acmix_mm.layers import ACmix, TokenACmix

PARTS = ['resnet-layer', 'san-layer', 'san-step']


def parse_case(text):
    channels, size = text.split(':')
    height, width = size.lower().split('x')
    return int(channels), (int(height), int(width))


def cuda_peak_bytes(step, device):
    """Peak of the bytes allocated on ``device`` while ``step()`` runs, above what was
    allocated before."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def measure_steps(steps, modules, x, repeat):
    """Best times (s) and allocation peaks (MiB) of named steps, run alternately."""

    def reset():
        for module in modules:
            module.zero_grad(set_to_none=True)
        x.grad = None

    times = dict(zip(steps, best_times(list(steps.values()), repeat, x.device, reset=reset,
                                       warmup=1)))
    peaks = {}
    for name, step in steps.items():
        reset()
        peak = (cuda_peak_bytes(step, x.device) if x.device.type == 'cuda' else
                peak_allocated_bytes(step))
        peaks[name] = peak / 2**20
    return times, peaks


def measure(channels, size, stride, repeat, device=torch.device('cpu')):
    torch.manual_seed(0)
    layer = ACmix(channels, channels, stride=stride).to(device)
    conv = nn.Conv2d(channels, channels, 3, stride, 1, bias=False).to(device)
    x = torch.randn(1, channels, *size, device=device, requires_grad=True)

    def acmix_step():
        layer(x).sum().backward()

    steps = {'native': ops.with_native_ops(acmix_step, True),
             'fallback': ops.with_native_ops(acmix_step, False),
             'conv3x3': lambda: conv(x).sum().backward()}
    return measure_steps(steps, [layer, conv], x, repeat)


def measure_san_layer(channels, size, repeat):
    """SAN-19's attention layer (SAN, no convolution path) of a block of ``channels``,
    in training mode, from the block's tokens."""
    torch.manual_seed(0)
    mid = channels // 4
    layer = TokenACmix(mid, 4, dict(type='PatchwiseAttentionPath', kernel_size=7),
                       in_dims=channels, qk_dims=mid // 4, with_conv_path=False,
                       fc_bias=False)
    x = torch.randn(1, size[0] * size[1], channels, requires_grad=True)

    def san_step():
        layer(x, size).sum().backward()

    steps = {'native': ops.with_native_ops(san_step, True),
             'fallback': ops.with_native_ops(san_step, False)}
    return measure_steps(steps, [layer], x, repeat)


def measure_san_steps(size, repeat):
    """Training steps of SAN-19, SAN-ACmix-19 and ResNet-50, run alternately; then SAN-19's
    native and fallback steps, alternately."""
    from mmdet.models.backbones import ResNet

    from acmix_mm.backbones import SAN, SANACmix
    torch.manual_seed(0)
    models = {'SAN-19': SAN(19), 'SAN-ACmix-19': SANACmix(19), 'ResNet-50': ResNet(50)}
    for model in models.values():  # mmdet's train() returns None: not chained
        model.train()
    x = torch.randn(1, 3, *size)

    def train_step(model):
        return lambda: sum(out.sum() for out in model(x)).backward()

    steps = {'SAN-19': ops.with_native_ops(train_step(models['SAN-19']), True),
             'SAN-ACmix-19': ops.with_native_ops(train_step(models['SAN-ACmix-19']), True),
             'ResNet-50': train_step(models['ResNet-50'])}

    def reset():
        for model in models.values():
            model.zero_grad(set_to_none=True)

    times = dict(zip(steps, best_times(list(steps.values()), repeat, x.device, reset=reset,
                                       warmup=1)))
    # The fallback apart, beside SAN-19 alone: its far larger working set leaves the
    # caches cold for whichever step follows it (SAN-ACmix-19 / SAN-19 read 1.14 with
    # the fallback run between them, 1.07 in train_step.py in the same hour).
    fallback = {'SAN-19 (beside the fallback)': steps['SAN-19'],
                'SAN-19 fallback': ops.with_native_ops(train_step(models['SAN-19']), False)}
    times.update(zip(fallback, best_times(list(fallback.values()), repeat, x.device,
                                          reset=reset, warmup=1)))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', nargs='+', type=parse_case,
                        default=[(64, (200, 336)), (256, (50, 84))],
                        help='CHANNELS:HxW of each case')
    parser.add_argument('--stride', type=int, default=1)
    parser.add_argument('--parts', nargs='+', choices=PARTS,
                        help='what to measure (default: all; on CUDA resnet-layer)')
    parser.add_argument('--san-cases', nargs='+', type=parse_case,
                        default=[(256, (128, 160)), (1024, (32, 40))],
                        help='CHANNELS:HxW of each SAN block (san-layer)')
    parser.add_argument('--san-size', type=int, nargs=2, default=[512, 640],
                        help='input H W of the training steps (san-step)')
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--device', default='cpu',
                        help='cpu (the C++ operators) or cuda (the Triton kernels)')
    args = parser.parse_args()
    args.device = torch.device(args.device)
    cuda = args.device.type == 'cuda'
    args.parts = args.parts or (['resnet-layer'] if cuda else PARTS)
    if cuda and args.parts != ['resnet-layer']:
        parser.error('SAN\'s native ops are CPU kernels: on CUDA, --parts resnet-layer')
    if not (ops.triton_loaded() if cuda else ops.native_built()):
        parser.error(f'the native ops are needed here: {ops.native_status()}')
    if not cuda:  # as tools/train.py runs on the CPU
        reuse_freed_memory()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{device_name(args.device)}; best of {args.repeat}, alternated'
          f'{allocator_note()}')
    measured = []
    if 'resnet-layer' in args.parts:
        measured += resnet_layers(args)
    if 'san-layer' in args.parts:
        measured += san_layers(args)
    if 'san-step' in args.parts:
        measured += san_steps(args)
    records.write('native_ops', measured)


def resnet_layers(args):
    print(f'ACmix layer (ResNet-ACmix: k_att 7, 4 heads, k_conv 3, stride {args.stride}) '
          f'vs the 3x3 convolution it replaces; forward + backward, batch 1')
    measured = []
    for channels, size in args.cases:
        times, peaks = measure(channels, size, args.stride, args.repeat, args.device)
        conv = times['conv3x3']
        name = records.variant('native_ops', f'c{channels}_{size[0]}x{size[1]}',
                               args.stride != 1 and f's{args.stride}',
                               args.device.type == 'cuda' and 'cuda')
        details = dict(seconds={k: round(v, 4) for k, v in times.items()},
                       peak_allocated_mib={k: round(v) for k, v in peaks.items()})
        measured += [
            records.make(f'{name}.native_vs_conv3x3', round(times['native'] / conv, 2), 'x',
                         f'ResNet-ACmix layer, native op, {channels} channels at '
                         f'{size[0]}x{size[1]}, forward+backward / the 3x3 conv it replaces',
                         details=details, device=args.device),
            records.make(f'{name}.fallback_vs_native',
                         round(times['fallback'] / times['native'], 2), 'x',
                         f'ResNet-ACmix layer, {channels} channels at {size[0]}x{size[1]}: '
                         'PyTorch fallback time / native op time', details=details,
                         device=args.device)]
        print(f'  {channels} channels, {size[0]}x{size[1]}: native {1e3 * times["native"]:.0f} '
              f'ms, fallback {1e3 * times["fallback"]:.0f} ms, conv3x3 {1e3 * conv:.0f} ms; '
              f'native / conv3x3 {times["native"] / conv:.2f}, fallback / conv3x3 '
              f'{times["fallback"] / conv:.2f}, fallback / native '
              f'{times["fallback"] / times["native"]:.2f}; peak allocated MiB: native '
              f'{peaks["native"]:.0f}, fallback {peaks["fallback"]:.0f}, conv3x3 '
              f'{peaks["conv3x3"]:.0f}', flush=True)
    return measured


def san_layers(args):
    print('SAN\'s patchwise attention layer (k_att 7, share_planes 8; q and k of C/16, v '
          'of C/4), forward + backward, batch 1, native ops vs the PyTorch fallback')
    measured = []
    for channels, size in args.san_cases:
        times, peaks = measure_san_layer(channels, size, args.repeat)
        name = records.variant('native_ops.san_layer', f'c{channels}_{size[0]}x{size[1]}')
        details = dict(seconds={k: round(v, 4) for k, v in times.items()},
                       peak_allocated_mib={k: round(v) for k, v in peaks.items()})
        measured.append(records.make(
            f'{name}.fallback_vs_native', round(times['fallback'] / times['native'], 2), 'x',
            f'SAN patchwise layer of a {channels}-channel block at {size[0]}x{size[1]}: '
            'PyTorch fallback time / native ops time', details=details))
        print(f'  {channels} channels, {size[0]}x{size[1]}: native {1e3 * times["native"]:.0f} '
              f'ms, fallback {1e3 * times["fallback"]:.0f} ms, fallback / native '
              f'{times["fallback"] / times["native"]:.2f}; peak allocated MiB: native '
              f'{peaks["native"]:.0f}, fallback {peaks["fallback"]:.0f}', flush=True)
    return measured


def san_steps(args):
    size = tuple(args.san_size)
    text = f'{size[0]}x{size[1]}'
    print(f'Training step (backbone alone, 1x3x{text}, forward + backward)')
    times = measure_san_steps(size, args.repeat)
    ratios = {'san_vs_resnet50': ('SAN-19', 'ResNet-50'),
              'san_acmix_vs_san': ('SAN-ACmix-19', 'SAN-19'),
              'san_fallback_vs_native': ('SAN-19 fallback', 'SAN-19 (beside the fallback)')}
    details = dict(seconds={k: round(v, 3) for k, v in times.items()}, size=text)
    name = records.variant('native_ops.train_step', text != '512x640' and text)
    measured = []
    for key, (first, second) in ratios.items():
        ratio = times[first] / times[second]
        measured.append(records.make(f'{name}.{key}', round(ratio, 3), 'x',
                                     f'{first} / {second}, training step at {text}',
                                     details=details))
        print(f'  {first} / {second}: {times[first]:.3f} s / {times[second]:.3f} s = '
              f'{ratio:.2f}', flush=True)
    return measured


if __name__ == '__main__':
    main()
