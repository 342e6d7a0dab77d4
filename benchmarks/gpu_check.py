"""What a GPU machine checks of acmix_mm, in one process: each backbone on CUDA against
the CPU, the Triton kernels (attention, patch aggregation) against the unfold
definitions at real sizes, the layer compiled, and a few float16 autocast training
steps. Run by benchmarks/gpu_check.sh
(which installs and builds first; see docs/get_started.md), or alone:

    python benchmarks/gpu_check.py [--device cuda] [--dry-run]
                                   [--only backbones kernels aggregation compile amp]

Every check writes a record (``gpu_check.*``: the error against its tolerance, with
the details) and prints one line; the exit status is 1 when any check failed, after all
ran. ``--dry-run`` runs the same checks on tiny shapes, for the CPU
(``--device cpu``: the Triton kernels then need ``TRITON_INTERPRET=1``), so that the
script itself is tested without a GPU.
"""
import argparse
import copy
import sys
import time

import torch
import torch.nn.functional as F

import acmix_mm  # noqa: F401  (registers the backbones)
from acmix_mm import ops, records
from acmix_mm.analysis import device_name
from acmix_mm.backbones import AttNet, PVTACmix, ResNetACmix, SANACmix, SwinACmix
from acmix_mm.layers import ACmix

# Small members of each family (as tests/test_backbone_contract.py) and the least input
# side each takes (SAN's last stage must stay above the reflection limit): the check is
# about the operators on the device, not the sizes. The GPU check runs them at 160
# (a 5x5 last stage: odd maps, just above the limit).
BACKBONES = {
    'ResNetACmix': (lambda: ResNetACmix(26), 64),
    'SANACmix': (lambda: SANACmix(10), 128),
    'PVTACmix': (lambda: PVTACmix('tiny'), 64),
    'SwinACmix': (lambda: SwinACmix(dict(embed_dims=32, depths=[2, 2, 2, 2],
                                         num_heads=[2, 4, 4, 8])), 64),
    'AttNet': (lambda: AttNet('xxs'), 64),
}
GPU_SIDE = 160
STAGES = ['backbones', 'kernels', 'aggregation', 'compile', 'amp']
# (channels, map size, stride, window) of the kernel check: ResNet-ACmix's first stage
# on a 1333x800 image (stride 4), its third (stride 16), and a strided block. The dry
# run's window is 3 (the interpreter takes seconds per 7x7 case).
KERNEL_CASES = [(64, (200, 336), 1, 7), (256, (50, 84), 1, 7), (64, (200, 336), 2, 7)]
DRY_KERNEL_CASES = [(8, (5, 6), 2, 3)]
# (channels, map size, patch side) of the patch aggregation's check: SAN-19's first
# stage (64 channels in 8 groups) on a 1333x800 image, and its third.
AGGREGATE_CASES = [(64, (200, 336), 7), (256, (50, 84), 7)]
DRY_AGGREGATE_CASES = [(16, (5, 6), 3)]
# Largest error, relative to the largest magnitude of the exact result, that each dtype
# may leave: float32 rounding over a 49-term sum; float16 and bfloat16 a few units of
# their last place (the kernels accumulate in float32 and round once at the end).
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 4e-3,
              torch.bfloat16: 3e-2}


def relative_error(got, expected):
    """max |got - expected| / max |expected| (in float64)."""
    expected = expected.double()
    return ((got.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30)
            ).item()


class Checks:
    """Collects the records and the failures of the checks."""

    def __init__(self, device):
        self.device = device
        self.records = []
        self.failed = []

    def add(self, figure, error, tolerance, label, **details):
        passed = error <= tolerance
        print(f'  {"ok  " if passed else "FAIL"} {figure}: {error:.3g} (tolerance '
              f'{tolerance:.3g})', flush=True)
        self.records.append(records.make(
            f'gpu_check.{figure}', float(f'{error:.4g}'), 'rel', label,
            details=dict(tolerance=tolerance, passed=passed, **details),
            device=self.device))
        if not passed:
            self.failed.append(figure)


def forward_and_input_grad(model, x):
    """The outputs and the input's gradient of a fixed random projection of them (the
    same on every device: made on the CPU from a seed). A linear loss, because a loss
    such as the outputs' mean square turns float32 rounding into input gradients 1%
    apart for Swin-ACmix on the same CPU (ill-conditioned), which would hide the
    operators' errors."""
    x = x.detach().requires_grad_()
    outs = model(x)
    generator = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(out.shape, generator=generator).to(out) for out in outs]
    (grad, ) = torch.autograd.grad(outs, x, cotangents)
    return [out.detach() for out in outs], grad


