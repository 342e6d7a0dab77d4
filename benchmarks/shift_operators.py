"""Shift and sum of the ACmix convolution path: tensor shifts vs one group convolution.

    python benchmarks/shift_operators.py [--repeat 10] [--device cpu|cuda] [--batch 1]
                                         [--threads N] [--shapes C,HEADS,H,W ...]

Table 7 of the paper (Sec. 4.3) on our operator. The convolution path turns the Stage I
projection into k*k maps per channel d (fc output, shape (B, H*W, head_dims, k*k)); they
are shifted by (i - k//2, j - k//2), shift s = i*k + j, with zero filling, and summed.
Two implementations of that step, from the fc output to the tokens F_conv (B, H*W, C):

* tensor shifts (Fig. 3a): the maps are zero-padded once with ``F.pad`` and each shift
  is a slice of the padded maps, summed over the k*k shifts (no loop over channels).
  Two layouts are timed: channels-last, as the fc writes the maps, and NCHW
  (B, head_dims, k*k, H, W), as the official code lays them out. The sum has
  head_dims channels; like the group conv with exact shift kernels, it is repeated for
  the num_heads outputs of each group (Fig. 3c.III);
* group conv (Fig. 3c): ``ShiftConvPath.dep_conv``, head_dims groups of k*k inputs,
  applied to the channels-last maps exactly as ``ShiftConvPath.forward`` does, with
  its shift-initialised, learnable kernels (so forward+backward also computes the
  kernels' gradient, as in training).

Both are checked to give the same output and input gradient before timing. Forward is
timed under ``torch.no_grad`` (inference, as the FPS of Table 7), forward+backward
separately with a fixed random output gradient. The implementations run alternately,
after a warm-up each, and the best of ``--repeat`` times is kept, so that all see the
same machine state. Prints the times and the ratio tensor shifts / group conv per shape
(above 1: the group conv is faster; the paper reports 419 / 313 FPS = 1.34 for the
whole Swin-ACmix-T on an RTX 2080 Ti). Runs on CUDA when available.

The default shapes are the operator's in backbones at 800x1344 (stride-4 maps 200x336):
Swin-ACmix-T stages 1 and 3, ResNet-ACmix stage 1 and PVT-ACmix-T stage 1.
"""
import argparse
import platform

import torch
import torch.nn.functional as F

from acmix_mm import records
from acmix_mm.analysis import best_times
from acmix_mm.layers import ShiftConvPath

KERNEL_SIZE = 3
LAYOUTS = ('channels-last', 'NCHW')
DEFAULT_SHAPES = (
    ('Swin-ACmix-T stage 1', 96, 3, 200, 336),
    ('Swin-ACmix-T stage 3', 384, 12, 50, 84),
    ('ResNet-ACmix stage 1', 64, 4, 200, 336),
    ('PVT-ACmix-T stage 1', 64, 1, 200, 336),
)


def tensor_shift(maps, hw_shape, num_heads, kernel_size=KERNEL_SIZE,
                 layout='channels-last'):
    """Shift and sum with tensor shifts: pad once, one slice per shift.

    Args:
        maps (Tensor): fc output, shape (B, H*W, head_dims, k*k).
        hw_shape (tuple[int]): (H, W).
        num_heads (int): Outputs per channel d (the sum is repeated num_heads times).
        kernel_size (int): k. Default: 3.
        layout (str): 'channels-last' pads and slices the maps as they are;
            'NCHW' pads them into (B, head_dims, k*k, H, W), as the official code.

    Returns:
        Tensor: F_conv, shape (B, H*W, head_dims * num_heads), contiguous; channel
        ``d * num_heads + h`` is the sum for channel d, as the group conv orders it.
    """
    batch, num_tokens, head_dims, num_shifts = maps.shape
    height, width = hw_shape
    pad = kernel_size // 2
    grid = maps.view(batch, height, width, head_dims, num_shifts)
    if layout == 'channels-last':
        padded = F.pad(grid.view(batch, height, width, -1), (0, 0, pad, pad, pad, pad))
        padded = padded.view(batch, height + 2 * pad, width + 2 * pad, head_dims,
                             num_shifts)

        def shifted(s):  # (B, H, W, d)
            i, j = divmod(s, kernel_size)
            return padded[:, i:i + height, j:j + width, :, s]
    elif layout == 'NCHW':
        padded = F.pad(grid.permute(0, 3, 4, 1, 2), (pad, pad, pad, pad))

        def shifted(s):  # (B, d, H, W)
            i, j = divmod(s, kernel_size)
            return padded[:, :, s, i:i + height, j:j + width]
    else:
        raise ValueError(f'layout must be one of {LAYOUTS}, not {layout!r}')
    out = shifted(0) + shifted(1) if num_shifts > 1 else shifted(0).clone()
    for s in range(2, num_shifts):
        out.add_(shifted(s))
    if layout == 'NCHW':
        out = out.permute(0, 2, 3, 1)
    return out.unsqueeze(-1).expand(batch, height, width, head_dims, num_heads).reshape(
        batch, num_tokens, head_dims * num_heads)


def group_conv_shift(path, maps, hw_shape):
    """Shift and sum with the group conv, as the end of ``ShiftConvPath.forward``.

    Args:
        path (ShiftConvPath): Holds ``dep_conv``.
        maps (Tensor): fc output, shape (B, H*W, head_dims, k*k).
        hw_shape (tuple[int]): (H, W).

    Returns:
        Tensor: F_conv, shape (B, H*W, embed_dims).
    """
    batch = maps.shape[0]
    height, width = hw_shape
    # (B, N, d, k*k) is channels-last for the groups (d, k*k): the permute is a view.
    grid = maps.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
    return path.dep_conv(grid).flatten(2).transpose(1, 2)


