"""Evaluate a checkpoint: COCO mAP (mmdet configs), mIoU (mmseg configs) or top-1 /
top-5 accuracy (mmpretrain configs). CHECKPOINT may also be an ONNX file written by
tools/export_onnx.py from this config: its network then runs in ONNX Runtime, with the
config's data pipeline, post-processing and evaluator.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
                         [--show-dir DIR] [--show] [--tta] [--deploy] [--compile]
                         [--cfg-options k=v ...]
"""
import argparse
import os.path as osp
import sys

from acmix_mm.checkpoint import check_model_checkpoint, load_checkpoint_file
from acmix_mm.deploy import OnnxRuntimeModel, open_session
from acmix_mm.runner_utils import (
    SCOPES,
    UserError,
    add_common_args,
    build_runner,
    check_data,
    config_from_args,
    init_scope,
    run_with_clear_errors,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or an ONNX file (.onnx)')
    parser.add_argument(
        '--out',
        help='mmdet, mmpretrain: dump predictions to this pickle file (.pkl); mmseg: '
        'write the predicted masks into this directory')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    parser.add_argument(
        '--deploy',
        action='store_true',
        help='fuse each ACmix convolution path into one grouped conv where cheaper')
    parser.add_argument(
        '--compile', action='store_true',
        help='run the backbone through torch.compile (options: --cfg-options '
        'compile.backend=...; weights and checkpoint keys stay as they are)')
    add_common_args(parser)
    return parser.parse_args(argv)


def enable_visualization(cfg, args):
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise UserError('--show/--show-dir need default_hooks.visualization in the config.')
    if cfg.default_scope == 'mmpretrain':  # its hook's own argument names
        hook.update(enable=True, show=args.show, wait_time=args.wait_time)
        if args.show_dir:
            hook['out_dir'] = args.show_dir
        return
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if cfg.default_scope == 'mmdet':
            hook['test_out_dir'] = osp.abspath(args.show_dir)
        else:
            cfg.visualizer['save_dir'] = args.show_dir


def compile_backbone(model, options):
    """torch.compile the backbone's forward in place (mmengine compiles only training
    steps), with the config's ``compile`` options (True or a dict of torch.compile's
    arguments, as mmengine takes them); the module and its state-dict keys stay, so
    checkpoints load as before."""
    import torch
    options = dict(options) if isinstance(options, dict) else {}
    model = getattr(model, 'module', model)  # a test-time-augmentation wrapper
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise UserError(f'--compile: {type(model).__name__} has no backbone to compile.')
    backbone.forward = torch.compile(backbone.forward, **options)
    print(f'compiled the backbone forward (torch.compile, backend '
          f'{options.get("backend", "inductor")})', flush=True)


def is_onnx(path):
    return path.endswith('.onnx')


def build_cfg(args):
    cfg = config_from_args(args)
    cfg.load_from = None if is_onnx(args.checkpoint) else args.checkpoint
    if is_onnx(args.checkpoint):
        used = [flag for flag, on in (('--tta', args.tta), ('--deploy', args.deploy),
                                      ('--compile', args.compile),
                                      ('--launcher', args.launcher != 'none')) if on]
        if used:
            raise UserError(f'{", ".join(used)} cannot be used with an ONNX file (export '
                            'with --deploy instead; evaluate in one process).')
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise UserError('--tta needs tta_model and tta_pipeline in the config.')
        cfg.model = dict(type=cfg.tta_model.type, module=cfg.model,
                         **{k: v for k, v in cfg.tta_model.items() if k != 'type'})
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    if args.compile and not cfg.get('compile'):
        cfg.compile = True
    if args.deploy:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [dict(type='FuseACmixHook')]
    if args.out and cfg.default_scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    return cfg


def main(argv=None):
    args = parse_args(argv)

    def test():
        cfg = build_cfg(args)
        init_scope(cfg)
        check_data(cfg, ['test_dataloader'])
        if is_onnx(args.checkpoint):
            if not osp.isfile(args.checkpoint):
                raise UserError(f'ONNX file not found: {args.checkpoint}')
            runner = build_runner(cfg)
            session = open_session(args.checkpoint, runner.model, args.config)
            runner.model = OnnxRuntimeModel(runner.model, session, args.checkpoint)
        else:
            checkpoint = load_checkpoint_file(args.checkpoint)  # fail early on a bad file
            runner = build_runner(cfg)
            # The model inside a distributed wrapper or a test-time-augmentation model.
            check_model_checkpoint(getattr(runner.model, 'module', runner.model),
                                   checkpoint, args.checkpoint)
            del checkpoint
            if cfg.get('compile'):
                compile_backbone(getattr(runner.model, 'module', runner.model), cfg.compile)
        if args.out and cfg.default_scope in ('mmdet', 'mmpretrain'):
            if not args.out.endswith(('.pkl', '.pickle')):
                raise UserError(f'--out for {SCOPES[cfg.default_scope]} must be a .pkl '
                                'or .pickle file.')
            if cfg.default_scope == 'mmdet':
                from mmdet.evaluation import DumpDetResults as DumpResults
            else:
                from mmengine.evaluator import DumpResults
            runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
        runner.test()

    return run_with_clear_errors(test)


if __name__ == '__main__':
    sys.exit(main())
