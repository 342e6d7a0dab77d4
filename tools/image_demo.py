"""Paint a model's predictions on one image: boxes (mmdet configs), masks (mmseg) or
the predicted class (mmpretrain), which is also printed.

    python tools/image_demo.py CONFIG CHECKPOINT IMAGE --out-file OUT.jpg
"""
import argparse
import os
import os.path as osp
import sys

import mmcv

from acmix_mm.checkpoint import load_checkpoint_file
from acmix_mm.runner_utils import UserError, init_scope, load_config, run_with_clear_errors
from acmix_mm.transforms import CheckedLoadImageFromFile


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-file', required=True, help='where to write the picture')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
    parser.add_argument(
        '--score-thr', type=float, default=0.3, help='detection score threshold')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def paint():
        cfg = load_config(args.config)
        load_checkpoint_file(args.checkpoint)
        init_scope(cfg)
        CheckedLoadImageFromFile().check_file(args.image)  # missing, empty, truncated
        image = mmcv.imread(args.image)
        if image is None:
            raise UserError(f'Cannot read image {args.image}: it is not an image file '
                            '(JPEG, PNG, BMP, ...).')
        image = mmcv.bgr2rgb(image)
        os.makedirs(osp.dirname(osp.abspath(args.out_file)), exist_ok=True)
        if cfg.default_scope == 'mmdet':
            from mmdet.apis import inference_detector, init_detector
            from mmdet.registry import VISUALIZERS
            model = init_detector(cfg, args.checkpoint, device=args.device)
            result = inference_detector(model, args.image)
            visualizer = VISUALIZERS.build(cfg.visualizer)
            visualizer.dataset_meta = model.dataset_meta
            visualizer.add_datasample(
                'result', image, data_sample=result, draw_gt=False, show=False,
                pred_score_thr=args.score_thr, out_file=args.out_file)
        elif cfg.default_scope == 'mmpretrain':
            from mmpretrain.apis import ImageClassificationInferencer
            from mmpretrain.visualization import UniversalVisualizer
            inferencer = ImageClassificationInferencer(
                cfg, pretrained=args.checkpoint, device=args.device)
            result = inferencer(args.image, return_datasamples=True)[0]
            label = int(result.pred_label)
            names = inferencer.classes or ()
            name = names[label] if label < len(names) else str(label)
            print(f'predicted class: {name} ({float(result.pred_score[label]):.3f})')
            UniversalVisualizer().visualize_cls(
                image, result, classes=names, show=False, out_file=args.out_file)
        else:
            from mmseg.apis import inference_model, init_model, show_result_pyplot
            model = init_model(cfg, args.checkpoint, device=args.device)
            result = inference_model(model, args.image)
            show_result_pyplot(model, args.image, result, show=False,
                               out_file=args.out_file)
        print(f'wrote {args.out_file}')

    return run_with_clear_errors(paint)


if __name__ == '__main__':
    sys.exit(main())
