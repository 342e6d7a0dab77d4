"""Train a detector (mmdet), segmentor (mmseg) or ImageNet classifier (mmpretrain) from
a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--compile]
                          [--auto-scale-lr] [--cfg-options k=v ...] [--launcher pytorch]

The config's ``default_scope`` ('mmdet', 'mmseg' or 'mmpretrain') picks the library;
the config reaches acmix_mm through its ``custom_imports``.
"""
import argparse
import sys

from acmix_mm.config_checks import check_schedule
from acmix_mm.runner_utils import (
    UserError,
    add_common_args,
    build_runner,
    check_data,
    check_free_space,
    claim_work_dir,
    config_from_args,
    init_scope,
    run_with_clear_errors,
    stop_signals_end_cleanly,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp', action='store_true', help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--compile', action='store_true',
        help="compile the training step with torch.compile (mmengine's compile)")
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='enable automatically scaling LR')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest checkpoint in the '
        'work dir when no path is given')
    parser.add_argument(
        '--sync-bn',
        choices=['torch', 'mmcv'],
        help='convert BatchNorm layers to synchronised BatchNorm in distributed runs')
    add_common_args(parser)
    return parser.parse_args(argv)


def build_cfg(args):
    cfg = config_from_args(args)
    check_schedule(cfg)
    if args.amp:
        import torch
        if torch.cuda.is_available():  # float16 with dynamic loss scaling
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:  # bfloat16 autocast on CPU
            cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
            cfg.optim_wrapper.pop('loss_scale', None)
    if args.sync_bn:
        cfg.sync_bn = args.sync_bn
    if args.compile and not cfg.get('compile'):  # keep options the config gives
        cfg.compile = True
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise UserError('--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                                 'the config.')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)

    def train():
        cfg = build_cfg(args)
        init_scope(cfg)
        check_data(cfg, ['train_dataloader', 'val_dataloader'])
        with claim_work_dir(cfg.work_dir):
            runner = build_runner(cfg)
            check_free_space(runner)
            with stop_signals_end_cleanly(runner.work_dir):
                runner.train()

    return run_with_clear_errors(train)


if __name__ == '__main__':
    sys.exit(main())