def check_same(path, maps, hw_shape, num_heads, kernel_size=KERNEL_SIZE):
    """Assert both layouts of tensor shifts give the group conv's output and gradient.

    ``path.dep_conv`` must hold exact shift kernels (as ``ShiftConvPath`` is built).
    TF32 is off meanwhile, so that the check is exact up to float rounding.
    """
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        maps = maps.detach().requires_grad_()
        grad = torch.randn(maps.shape[0], maps.shape[1], path.embed_dims,
                           device=maps.device)
        ref = group_conv_shift(path, maps, hw_shape)
        ref_grad, = torch.autograd.grad(ref, maps, grad)
        for layout in LAYOUTS:
            out = tensor_shift(maps, hw_shape, num_heads, kernel_size, layout)
            out_grad, = torch.autograd.grad(out, maps, grad)
            torch.testing.assert_close(out, ref, msg=lambda m: f'{layout} output: {m}')
            torch.testing.assert_close(out_grad, ref_grad,
                                       msg=lambda m: f'{layout} gradient: {m}')
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def measure(embed_dims, num_heads, hw_shape, batch, repeat, device):
    """Forward and forward+backward times of group conv and tensor shifts.

    Returns:
        dict: ``{'forward': [conv, *layouts], 'forward+backward': [...]}``, seconds,
        in the order ('group conv',) + LAYOUTS.
    """
    torch.manual_seed(0)
    path = ShiftConvPath(embed_dims, num_heads, KERNEL_SIZE).to(device)
    height, width = hw_shape
    maps = torch.randn(batch, height * width, path.head_dims, KERNEL_SIZE**2,
                       device=device)
    check_same(path, maps, hw_shape, num_heads)

    def forward(layout):
        if layout is None:
            return lambda: group_conv_shift(path, maps, hw_shape)
        return lambda: tensor_shift(maps, hw_shape, num_heads, KERNEL_SIZE, layout)

    layouts = (None, ) + LAYOUTS
    with torch.no_grad():
        fwd = best_times([forward(layout) for layout in layouts], repeat, device)

    leaf = maps.detach().requires_grad_()
    grad = torch.randn(batch, height * width, embed_dims, device=device)

    def train_step(layout):
        if layout is None:
            return lambda: group_conv_shift(path, leaf, hw_shape).backward(grad)
        return lambda: tensor_shift(leaf, hw_shape, num_heads, KERNEL_SIZE,
                                    layout).backward(grad)

    def reset():
        leaf.grad = None
        path.dep_conv.weight.grad = None

    bwd = best_times([train_step(layout) for layout in layouts], repeat, device, reset)
    return {'forward': fwd, 'forward+backward': bwd}


def parse_shape(text):
    try:
        embed_dims, num_heads, height, width = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected C,HEADS,H,W, got {text!r}')
    if min(embed_dims, num_heads, height, width) < 1 or embed_dims % num_heads:
        raise argparse.ArgumentTypeError(
            f'{text!r}: values must be positive and C divisible by HEADS')
    return ('custom', embed_dims, num_heads, height, width)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=10,
                        help='timed runs per implementation; the best is kept')
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int,
                        help='CPU threads (torch.set_num_threads); default: torch\'s')
    parser.add_argument('--shapes', type=parse_shape, nargs='+', metavar='C,HEADS,H,W',
                        help='shapes to time instead of the default backbone ones')
    args = parser.parse_args(argv)
    if min(args.repeat, args.batch) < 1 or (args.threads is not None
                                            and args.threads < 1):
        parser.error('--repeat, --batch and --threads must be at least 1')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda' else
             platform.processor() or platform.machine())
    print(f'ACmix shift and sum, k {KERNEL_SIZE}, batch {args.batch}, best of '
          f'{args.repeat}; torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'device {device.type} ({where})', flush=True)
    print('ratio = tensor shifts / group conv (above 1: group conv faster; paper, '
          'Table 7: whole Swin-ACmix-T 419 / 313 FPS = 1.34 on GPU)', flush=True)
    made = []
    for name, embed_dims, num_heads, height, width in args.shapes or DEFAULT_SHAPES:
        results = measure(embed_dims, num_heads, (height, width), args.batch,
                          args.repeat, device)
        print(f'{name}: C {embed_dims}, {num_heads} heads ({embed_dims // num_heads} '
              f'groups), {height}x{width}; outputs match')
        for mode, (conv, *shifts) in results.items():
            shift_text = '  '.join(f'{t * 1e3:8.2f} ms ({layout})'
                                   for t, layout in zip(shifts, LAYOUTS))
            ratio_text = ', '.join(f'{t / conv:.2f} ({layout})'
                                   for t, layout in zip(shifts, LAYOUTS))
            print(f'  {mode:<16}  group conv {conv * 1e3:8.2f} ms   tensor shifts '
                  f'{shift_text}')
            print(f'  {mode:<16}  ratio {ratio_text}', flush=True)
            where = (f'{name}, C {embed_dims}, {num_heads} heads, {height}x{width}'
                     if name == 'custom' else name)
            slug = '_'.join(where.replace(',', '').split()).lower()
            made.append(records.make(
                records.variant(f'shift.{slug}', args.batch != 1 and f'batch{args.batch}',
                                device.type == 'cuda' and 'cuda', mode.replace('+', '_')),
                round(shifts[0] / conv, 2), 'x',
                f'{where}: tensor shifts / group conv, {mode}',
                details=dict(group_conv_ms=round(conv * 1e3, 2),
                             tensor_shifts_ms=dict(zip(LAYOUTS, (round(t * 1e3, 2)
                                                                 for t in shifts))),
                             batch=args.batch, repeat=args.repeat), device=device))
    records.write('shift_operators', made)


if __name__ == '__main__':
    main()
