"""Export a detector's or segmentor's network, up to its raw head outputs, to ONNX.

    python tools/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W]
                                [--dynamic] [--deploy] [--image IMAGE]
                                [--cfg-options k=v ...]

The graph takes the normalised image batch (what the config's data preprocessor makes
of an image: mean and std applied, RGB) and returns the raw head outputs in the order
of the model's tensor-mode forward (RetinaNet: the class scores of every level, then
the box deltas; segmentors: the logits). A two-stage detector (Mask R-CNN, Cascade Mask
R-CNN) exports as one graph of three parts, each run on its own: the image to the
neck's features and the RPN's raw outputs, RoI features to each box head's scores and
deltas, and RoI features to each mask head's logits (acmix_mm.deploy.TwoStageNetworks);
the NMS and RoI Align between them stay mmdet's. The file records which config and
architecture it came from, so that ``tools/test.py CONFIG FILE.onnx`` can evaluate it through ONNX
Runtime (and refuses a file of another model). Exported with ``torch.onnx.export`` (the
dynamo exporter), checked with ``onnx.checker``, then run through ONNX Runtime on a
real image (``--image``, default the first image of the config's test set, else a
drawn one), and compared with PyTorch: the tool prints the largest difference relative
to each output's largest magnitude and fails above 1e-4. ``--deploy`` exports the
fused convolution path (``tools/test.py --deploy``); ``--dynamic`` makes height and
width free and checks a second size too (the number of RoIs is always free): PVT(-ACmix)
and the libraries' backbones from 64 pixels a side, Swin(-ACmix) from 225 (its last
stage shifts windows only on maps larger than one); ResNet-ACmix, SAN(-ACmix) and AttNet
export at fixed sizes only (their graphs depend on the input size), as does UperNet
(its pyramid pooling pools to fixed grids), which the tool says.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch
from mmengine.config import DictAction

from acmix_mm.checkpoint import check_model_checkpoint, extract_state_dict, load_checkpoint_file
from acmix_mm.deploy import (
    export_metadata,
    export_network,
    min_free_side,
    model_signature,
    onnx_exporting,
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


def build_model(cfg):
    """The config's model and the network to export (refusing what cannot be)."""
    from mmengine.registry import MODELS, DefaultScope
    if cfg.model.get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None  # the checkpoint holds every weight
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    return model, export_network(model)


def load_weights(model, checkpoint_path, deploy):
    checkpoint = load_checkpoint_file(checkpoint_path)
    check_model_checkpoint(model, checkpoint, checkpoint_path)
    model.load_state_dict(extract_state_dict(checkpoint, prefix=None))
    model.eval()
    model.signature = model_signature(model)  # before fusing: the config's architecture
    if deploy:
        from acmix_mm.layers import fuse_acmix
        print(f'fused the convolution path of {fuse_acmix(model)} ACmix layers')


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


def export(network, inputs, out, min_side, metadata):
    """Export ``network`` on the example ``inputs``: the image's height and width free
    from ``min_side`` up (None: fixed), the number of RoIs (inputs after the image)
    always."""
    from torch.export import Dim
    dynamic = min_side is not None
    image_dims = ({2: Dim('height', min=min_side, max=4096),
                   3: Dim('width', min=min_side, max=4096)} if dynamic else None)
    rois = Dim('rois', min=1, max=100000)
    dynamic_shapes = (image_dims, ) + tuple({0: rois} for _ in inputs[1:])
    if not dynamic and len(inputs) == 1:
        dynamic_shapes = None
    with torch.no_grad():
        outputs = network(*inputs)
    with onnx_exporting():
        program = torch.onnx.export(
            network.eval(), tuple(inputs), dynamo=True, dynamic_shapes=dynamic_shapes,
            input_names=network.input_names, output_names=network.output_names(outputs))
    program.model.metadata_props.update(metadata)
    program.save(out)


def largest_difference(session, network, inputs):
    """Largest |onnxruntime - torch| / max|torch| over the outputs."""
    with torch.no_grad():
        expected = [t.numpy() for t in network(*inputs)]
    got = session.run(None, {node.name: t.numpy()
                             for node, t in zip(session.get_inputs(), inputs)})
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
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        init_scope(cfg)
        model, network = build_model(cfg)
        min_side = min_free_side(model) if args.dynamic else None
        if args.dynamic and min(shape) < min_side:
            raise UserError(f'--dynamic: {type(model.backbone).__name__} exports free sizes '
                            f'from {min_side} pixels a side up; use a --shape of at least '
                            'that.')
        load_weights(model, args.checkpoint, args.deploy)
        image, source = image_batch(model, cfg, args.image, shape)
        inputs = network.example_inputs(image)
        export(network, inputs, args.out, min_side,
               export_metadata(model.signature, args.config, min_side))
        onnx.checker.check_model(args.out)
        session = ort.InferenceSession(args.out, providers=['CPUExecutionProvider'])
        checks = [(inputs, source)]
        if args.dynamic:  # a second size, from the same image
            other = (shape[0] + 64, shape[1] + 32)
            resized = image_batch(model, cfg, args.image, other)[0]
            checks.append((network.example_inputs(resized), f'{source}, resized'))
        for batch, what in checks:
            difference = largest_difference(session, network, batch)
            print(f'onnxruntime vs PyTorch on {what} '
                  f'({batch[0].shape[2]}x{batch[0].shape[3]}): largest relative difference '
                  f'{difference:.2e}')
            if difference > TOLERANCE:
                raise UserError(f'The exported model differs from PyTorch by '
                                f'{difference:.2e} (more than {TOLERANCE:.0e}); {args.out} '
                                'is not usable.')
        print(f'wrote {args.out}')

    return run_with_clear_errors(run)


if __name__ == '__main__':
    sys.exit(main())
