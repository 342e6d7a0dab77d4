"""Measure the inference speed (images/s) of a config's whole model, as Table 5 of ACmix.

    python tools/benchmark.py CONFIG [--shape H W] [--batch N] [--iters N] [--warmup N]
        [--vs OTHER_CONFIG | --backend {onnxruntime,compile}] [--deploy]
        [--cfg-options k=v ...]

Builds the whole model as tools/get_flops.py does (every head; two-stage detectors run
their RoI heads on the RPN proposals; cascade mask heads on the first 100 RoIs), puts
it in eval mode and times its tensor-mode forward under ``torch.no_grad`` on random
images of the given size (default 576x576, the paper's Table 5 setting). No data set
and no weights are needed (``init_cfg`` is ignored). Runs on CUDA when available, else
on the CPU.

With ``--vs OTHER_CONFIG`` a baseline is measured in the same run: after both models
warm up they run alternately (A, B, A, B, ...) so that both see the same machine state,
and the ratio of their images/s is printed. ``--cfg-options`` apply to both configs.
Images/s is ``batch * iters`` over the total time of the timed iterations; the median
time of one iteration is printed too. Warm-up iterations are not timed.

With ``--backend onnxruntime`` the config's network (up to its raw head outputs, as
tools/export_onnx.py exports it; single-stage detectors and segmentors) runs through
ONNX Runtime beside PyTorch eager, measured alternately in the same run (for models
with native operators, ResNet-ACmix and SAN, eager also with the PyTorch fallback, the
path the native operators replaced: ONNX Runtime runs the export of that path); with
``--backend compile`` through ``torch.compile`` (its compilation falls in the warm-up).
"""
import argparse
import os.path as osp
import statistics
import sys

import torch
from mmengine.config import DictAction
from mmengine.utils import ProgressBar

from acmix_mm import ops, records
from acmix_mm.analysis import (
    TensorForward,
    data_samples_for,
    device_name,
    limit_mask_rois,
    timed,
)
from acmix_mm.deploy import RawOutputs, export_network, onnx_exporting
from acmix_mm.errors import ConfigError
from acmix_mm.layers import fuse_acmix
from acmix_mm.layers.attention_paths import PatchwiseAttentionPath, SlidingWindowAttentionPath
from acmix_mm.runner_utils import (
    check_input_shape,
    init_scope,
    load_config,
    run_with_clear_errors,
)

DEFAULT_SHAPE = (576, 576)


def build_runner(cfg, shape, batch, device, deploy=False, backend='eager'):
    """A callable running one inference step of the model of ``cfg``.

    Args:
        cfg (Config): A loaded mmdet or mmseg config.
        shape (tuple[int, int]): Input height and width.
        batch (int): Images per step.
        device (torch.device): Where the model and the inputs live.
        deploy (bool): Fuse ACmix convolution paths where cheaper. Default: False.
        backend (str): 'eager', 'compile' (torch.compile) or 'onnxruntime' (the raw
            network exported to ONNX, on the CPU). Default: 'eager'.

    Returns:
        tuple[Callable[[], Any], nn.Module]: A callable running the model's tensor-mode
        forward on a fixed batch, and the model.
    """
    init_scope(cfg)
    from mmengine.registry import MODELS
    height, width = shape
    model = MODELS.build(cfg.model).eval()
    if backend == 'onnxruntime' and not isinstance(export_network(model), RawOutputs):
        raise ConfigError(f'--backend onnxruntime times single-stage detectors and '
                          f'segmentors; {type(model).__name__} runs in parts (evaluate it '
                          'with tools/test.py CONFIG FILE.onnx).')
    # Same RoI budget for mask heads as the FLOPs count, close to real inference.
    limit_mask_rois(model)
    if deploy:
        fuse_acmix(model)
    samples = [s for _ in range(batch)
               for s in data_samples_for(cfg.default_scope, height, width)]
    wrapped = TensorForward(model, samples).to(device)
    # Random rather than zero pixels: no input-specific fast paths.
    inputs = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    inputs = inputs.to(device)
    if backend == 'compile':
        compiled = torch.compile(wrapped)
        return (lambda: compiled(inputs)), model
    if backend == 'onnxruntime':
        return onnxruntime_runner(model, inputs), model
    return (lambda: wrapped(inputs)), model


def holds_native_layers(model):
    """Whether ``model`` has layers that run native operators where they are on."""
    return any(isinstance(m, (SlidingWindowAttentionPath, PatchwiseAttentionPath))
               for m in model.modules())


def onnxruntime_runner(model, inputs):
    """Export the model's raw network at the inputs' size; run it in ONNX Runtime."""
    import tempfile

    import onnxruntime as ort
    path = osp.join(tempfile.mkdtemp(prefix='acmix_mm_benchmark_'), 'model.onnx')
    raw = RawOutputs(model).cpu().eval()
    with torch.no_grad(), onnx_exporting():
        torch.onnx.export(raw, (inputs.cpu(), ), dynamo=True, verbose=False).save(path)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: inputs.cpu().numpy()}
    return lambda: session.run(None, feed)