def check_backbones(checks, device, dry_run):
    """Each backbone in float32 on ``device`` (the native path, then the fallback)
    against its run on the CPU: outputs and the input's gradient."""
    for name, (build, least_side) in BACKBONES.items():
        torch.manual_seed(0)
        model = build()
        model.eval()
        side = least_side if dry_run else GPU_SIDE
        x = torch.randn(2, 3, side, side)
        expected_outs, expected_grad = forward_and_input_grad(model, x)
        on_device = copy.deepcopy(model).to(device)
        for native in (True, False):
            with ops.native_ops(native):
                outs, grad = forward_and_input_grad(on_device, x.to(device))
            errors = [relative_error(o.cpu(), e) for o, e in zip(outs, expected_outs)]
            grad_error = relative_error(grad.cpu(), expected_grad)
            path = 'native' if native else 'fallback'
            checks.add(f'backbone.{name}.{path}', max(errors + [grad_error / 10]), 1e-4,
                       f'{name} on {device.type} ({path} attention) vs the CPU: outputs '
                       'and input gradient / 10, float32, relative to the largest value',
                       outputs=errors, input_grad=grad_error, status=ops.native_status(),
                       shape=list(x.shape))


def padded_inputs(channels, size, stride, kernel_size, heads=4, device='cpu'):
    """q, k, v planes of one image as the layer makes them: (heads, d, H', W') queries,
    keys and values padded by reflection for the window, float64."""
    generator = torch.Generator().manual_seed(0)
    dims, pad = channels // heads, kernel_size // 2
    maps = torch.randn(3, heads, dims, *size, dtype=torch.float64, generator=generator)
    query = maps[0, :, :, ::stride, ::stride].contiguous()
    key, value = F.pad(maps[1:].flatten(0, 1), (pad, ) * 4, mode='reflect').view(
        2, heads, dims, size[0] + 2 * pad, size[1] + 2 * pad)
    return [x.to(device) for x in (query, key, value)], dims**-0.5


def kernel_call(device):
    """The sliding-window attention op that serves ``device`` (the Triton op on CUDA;
    on the CPU too in a dry run, under the Triton interpreter)."""
    from acmix_mm.ops import triton_window  # noqa: F401  (registers the op on the CPU)
    return torch.ops.acmix_mm.triton_sliding_window_attention


def check_in_each_dtype(checks, figure, label, op, reference, exact, grad, names):
    """``op`` against ``reference`` (in float64 on the same rounded inputs) in each dtype
    of TOLERANCES: the worst relative error of the output and the inputs' gradients.

    Args:
        checks (Checks): Where the records go.
        figure (str): The figure's name; the dtype is appended.
        label (str): What is compared; the dtype is appended.
        op, reference (callable): Tensors in, one tensor out.
        exact (list[Tensor]): The inputs in float64.
        grad (Tensor): The output's gradient in float64.
        names (list[str]): Of the output and the gradients, for the details.
    """
    for dtype, tolerance in TOLERANCES.items():
        inputs = [x.to(dtype).requires_grad_() for x in exact]
        rounded = [x.detach().double().requires_grad_() for x in inputs]
        expected = reference(*rounded)
        expected_grads = torch.autograd.grad(expected, rounded, grad)
        start = time.perf_counter()
        out = op(*inputs)
        grads = torch.autograd.grad(out, inputs, grad.to(dtype))
        seconds = time.perf_counter() - start
        errors = dict(zip(names, [relative_error(a, b) for a, b in zip(
            (out, ) + grads, (expected, ) + expected_grads)]))
        checks.add(f'{figure}.{str(dtype).split(".")[1]}', max(errors.values()), tolerance,
                   f'{label}, {dtype} vs the unfold definition in float64: worst of output '
                   'and gradients', errors=errors, first_call_seconds=round(seconds, 3))
        del expected, expected_grads, rounded
    if exact[0].device.type == 'cuda':
        torch.cuda.empty_cache()


def check_kernels(checks, device, cases):
    """The Triton sliding-window attention against the unfold definition: output and
    the three gradients, in each dtype."""
    op = kernel_call(device)
    for channels, size, stride, kernel_size in cases:
        exact, scale = padded_inputs(channels, size, stride, kernel_size, device=device)
        grad = torch.randn(exact[0].shape, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(1)).to(device)
        case = (f'c{channels}_{size[0]}x{size[1]}' + (f'_s{stride}' if stride > 1 else '') +
                (f'_k{kernel_size}' if kernel_size != 7 else ''))
        options = (kernel_size, stride, scale)
        check_in_each_dtype(
            checks, f'kernel.{case}', f'Triton sliding-window attention, {kernel_size}x'
            f'{kernel_size} window, {channels} channels (4 heads) at {size[0]}x{size[1]}, '
            f'stride {stride}', lambda *x: op(*x, *options)[0],
            lambda *x: ops.sliding_window_attention_reference(*x, *options), exact, grad,
            ['out', 'dq', 'dk', 'dv'])


