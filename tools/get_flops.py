"""Count a config's FLOPs and parameters, as mmdet's and mmseg's get_flops do.

    python tools/get_flops.py CONFIG [--shape H W] [--cfg-options k=v ...]

Builds the whole model (every head; two-stage detectors run their RoI heads on the RPN
proposals of the test settings), feeds it one zero image of the given size with the
metadata a data pipeline would give, and counts with mmengine's analysis plus the
attention that its counter skips (``acmix_mm.analysis``). Mask heads run on the first
100 RoIs, as in mmdet's Mask R-CNN count and mmdet 2.x's cascade count, with which the
papers' (Swin's, ACmix's) Cascade Mask R-CNN FLOPs were computed; mmdet 3.x's cascade
forward would run them on all 1000 proposals of all three stages (3x the paper's count).
No data set and no weights are needed (``init_cfg`` is ignored). One multiply-add counts
as one FLOP, as the papers do.
Defaults: 800x1333 for mmdet configs, 512x2048 for mmseg configs (the papers' settings).
"""
import argparse
import sys

from mmengine.config import DictAction

from acmix_mm.analysis import count_config
from acmix_mm.runner_utils import check_input_shape, load_config, run_with_clear_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 800 1333 detection, 512 2048 '
                        'segmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        metavar='KEY=VALUE', help='override settings of the config')
    args = parser.parse_args(argv)

    def count():
        check_input_shape(args.shape)
        cfg = load_config(args.config, args.cfg_options)
        flops, params, (height, width) = count_config(cfg, args.shape)
        line = '=' * 30
        print(f'{line}\nInput shape: (1, 3, {height}, {width})\nFlops: {flops / 1e9:.1f}G\n'
              f'Params: {params / 1e6:.2f}M\n{line}')

    return run_with_clear_errors(count)

if __name__ == '__main__':
    sys.exit(main())