def benchmark(runners, iters, warmup, device):
    """Per-iteration times of each runner, the runners measured alternately.

    Args:
        runners (list[Callable]): One inference step per model.
        iters (int): Timed iterations per model.
        warmup (int): Untimed iterations per model before any timing.
        device (torch.device): The device the models run on.

    Returns:
        list[list[float]]: Seconds of each timed iteration, per runner.
    """
    bar = ProgressBar(len(runners) * (warmup + iters), file=sys.stderr)
    times = [[] for _ in runners]
    with torch.no_grad():
        for step in runners:
            for _ in range(warmup):
                step()
                bar.update()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        for _ in range(iters):
            # Interleaved so that drifts in the machine's state hit every model alike.
            for step, record in zip(runners, times):
                record.append(timed(step, device))
                bar.update()
    sys.stderr.write('\n')
    return times


def config_name(path):
    return osp.splitext(osp.basename(path))[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        default=DEFAULT_SHAPE, help='input size (default: 576 576)')
    parser.add_argument('--batch', type=int, default=1, help='images per iteration')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed iterations before timing')
    parser.add_argument('--vs', metavar='OTHER_CONFIG',
                        help='a baseline config measured in the same run')
    parser.add_argument('--deploy', action='store_true',
                        help='fuse ACmix convolution paths where cheaper (inference form)')
    parser.add_argument('--backend', choices=['onnxruntime', 'compile'],
                        help='measure the config through this backend beside PyTorch '
                        'eager')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        metavar='KEY=VALUE', help='override settings of both configs')
    args = parser.parse_args(argv)
    for name in ('batch', 'iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1')
    if args.warmup < 0:
        parser.error('--warmup must not be negative')
    if args.vs and args.backend:
        parser.error('--backend compares the config with its own eager run; drop --vs')

    paths = [args.config] + ([args.vs] if args.vs else [])
    return run_with_clear_errors(lambda: run_benchmark(args, paths))


def run_benchmark(args, paths):
    """Time the configs of ``paths`` side by side and print images/s and the ratio."""
    check_input_shape(args.shape)
    cfgs = [load_config(path, args.cfg_options) for path in paths]
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if args.backend == 'onnxruntime':
        device = torch.device('cpu')  # ONNX Runtime's CPU provider, beside eager on CPU
    where = device_name(device)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, device {where}; '
          f'sliding-window attention: {ops.native_status()}', flush=True)
    if args.backend:
        base = config_name(paths[0])
        names = [f'{base} ({args.backend})', f'{base} (eager)']
        runners = [build_runner(cfgs[0], args.shape, args.batch, device, args.deploy,
                                backend) for backend in (args.backend, 'eager')]
        eager, model = runners[1]
        if args.backend == 'onnxruntime' and ops.native_enabled() and holds_native_layers(
                model):
            names.append(f'{base} (eager, PyTorch fallback)')
            runners.append((ops.with_native_ops(eager, False), model))
    else:
        names = [config_name(path) for path in paths]
        runners = [build_runner(cfg, args.shape, args.batch, device, args.deploy)
                   for cfg in cfgs]
    runners = [step for step, _ in runners]
    times = benchmark(runners, args.iters, args.warmup, device)

    height, width = args.shape
    rates = []
    for name, record in zip(names, times):
        rate = args.batch * args.iters / sum(record)
        rates.append(rate)
        print(f'{name}: {rate:.2f} img/s (median '
              f'{statistics.median(record):.3f} s/iter, batch {args.batch}, '
              f'{height}x{width}, {args.iters} iters after {args.warmup} warm-up)')
    for other in range(1, len(names)):
        print(f'ratio {names[0]} / {names[other]}: {rates[0] / rates[other]:.2f}x images/s')
    records.write('benchmark', benchmark_records(args, paths, names, rates, device))


def benchmark_records(args, paths, names, rates, device):
    """The records of one run: images/s of the config, or its ratio to each other run
    (the second config; eager, then eager with the PyTorch fallback)."""
    height, width = args.shape
    size = f'{height}x{width}'
    figure = f'benchmark.{config_name(paths[0])}.{size}'
    if args.backend:
        figure += f'.{args.backend}'
    elif args.vs:
        figure += f'.vs.{config_name(args.vs)}'
    if args.deploy:
        figure += '.deploy'
    details = dict(images_per_s={name: round(rate, 3) for name, rate in zip(names, rates)},
                   iters=args.iters, warmup=args.warmup, batch=args.batch,
                   operators=ops.native_status())

    def variant(*parts):
        return records.variant(figure, *parts, args.batch != 1 and f'batch{args.batch}',
                               device.type == 'cuda' and 'cuda')

    if len(names) == 1:
        return [records.make(variant(), round(rates[0], 3), 'img/s', f'{names[0]} at {size}',
                             details=details, device=device)]
    return [records.make(variant(other == 2 and 'vs_fallback'),
                         round(rates[0] / rates[other], 3), 'x',
                         f'{names[0]} / {names[other]} images/s at {size}', details=details,
                         device=device)
            for other in range(1, len(names))]


if __name__ == '__main__':
    sys.exit(main())