def check_aggregation(checks, device, cases):
    """The Triton patch aggregation against the unfold definition: output and the four
    gradients, in each dtype."""
    from acmix_mm.ops import triton_patchwise  # noqa: F401  (registers the op on the CPU)
    generator = torch.Generator().manual_seed(0)
    for channels, size, kernel_size in cases:
        groups = channels // 8  # SAN's share_planes
        shapes = ((2, channels, size[0] + kernel_size - 1, size[1] + kernel_size - 1),
                  (2, groups, *size), (groups * kernel_size**2, groups),
                  (groups * kernel_size**2, ), (2, channels, *size))
        *exact, grad = [torch.randn(*shape, dtype=torch.float64, generator=generator)
                        .to(device) for shape in shapes]
        check_in_each_dtype(
            checks, f'aggregate.c{channels}_{size[0]}x{size[1]}_k{kernel_size}',
            f'Triton patch aggregation (SAN), {kernel_size}x{kernel_size} patches, '
            f'{channels} channels in {groups} groups at {size[0]}x{size[1]}, batch 2',
            lambda *x: torch.ops.acmix_mm.triton_patch_aggregate(*x, kernel_size),
            lambda *x: ops.patch_aggregate_reference(*x, kernel_size), exact, grad,
            ['out', 'dvalue', 'dhidden', 'dweight', 'dbias'])


def check_compiled_layer(checks, device, side):
    """torch.compile traces the layer with the op in one graph (fullgraph): forward and
    backward equal eager."""
    torch.manual_seed(0)
    layer = ACmix(32, 32, stride=2).to(device)
    x = torch.randn(2, 32, side, side + 3, device=device, requires_grad=True)
    compiled = torch.compile(layer, backend='aot_eager', fullgraph=True)
    out = compiled(x)
    (grad, ) = torch.autograd.grad(out.square().sum(), x)
    expected = layer(x)
    (expected_grad, ) = torch.autograd.grad(expected.square().sum(), x)
    checks.add('compile.ACmix', max(relative_error(out, expected),
                                    relative_error(grad, expected_grad)), 1e-5,
               'ACmix layer under torch.compile(fullgraph, aot_eager) vs eager, float32')


def check_amp_training(checks, device, dry_run, steps):
    """A few training steps of each backbone under autocast (float16 on CUDA with a
    gradient scaler, as ``tools/train.py --amp``; bfloat16 on the CPU): the losses and
    the weights stay finite and the scaler applies at least one step."""
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    for name, (build, least_side) in BACKBONES.items():
        torch.manual_seed(0)
        side = least_side if dry_run else GPU_SIDE
        model = build().to(device)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        losses, applied = [], 0
        for _ in range(steps):
            x = torch.randn(2, 3, side, side, device=device)
            with torch.autocast(device.type, dtype=dtype):
                loss = sum(out.float().square().mean() for out in model(x))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scale = scaler.get_scale() if scaler.is_enabled() else 1.0
            scaler.step(optimizer)
            scaler.update()
            new_scale = scaler.get_scale() if scaler.is_enabled() else 1.0
            applied += new_scale >= scale  # the scale drops only when a step is skipped
            losses.append(loss.item())
        finite = all(map(lambda v: v == v and abs(v) != float('inf'), losses)) and all(
            torch.isfinite(p).all().item() for p in model.parameters())
        checks.add(f'amp.{name}', 0.0 if finite and applied else 1.0, 0.0,
                   f'{name}: {steps} training steps under {dtype} autocast: 0 when losses '
                   'and weights stay finite and a step was applied, else 1',
                   losses=[round(v, 5) for v in losses], applied_steps=applied,
                   dtype=str(dtype))
        del model, optimizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dry-run', action='store_true',
                        help='tiny shapes (the CPU: TRITON_INTERPRET=1 for the kernels)')
    parser.add_argument('--only', nargs='+', choices=STAGES, default=STAGES,
                        help='the checks to run')
    args = parser.parse_args()
    device = torch.device(args.device)
    # Full float32 on the GPU, so that the comparisons see the operators, not TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f'acmix_mm GPU check on {device.type}: {device_name(device)}; torch '
          f'{torch.__version__}; attention: {ops.native_status()}', flush=True)
    checks = Checks(device)
    stages = [
        ('backbones', lambda: check_backbones(checks, device, args.dry_run)),
        ('kernels', lambda: check_kernels(
            checks, device, DRY_KERNEL_CASES if args.dry_run else KERNEL_CASES)),
        ('aggregation', lambda: check_aggregation(
            checks, device, DRY_AGGREGATE_CASES if args.dry_run else AGGREGATE_CASES)),
        ('compile', lambda: check_compiled_layer(checks, device, 9 if args.dry_run else 40)),
        ('amp', lambda: check_amp_training(checks, device, args.dry_run,
                                           1 if args.dry_run else 6)),
    ]
    for stage, run in stages:
        if stage not in args.only:
            continue
        start = time.perf_counter()
        print(f'{stage}:', flush=True)
        try:
            run()
        except Exception as err:  # noqa: BLE001  (one broken check must not hide the rest)
            print(f'  FAIL {stage}: {type(err).__name__}: {err}', flush=True)
            checks.failed.append(stage)
        print(f'  ({time.perf_counter() - start:.1f} s)', flush=True)
    records.write('gpu_check', checks.records)
    print(f'failed: {", ".join(checks.failed)}' if checks.failed else 'all checks passed',
          flush=True)
    sys.exit(1 if checks.failed else 0)


if __name__ == '__main__':
    main()
