"""Export a detector's or segmentor's network, up to its raw head outputs, to ONNX.

    python tools/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W]
                                [--dynamic] [--deploy] [--image IMAGE]
                                [--cfg-options k=v ...]

The graph takes the normalised image batch (what the config's data preprocessor makes
of an image: mean and std applied, RGB) and returns the raw head outputs in the order
of the model's tensor-mode forward (RetinaNet: the class scores of every level, then
the box deltas; segmentors: the logits), and records which config and architecture it
came from, so that ``tools/test.py CONFIG FILE.onnx`` can evaluate it through ONNX
Runtime (and refuses a file of another model). Exported with ``torch.onnx.export`` (the
dynamo exporter), checked with ``onnx.checker``, then run through ONNX Runtime on a
real image (``--image``, default the first image of the config's test set, else a
drawn one), and compared with PyTorch: the tool prints the largest difference relative
to each output's largest magnitude and fails above 1e-4. ``--deploy`` exports the
fused convolution path (``tools/test.py --deploy``); ``--dynamic`` makes height and
width free and checks a second size too. Two-stage detectors (Mask R-CNN, Cascade) are
not supported yet: their RoI heads depend on the proposals' NMS.
"""
import argparse
import os.path as osp
import sys

import numpy as np
import torch
from mmengine.config import DictAction

from acmix_mm.checkpoint import check_model_checkpoint, extract_state_dict, load_checkpoint_file
from acmix_mm.deploy import (
    RawOutputs,
    check_exportable,
    export_friendly_upsampling,
    export_metadata,
    model_signature,
)
from acmix_mm.runner_utils import UserError, init_scope, load_config, run_with_clear_errors

TOLERANCE = 1e-4
DEFAULT_SHAPES = {'mmdet': (800, 1344), 'mmseg': (512, 512)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint the config trained')
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size, multiples of 32 (default: 800 1344 detection, '
                        '512 512 segmentation)')
    parser.add_argument('--dynamic', action='store_true',
                        help='free input height and width')
    parser.add_argument('--deploy', action='store_true',
                        help='fuse each ACmix convolution path where cheaper')
    parser.add_argument('--image', help='image for the parity check')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        metavar='KEY=VALUE', help='override settings of the config')
    return parser.parse_args(argv)


def build_model(cfg, checkpoint_path, deploy):
    from mmengine.registry import MODELS, DefaultScope
    check_exportable(cfg.model)
    if cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None  # the checkpoint below holds every weight
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    checkpoint = load_checkpoint_file(checkpoint_path)
    check_model_checkpoint(model, checkpoint, checkpoint_path)
    model.load_state_dict(extract_state_dict(checkpoint, prefix=None))
    model.eval()
    model.signature = model_signature(model)  # before fusing: the config's architecture
    if deploy:
        from acmix_mm.layers import fuse_acmix
        print(f'fused the convolution path of {fuse_acmix(model)} ACmix layers')
    return model


def first_test_image(cfg):
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    try:
        from mmengine.registry import DATASETS
        return DATASETS.build(dataset)[0]['data_samples'].img_path
    except Exception:  # noqa: BLE001 (no data here: a drawn image will do)
        return None


def image_batch(model, cfg, image_path, shape):
    """A real image resized to ``shape``, through the model's data preprocessor."""
    import mmcv
    if image_path is None:
        image_path = first_test_image(cfg)
    if image_path is not None:
        if not osp.isfile(image_path):
            raise UserError(f'Image not found: {image_path}')
        image = mmcv.imread(image_path)
        source = image_path
    else:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
        source = 'a drawn image (no test data found)'
    image = mmcv.imresize(image, (shape[1], shape[0]))
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        return model.data_preprocessor(dict(inputs=[tensor]), False)['inputs'], source


def export(raw, inputs, out, dynamic, metadata):
    dynamic_shapes = None
    if dynamic:
        from torch.export import Dim
        dynamic_shapes = ({2: Dim('height', min=64, max=4096),
                           3: Dim('width', min=64, max=4096)}, )
    outputs = raw(inputs)
    with export_friendly_upsampling():
        program = torch.onnx.export(
            raw.eval(), (inputs, ), dynamo=True, dynamic_shapes=dynamic_shapes,
            input_names=['input'], output_names=[f'output{i}' for i in range(len(outputs))])
    program.model.metadata_props.update(metadata)
    program.save(out)


def largest_difference(session, raw, inputs):
    """Largest |onnxruntime - torch| / max|torch| over the outputs."""
    with torch.no_grad():
        expected = [t.numpy() for t in raw(inputs)]
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    if len(got) != len(expected):
        raise UserError(f'The ONNX model returns {len(got)} outputs, PyTorch '
                        f'{len(expected)}.')
    return max(float(np.abs(g - e).max() / max(np.abs(e).max(), 1e-12))
               for g, e in zip(got, expected))


def main(argv=None):
    args = parse_args(argv)

    def run():
        import onnx
        import onnxruntime as ort
        cfg = load_config(args.config, args.cfg_options)
        if cfg.default_scope not in DEFAULT_SHAPES:
            raise UserError('tools/export_onnx.py exports detectors (mmdet) and segmentors '
                            '(mmseg).')
        shape = tuple(args.shape or DEFAULT_SHAPES[cfg.default_scope])
        if min(shape) < 64 or any(side % 32 for side in shape):
            raise UserError(f'--shape {shape[0]} {shape[1]}: use multiples of 32 of at '
                            'least 64.')
        init_scope(cfg)
        model = build_model(cfg, args.checkpoint, args.deploy)
        raw = RawOutputs(model)
        inputs, source = image_batch(model, cfg, args.image, shape)
        export(raw, inputs, args.out, args.dynamic, export_metadata(model.signature,
                                                                    args.config))
        onnx.checker.check_model(args.out)
        session = ort.InferenceSession(args.out, providers=['CPUExecutionProvider'])
        checks = [(inputs, source)]
        if args.dynamic:  # a second size, from the same image
            other = (shape[0] + 64, shape[1] - 32 if shape[1] > 96 else shape[1] + 32)
            checks.append((image_batch(model, cfg, args.image, other)[0],
                           f'{source}, resized'))
        for batch, what in checks:
            difference = largest_difference(session, raw, batch)
            print(f'onnxruntime vs PyTorch on {what} '
                  f'({batch.shape[2]}x{batch.shape[3]}): largest relative difference '
                  f'{difference:.2e}')
            if difference > TOLERANCE:
                raise UserError(f'The exported model differs from PyTorch by '
                                f'{difference:.2e} (more than {TOLERANCE:.0e}); {args.out} '
                                'is not usable.')
        print(f'wrote {args.out}')

    return run_with_clear_errors(run)


if __name__ == '__main__':
    sys.exit(main())
