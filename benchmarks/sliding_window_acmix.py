"""Sliding-window and patchwise ACmix: ours vs the unfold formulation.

    python benchmarks/sliding_window_acmix.py [--attention sliding|patchwise]
        [--channels 64] [--size 200 336] [--stride 1] [--repeat 3]

One forward + backward of one operator on a (1, C, H, W) map; the default is a
1333x800 image at stride 4. Each formulation runs in its own process. Memory is
measured twice: the peak that PyTorch's allocator holds during the step (every
allocation and free as the profiler records them; the same from run to run and from
machine to machine) and the growth of the process's resident set (which adds the C
library's allocator: its fragmentation moves this figure by up to a third between runs
of the same step). Time is the best of ``--repeat`` steps after the measured ones.
The unfold formulations are the straightforward references kept in the tests,
loaded with the same weights as ours: sliding windows (ResNet-ACmix) as the official
code computes them, keys and values unfolded k*k-fold
(acmix_mm/references/resnet_acmix.py); patchwise attention (SAN-ACmix, the block of its
first 7x7 stage: 4C input channels, C output, q and k C/4) as SAN's module with its
CuPy aggregation written with unfold (acmix_mm/references/san.py).
"""
import argparse
import multiprocessing as mp
import resource
import time

import torch

from acmix_mm import ops, records
from acmix_mm.analysis import device_name, peak_allocated_bytes


def build(kind, attention, channels, stride):
    """The layer, and the channels of its input."""
    torch.manual_seed(0)
    if attention == 'patchwise':
        from acmix_mm.references import san as ref
        reference = ref.ReferenceSAM(4 * channels, channels // 4, channels, acmix=True)
        if kind == 'ours':
            ours = ref.ours_from_reference(reference, 4 * channels, acmix=True)
            return lambda x: ref.tokens_forward(ours, x), 4 * channels
        return reference, 4 * channels
    from acmix_mm.references import resnet_acmix as ref
    reference = ref.ReferenceACmix(channels, channels, stride=stride)
    if kind == 'unfold':
        return reference, channels
    return ref.ours_from_reference(reference, channels, channels, stride), channels


def measure(kind, attention, channels, size, stride, repeat, queue):
    torch.set_num_threads(torch.get_num_threads())
    layer, in_channels = build(kind, attention, channels, stride)
    # Warm up on a small map, so that library start-up (thread pools, kernel caches)
    # is not counted as the step's memory.
    layer(torch.randn(1, in_channels, 32, 32, requires_grad=True)).sum().backward()
    x = torch.randn(1, in_channels, *size, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = layer(x)
    out.sum().backward()
    resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    del out
    allocated = peak_allocated_bytes(lambda: layer(x).sum().backward())
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        layer(x).sum().backward()
        times.append(time.perf_counter() - start)
    # ru_maxrss is in KiB on Linux
    queue.put((min(times), allocated / 2**20, resident / 1024))


def run(kind, args):
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(kind, args.attention, args.channels,
                                             tuple(args.size), args.stride, args.repeat,
                                             queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--attention', choices=['sliding', 'patchwise'], default='sliding')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--size', type=int, nargs=2, default=[200, 336])
    parser.add_argument('--stride', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    if args.attention == 'patchwise' and args.stride != 1:
        parser.error('patchwise attention has stride 1 only (as SAN)')
    print(f'ACmix ({args.attention} attention) k_att 7, k_conv 3, {args.channels} '
          f'channels, {args.size[0]}x{args.size[1]}, stride {args.stride}; '
          f'forward+backward; torch {torch.__version__}, {torch.get_num_threads()} '
          f'threads, {device_name(torch.device("cpu"))}'
          f'{"; ours: " + ops.native_status() if args.attention == "sliding" else ""}')
    results = {}
    for kind in ('unfold', 'ours'):
        results[kind] = run(kind, args)
        seconds, allocated, resident = results[kind]
        print(f'  {kind:>6}: {seconds:7.3f} s   peak allocated {allocated:8.0f} MiB   '
              f'resident set growth {resident:8.0f} MiB')
    (t_ref, a_ref, r_ref), (t_ours, a_ours, r_ours) = results['unfold'], results['ours']
    print(f'speed-up {t_ref / t_ours:.1f}x, memory {a_ref / max(a_ours, 1):.1f}x less '
          f'allocated ({r_ref / max(r_ours, 1):.1f}x less resident set growth)')
    shape = f'{args.channels} channels, {args.size[0]}x{args.size[1]}'
    details = dict(seconds=[round(t_ours, 4), round(t_ref, 4)],
                   allocated_mib=[round(a_ours), round(a_ref)],
                   resident_mib=[round(r_ours), round(r_ref)], stride=args.stride,
                   order='ours, unfold')
    name = records.variant(
        'sliding_window' if args.attention == 'sliding' else 'patchwise',
        (args.channels, list(args.size), args.stride) != (64, [200, 336], 1)
        and f'c{args.channels}_{args.size[0]}x{args.size[1]}_s{args.stride}')
    records.write('sliding_window', [
        records.make(f'{name}.speedup', round(t_ref / t_ours, 2), 'x',
                     f'one {args.attention} ACmix ({shape}), forward+backward: unfold '
                     'time / ours', details=details),
        records.make(f'{name}.memory', round(a_ref / max(a_ours, 1), 2), 'x',
                     f'one {args.attention} ACmix ({shape}): unfold peak allocated / '
                     'ours', details=details)])


if __name__ == '__main__':
    main()
