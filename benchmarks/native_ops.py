"""The ACmix layer of ResNet-ACmix on the native sliding-window operator, on the
PyTorch fallback, and the 3x3 convolution it replaces, side by side in one process.

    python benchmarks/native_ops.py [--cases 64:200x336 256:50x84] [--stride 1]
                                    [--repeat 5] [--device cpu]

One forward + backward of each on a (1, C, H, W) map (64 channels at 200x336 is a
1333x800 image at stride 4; 256 at 50x84 the same image at stride 16). The three steps
run alternately after a warm-up each and the best time of each is kept, so that all see
the same machine state; the ratios are what to compare between machines (times move
with the CPU and with whatever else it runs). Also the peak of the bytes held through
PyTorch's allocator during each step. On a CUDA device the native operator is the Triton
kernel and the fallback the masked fused attention; the figures get a ``.cuda`` suffix.
"""
import argparse

import torch
import torch.nn as nn

from acmix_mm import ops, records
from acmix_mm.analysis import best_times, device_name, peak_allocated_bytes
from acmix_mm.layers import ACmix


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


def measure(channels, size, stride, repeat, device=torch.device('cpu')):
    torch.manual_seed(0)
    layer = ACmix(channels, channels, stride=stride).to(device)
    conv = nn.Conv2d(channels, channels, 3, stride, 1, bias=False).to(device)
    x = torch.randn(1, channels, *size, device=device, requires_grad=True)

    def acmix_step(native):
        def step():
            with ops.native_ops(native):
                layer(x).sum().backward()
        return step

    steps = {'native': acmix_step(True), 'fallback': acmix_step(False),
             'conv3x3': lambda: conv(x).sum().backward()}

    def reset():
        layer.zero_grad(set_to_none=True)
        conv.zero_grad(set_to_none=True)
        x.grad = None

    times = dict(zip(steps, best_times(list(steps.values()), repeat, x.device, reset=reset,
                                       warmup=1)))
    peaks = {}
    for name, step in steps.items():
        reset()
        peak = (cuda_peak_bytes(step, device) if device.type == 'cuda' else
                peak_allocated_bytes(step))
        peaks[name] = peak / 2**20
    return times, peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', nargs='+', type=parse_case,
                        default=[(64, (200, 336)), (256, (50, 84))],
                        help='CHANNELS:HxW of each case')
    parser.add_argument('--stride', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--device', default='cpu',
                        help='cpu (the C++ operator) or cuda (the Triton kernels)')
    args = parser.parse_args()
    device = torch.device(args.device)
    if not (ops.triton_loaded() if device.type == 'cuda' else ops.native_built()):
        parser.error(f'the native ops are needed here: {ops.native_status()}')
    print(f'ACmix layer (ResNet-ACmix: k_att 7, 4 heads, k_conv 3, stride {args.stride}) '
          f'vs the 3x3 convolution it replaces; forward + backward, batch 1, best of '
          f'{args.repeat}, alternated; torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, {device_name(device)}')
    measured = []
    for channels, size in args.cases:
        times, peaks = measure(channels, size, args.stride, args.repeat, device)
        conv = times['conv3x3']
        name = records.variant('native_ops', f'c{channels}_{size[0]}x{size[1]}',
                               args.stride != 1 and f's{args.stride}',
                               device.type == 'cuda' and 'cuda')
        details = dict(seconds={k: round(v, 4) for k, v in times.items()},
                       peak_allocated_mib={k: round(v) for k, v in peaks.items()})
        measured += [
            records.make(f'{name}.native_vs_conv3x3', round(times['native'] / conv, 2), 'x',
                         f'ResNet-ACmix layer, native op, {channels} channels at '
                         f'{size[0]}x{size[1]}, forward+backward / the 3x3 conv it replaces',
                         details=details, device=device),
            records.make(f'{name}.fallback_vs_native',
                         round(times['fallback'] / times['native'], 2), 'x',
                         f'ResNet-ACmix layer, {channels} channels at {size[0]}x{size[1]}: '
                         'PyTorch fallback time / native op time', details=details,
                         device=device)]
        print(f'  {channels} channels, {size[0]}x{size[1]}: native {1e3 * times["native"]:.0f} '
              f'ms, fallback {1e3 * times["fallback"]:.0f} ms, conv3x3 {1e3 * conv:.0f} ms; '
              f'native / conv3x3 {times["native"] / conv:.2f}, fallback / conv3x3 '
              f'{times["fallback"] / conv:.2f}, fallback / native '
              f'{times["fallback"] / times["native"]:.2f}; peak allocated MiB: native '
              f'{peaks["native"]:.0f}, fallback {peaks["fallback"]:.0f}, conv3x3 '
              f'{peaks["conv3x3"]:.0f}', flush=True)
    records.write('native_ops', measured)


if __name__ == '__main__':
    main()
