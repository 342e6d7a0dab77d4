"""ATConv against ACmix at equal input: cost and time of one token mixer.

    python benchmarks/atconv_vs_acmix.py [--channels 64] [--size 200 336] [--batch 1]
                                         [--repeat 5] [--device cpu|cuda]

Every mixer takes the same (B, C, H, W) map (default: 64 channels at 200x336, a
1333x800 image at stride 4) and returns a map of that shape:

* ATConv (AttNet's token mixer), ours: the kernel projection after the pooling;
* ATConv in the official order (project the whole map, then pool), the reference of
  acmix_mm/references/attnet.py with the same weights (checked to give the same output): what
  pooling first saves;
* ACmix with PVT's spatial-reduction attention (PVT-ACmix-T stage 1: 1 head, R 8);
* ACmix with Swin's shifted-window attention (a Swin-ACmix block's mixer, window 7,
  C/32 heads), including its norm, padding and shifts;
* ACmix with sliding-window attention (ResNet-ACmix, 7x7 windows, 4 heads).

For each: parameters, GFLOPs (``acmix_mm.analysis``, one multiply-add = one FLOP),
forward time (eval, no gradients) and forward+backward time (train mode, gradient of a
fixed random output gradient), and both times relative to our ATConv. The mixers run
alternately after a warm-up each and the best of ``--repeat`` is kept, so that all see
the same machine state. Runs on CUDA when available.
"""
import argparse
import platform

import torch
import torch.nn as nn

import acmix_mm  # noqa: F401
from acmix_mm import records
from acmix_mm.analysis import best_times, complexity
from acmix_mm.backbones.swin_acmix import SwinACmixBlock
from acmix_mm.layers import ACmix, ATConv, TokenACmix
from acmix_mm.references.attnet import ReferenceAttNet


class TokenMixer(nn.Module):
    """A token-layout mixer (tokens, hw_shape) -> tokens, run on an NCHW map."""

    def __init__(self, mixer, forward=None):
        super().__init__()
        self.mixer = mixer
        self.mix = forward or mixer

    def forward(self, x):
        batch, channels, height, width = x.shape
        tokens = self.mix(x.flatten(2).transpose(1, 2), (height, width))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


def build_mixers(channels):
    """(name, module) of every mixer, randomly initialised (seed 0)."""
    torch.manual_seed(0)
    atconv = ATConv(channels)
    official = ReferenceAttNet.ATConv(channels)
    official.load_state_dict({
        'kernel_proj.weight': atconv.kernel_proj.weight,
        'kernel_proj.bias': atconv.kernel_proj.bias,
        'kernel_gen.weight': atconv.kernel_gen.weight,
        'kernel_gen.bias': atconv.kernel_gen.bias,
        'x_proj.weight': atconv.value_proj.weight,
        'x_proj.bias': atconv.value_proj.bias,
        'proj.weight': atconv.out_proj.weight,
        'proj.bias': atconv.out_proj.bias,
        'difference_control': atconv.inhibition_logit,
    })
    pvt = TokenACmix(channels, 1, attn_path=dict(type='SpatialReductionAttentionPath',
                                                 sr_ratio=8))
    swin = SwinACmixBlock(channels, max(channels // 32, 1), 4 * channels, shift=True)
    return [  # the keys of MIXER_KEYS, in order
        ('ATConv (ours: pool, then project)', atconv),
        ('ATConv (official order: project, then pool)', official),
        ('ACmix, spatial-reduction attention (PVT, R 8)', TokenMixer(pvt)),
        ('ACmix, shifted windows (Swin, window 7)', TokenMixer(swin, swin.mix)),
        ('ACmix, sliding windows (ResNet, 7x7)', ACmix(channels, channels)),
    ]


# Record names of the mixers of build_mixers, in its order.
MIXER_KEYS = ('atconv', 'atconv_official', 'acmix_pvt', 'acmix_swin', 'acmix_sliding')


def measure(mixers, x, repeat, device):
    """Per mixer: (params, flops, forward s, forward+backward s)."""
    modules = [module.to(device) for _, module in mixers]
    with torch.no_grad():
        for module in modules:
            module.eval()
        expected = modules[0](x)
        torch.testing.assert_close(modules[1](x), expected, rtol=1e-4, atol=1e-4)
        costs = [complexity(module, (x, )) for module in modules]
        forward = best_times([lambda m=m: m(x) for m in modules], repeat, device)
    for module in modules:
        module.train()
    grad = torch.randn_like(expected)
    leaf = x.detach().requires_grad_()

    def reset():
        leaf.grad = None
        for module in modules:
            module.zero_grad(set_to_none=True)

    backward = best_times([lambda m=m: m(leaf).backward(grad) for m in modules], repeat,
                          device, reset)
    return [(params, flops, fwd, bwd)
            for (flops, params), fwd, bwd in zip(costs, forward, backward)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--size', type=int, nargs=2, default=[200, 336], metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    if min(args.channels, args.batch, args.repeat, *args.size) < 1 or args.channels % 32:
        parser.error('--channels must be a positive multiple of 32 (Swin heads of 32 '
                     'channels); sizes, batch and repeat positive')
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda' else
             platform.processor() or platform.machine())
    height, width = args.size
    print(f'token mixers on a {args.batch}x{args.channels}x{height}x{width} map, best of '
          f'{args.repeat}; torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'device {device.type} ({where})')
    mixers = build_mixers(args.channels)
    x = torch.randn(args.batch, args.channels, height, width, device=device)
    results = measure(mixers, x, args.repeat, device)
    print('ATConv: both orders give the same output')
    _, _, fwd0, bwd0 = results[0]
    width_name = max(len(name) for name, _ in mixers)
    print(f'{"mixer":<{width_name}}  params   GFLOPs  forward ms (x ATConv)  '
          f'fwd+bwd ms (x ATConv)')
    for (name, _), (params, flops, fwd, bwd) in zip(mixers, results):
        print(f'{name:<{width_name}}  {params / 1e3:5.1f}K  {flops / 1e9:6.2f}  '
              f'{fwd * 1e3:9.1f} ({fwd / fwd0:5.2f})    {bwd * 1e3:9.1f} ({bwd / bwd0:5.2f})',
              flush=True)
    shape = f'{args.batch}x{args.channels}x{height}x{width}'
    other = shape != '1x64x200x336' and shape
    records.write('atconv_vs_acmix', [
        records.make(records.variant(f'token_mixer.{key}', other,
                                     device.type == 'cuda' and 'cuda') + '.fwd_bwd_ms',
                     round(bwd * 1e3, 1), 'ms', f'{name} on a {shape} map, forward+backward',
                     details=dict(gflops=round(float(flops) / 1e9, 2),
                                  forward_ms=round(fwd * 1e3, 1),
                                  x_atconv=round(bwd / bwd0, 2), repeat=args.repeat),
                     device=device)
        for key, (name, _), (params, flops, fwd, bwd) in zip(MIXER_KEYS, mixers, results)])


if __name__ == '__main__':
    main()
