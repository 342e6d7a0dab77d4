"""Deployment through ONNX: the exported network and its evaluation by ONNX Runtime.

``tools/export_onnx.py`` exports :func:`export_network`: a single-stage detector's or a
segmentor's tensor-mode forward (:class:`RawOutputs`: the normalised image batch in, the
raw head outputs out), or a two-stage detector's networks as one graph of independent
parts (:class:`TwoStageNetworks`), and records in the file which model it came from
(:func:`model_signature`) and the smallest size it holds for (:func:`min_free_side`).
``tools/test.py CONFIG FILE.onnx`` evaluates such a file: :class:`OnnxRuntimeModel` runs
the config's data preprocessor, the graph (or its parts, :class:`OnnxPart`) through ONNX
Runtime, and the model's own post-processing (mmdet's ``predict_by_feat`` and two-stage
``predict``, mmseg's resize and ``postprocess_result``), so that the config's evaluator
scores it as it scores the PyTorch model.
"""
import contextlib
import hashlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel

from .errors import CheckpointError, ConfigError

SIGNATURE_KEY = 'acmix_mm.model_signature'
CONFIG_KEY = 'acmix_mm.config'
MIN_SIDE_KEY = 'acmix_mm.min_side'


def check_exportable(model):
    """Refuse a model the export does not cover, naming what it covers."""
    if is_two_stage(model):
        if model.roi_head.with_shared_head or not model.with_rpn:
            raise ConfigError(f'{type(model).__name__} with a shared RoI head or without an '
                              'RPN is not supported by the ONNX export.')
    elif not (hasattr(model, 'bbox_head') or hasattr(model, 'decode_head')):
        raise ConfigError(f'{type(model).__name__} is not supported by the ONNX export: it '
                          'exports detectors (single- and two-stage) and segmentors.')


def is_two_stage(model):
    return hasattr(model, 'roi_head') and hasattr(model, 'rpn_head')


def as_list(modules):
    return list(modules) if isinstance(modules, nn.ModuleList) else [modules]


class RawOutputs(nn.Module):
    """The model's tensor-mode forward with its nested outputs as one flat tuple (a
    single-stage detector or a segmentor): the image batch in, the raw head outputs out."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.input_names = ['input']

    def forward(self, inputs):
        return tuple(flatten(self.model._forward(inputs)))

    def example_inputs(self, image):
        return (image, )

    def output_names(self, outputs):
        return [f'output{i}' for i in range(len(outputs))]


class TwoStageNetworks(nn.Module):
    """A two-stage detector's networks as one graph of three independent parts.

    What lies between them has no weights and depends on the data (the RPN's NMS, RoI
    Align, box decoding): mmdet's own code runs it (:class:`OnnxRuntimeModel`). The
    parts, by their input and output names:

    - ``input`` (the image batch) -> ``feat{l}`` (the neck's levels), ``rpn_cls{l}``,
      ``rpn_reg{l}`` (the RPN head's raw outputs);
    - ``bbox_roi_feats`` (RoI features, one row per RoI) -> ``cls_score{s}``,
      ``bbox_pred{s}`` of each stage's box head (one stage but in Cascade R-CNN);
    - ``mask_roi_feats`` -> ``mask_pred{s}`` of each stage's mask head (if any).

    A part runs alone as the sub-model ``onnx.utils.Extractor`` cuts at these names.

    Args:
        model (TwoStageDetector): The detector (Mask R-CNN, Cascade (Mask) R-CNN, ...).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        roi_head = model.roi_head
        self.bbox_heads = as_list(roi_head.bbox_head)
        self.mask_heads = as_list(roi_head.mask_head) if roi_head.with_mask else []
        self.input_names = ['input', 'bbox_roi_feats'] + (
            ['mask_roi_feats'] if self.mask_heads else [])
        self.levels = None

    def forward(self, inputs, bbox_roi_feats, mask_roi_feats=None):
        feats = self.model.extract_feat(inputs)
        rpn_cls, rpn_reg = self.model.rpn_head(feats)
        outputs = [*feats, *rpn_cls, *rpn_reg]
        for head in self.bbox_heads:
            outputs.extend(head(bbox_roi_feats))
        outputs.extend(head(mask_roi_feats) for head in self.mask_heads)
        return tuple(outputs)

    @torch.no_grad()
    def example_inputs(self, image, num_rois=32):
        """The image and the RoI features of the RPN's best ``num_rois`` proposals."""
        model = self.model
        feats = model.extract_feat(image)
        self.levels = len(feats)
        meta = dict(img_shape=tuple(image.shape[2:]))
        proposals = model.rpn_head.predict_by_feat(
            *model.rpn_head(feats), batch_img_metas=[meta], cfg=model.rpn_head.test_cfg,
            rescale=False)[0].bboxes[:num_rois]
        rois = torch.cat([proposals.new_zeros(len(proposals), 1), proposals], 1)
        roi_head = model.roi_head
        extractors = [as_list(roi_head.bbox_roi_extractor)[0]]
        if self.mask_heads:
            extractors.append(as_list(roi_head.bbox_roi_extractor if roi_head.share_roi_extractor
                                      else roi_head.mask_roi_extractor)[0])
        return (image, *(extract(feats[:extract.num_inputs], rois) for extract in extractors))

    def output_names(self, outputs=None):
        levels = range(self.levels)
        names = [f'{kind}{i}' for kind in ('feat', 'rpn_cls', 'rpn_reg') for i in levels]
        for stage in range(len(self.bbox_heads)):
            names += [f'cls_score{stage}', f'bbox_pred{stage}']
        return names + [f'mask_pred{stage}' for stage in range(len(self.mask_heads))]


def export_network(model):
    """The module ``tools/export_onnx.py`` exports for ``model``."""
    check_exportable(model)
    return TwoStageNetworks(model) if is_two_stage(model) else RawOutputs(model)


def flatten(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in flatten(item)]


@contextlib.contextmanager
def export_friendly_upsampling():
    """mmseg's ``Upsample`` (the Semantic FPN head's) computes its output size with
    ``int()`` on the input's shape, which fixes the size at the exported one: a graph
    exported with free height and width would then give wrong maps at other sizes.
    While exporting, it upsamples by its scale factor instead (the same sizes and
    values wherever ``int(side * factor)`` is exact, as for the head's factor 2)."""
    try:
        from mmseg.models.utils import Upsample
    except ImportError:
        yield
        return
    original = Upsample.forward

    def forward(self, x):
        if self.size or self.scale_factor is None:
            return original(self, x)
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode,
                             align_corners=self.align_corners)

    Upsample.forward = forward
    try:
        yield
    finally:
        Upsample.forward = original


@contextlib.contextmanager
def without_pairwise_slice_rewrite():
    """onnxscript's graph optimizer (run by ``torch.onnx.export``) tries its
    ``SlicesSplit`` rule, two Slices of one input into a Split, on every pair of Slice
    nodes, and lists the whole graph for each try: time quadratic in the graph's size.
    ResNet- and SAN-ACmix export their windows as k*k shifted Slices (overlapping, so the
    rule never applies): the optimizer took 3 of SAN-ACmix-10's 4 minutes at 128x128.
    While exporting, the optimizer runs its other rules only (all of them where this
    onnxscript has no such rule)."""
    try:
        from onnxscript import rewriter
        rules = rewriter._DEFAULT_REWRITE_RULES
    except (ImportError, AttributeError):
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(
        rule for rule in rules if getattr(rule, 'name', None) != 'SlicesSplit')
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


@contextlib.contextmanager
def onnx_exporting():
    """What every ONNX export here runs under: mmseg's upsampling by scale factor and
    the graph optimizer without its pairwise Slice rule (above)."""
    with export_friendly_upsampling(), without_pairwise_slice_rewrite():
        yield


def model_signature(model):
    """A fingerprint of the model's architecture: its type and every state-dict name
    and shape (not the values), taken before any fusing for deployment."""
    lines = [type(model).__name__] + [
        f'{name}:{tuple(value.shape)}' for name, value in model.state_dict().items()]
    return hashlib.sha1('\n'.join(lines).encode()).hexdigest()


def min_free_side(model):
    """The smallest input side a graph exported with free sizes holds for: 64, or more
    where the backbone takes another branch on small maps (its ``min_free_side``: Swin).

    Raises:
        ConfigError: where the graph holds for the exported size only (a backbone whose
            ``min_free_side`` is None, adaptive pooling to a grid as in UperNet's PPM).
    """
    backbone = getattr(model, 'backbone', None)
    side = getattr(backbone, 'min_free_side', 64)
    fix = 'export a file for each size with --shape H W instead of --dynamic.'
    if side is None:
        raise ConfigError(f'{type(backbone).__name__} exports at fixed sizes only (its '
                          f'graph depends on the input size): {fix}')
    for name, module in model.named_modules():
        grid = getattr(module, 'output_size', None)
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and grid not in (
                1, (1, 1)):
            raise ConfigError(f'{name} pools to a fixed {grid} grid, which the exported '
                              f'graph holds for the exported size only: {fix}')
    return max(64, side)


def export_metadata(signature, config_path, min_side=None):
    """What an exported file records: the config and the architecture
    (:func:`model_signature`) it came from, and the smallest input side it holds for
    (free sizes)."""
    metadata = {SIGNATURE_KEY: signature, CONFIG_KEY: str(config_path)}
    if min_side is not None:
        metadata[MIN_SIDE_KEY] = str(min_side)
    return metadata


def open_session(path, model, config_path):
    """An ONNX Runtime session on ``path``, refused unless the file is an ONNX model
    exported from this config's architecture.

    Raises:
        CheckpointError: naming the problem (not ONNX, not exported by our tool, another
            model) and what to do.
    """
    import onnxruntime as ort
    try:
        session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    except Exception as err:  # noqa: BLE001 (onnxruntime's own error types)
        raise CheckpointError(
            f'Cannot read {path} as an ONNX model ({type(err).__name__}: '
            f'{str(err).splitlines()[0][:200]}). Export one with tools/export_onnx.py.'
        ) from None
    metadata = session.get_modelmeta().custom_metadata_map
    signature = metadata.get(SIGNATURE_KEY)
    if signature is None:
        raise CheckpointError(
            f'{path} was not written by tools/export_onnx.py (it does not say which model '
            'it holds); export the checkpoint with tools/export_onnx.py.')
    if signature != model_signature(model):
        raise CheckpointError(
            f'{path} holds another model than {config_path}: it was exported from '
            f'{metadata.get(CONFIG_KEY, "another config")}. Pass the config it was '
            'exported with, or export this config\'s checkpoint.')
    return session


class OnnxPart:
    """One part of an exported graph, cut out at its input and output names
    (``onnx.utils.Extractor``) and run by ONNX Runtime on torch tensors."""

    def __init__(self, graph, inputs, outputs):
        import onnx
        import onnxruntime as ort
        part = onnx.utils.Extractor(graph).extract_model(inputs, outputs)
        self.session = ort.InferenceSession(part.SerializeToString(),
                                            providers=['CPUExecutionProvider'])
        self.inputs, self.outputs = inputs, outputs

    def __call__(self, *tensors):
        feed = {name: t.detach().cpu().numpy() for name, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(out) for out in self.session.run(self.outputs, feed)]


class OnnxRuntimeModel(BaseModel):
    """A detector or segmentor whose network runs in ONNX Runtime.

    Wraps the PyTorch model built from the config, which supplies the data preprocessor
    and the post-processing; its own weights are not used. The graph takes one image:
    a batch runs image by image (each padded as the batch is). A two-stage detector's
    networks (:class:`TwoStageNetworks`) take the place of the model's backbone, neck,
    RPN head and RoI heads, so that mmdet's own ``predict`` runs everything between them.

    Args:
        model (BaseModel): The config's model (an mmdet detector or an mmseg
            ``EncoderDecoder`` with ``test_cfg.mode='whole'``).
        session (onnxruntime.InferenceSession): The exported graph.
        path (str): The file it was read from (two-stage detectors run in parts).
    """

    def __init__(self, model, session, path=None):
        super().__init__(data_preprocessor=None)
        self.model = model
        self.data_preprocessor = model.data_preprocessor
        self.session = session
        self.input = session.get_inputs()[0]
        self.min_side = int(session.get_modelmeta().custom_metadata_map.get(
            MIN_SIDE_KEY, 0))
        if hasattr(model, 'decode_head'):
            mode = (model.test_cfg or {}).get('mode', 'whole')
            if mode != 'whole':
                raise ConfigError(f"ONNX Runtime evaluation runs test_cfg.mode='whole', "
                                  f'not {mode!r}; set model.test_cfg.mode=whole.')
        else:
            check_exportable(model)
        if is_two_stage(model):
            self._run_networks_in_parts(path)

    def _run_networks_in_parts(self, path):
        import onnx
        graph = onnx.load(path)
        names = [out.name for out in graph.graph.output]
        kinds = ('feat', 'rpn_cls', 'rpn_reg')
        image_part = OnnxPart(graph, ['input'], [n for n in names if n.startswith(kinds)])
        levels = sum(n.startswith('feat') for n in names)
        # The image part yields the neck's features and the RPN's outputs in one run;
        # mmdet asks for them in two calls (extract_feat, then rpn_head), so the second
        # hands back what the first kept.
        model, rpn_outputs = self.model, []

        def extract_feat(inputs):
            per_image = [self._run(inputs[i:i + 1], image_part)
                         for i in range(inputs.shape[0])]
            outputs = [torch.cat(parts) for parts in zip(*per_image)]
            rpn_outputs[:] = outputs[levels:2 * levels], outputs[2 * levels:]
            return tuple(outputs[:levels])

        model.extract_feat = extract_feat
        model.rpn_head.forward = lambda feats: tuple(rpn_outputs)
        roi_head = model.roi_head
        for stage, head in enumerate(as_list(roi_head.bbox_head)):
            part = OnnxPart(graph, ['bbox_roi_feats'],
                            [f'cls_score{stage}', f'bbox_pred{stage}'])
            head.forward = lambda feats, part=part: tuple(part(feats))
        if roi_head.with_mask:
            for stage, head in enumerate(as_list(roi_head.mask_head)):
                part = OnnxPart(graph, ['mask_roi_feats'], [f'mask_pred{stage}'])
                head.forward = lambda feats, part=part: part(feats)[0]

    def forward(self, inputs, data_samples=None, mode='predict'):
        raise NotImplementedError('OnnxRuntimeModel only evaluates (test_step).')

    def _run(self, image, part=None):
        """The graph's (or a part's) outputs for one (1, 3, H, W) image."""
        expected = self.input.shape[2:]
        got = tuple(image.shape[2:])
        if all(isinstance(side, int) for side in expected) and tuple(expected) != got:
            raise ConfigError(
                f'The ONNX model was exported for {expected[0]}x{expected[1]} inputs; the '
                f'test pipeline gives {got[0]}x{got[1]}. Export it with --dynamic (or '
                'with --shape for this size).')
        if min(got) < self.min_side:
            raise ConfigError(
                f'The ONNX model holds for inputs of at least {self.min_side} pixels a side '
                f'(smaller maps take another branch in the backbone); the test pipeline '
                f'gives {got[0]}x{got[1]}. Export it with --shape for this size.')
        if part is not None:
            return part(image)
        outputs = self.session.run(None, {self.input.name: image.cpu().numpy()})
        return [torch.from_numpy(np.asarray(out)) for out in outputs]

    @torch.no_grad()
    def test_step(self, data):
        data = self.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        if is_two_stage(self.model):
            return self.model.predict(inputs, samples)
        per_image = [self._run(inputs[i:i + 1]) for i in range(inputs.shape[0])]
        outputs = [torch.cat(parts) for parts in zip(*per_image)]
        metas = [sample.metainfo for sample in samples]
        if hasattr(self.model, 'decode_head'):
            logits = self.model.decode_head.predict_by_feat(outputs[0], metas)
            return self.model.postprocess_result(logits, samples)
        head = self.model.bbox_head
        levels = len(head.prior_generator.strides)
        groups = [outputs[i:i + levels] for i in range(0, len(outputs), levels)]
        results = head.predict_by_feat(*groups, batch_img_metas=metas, rescale=True)
        return self.model.add_pred_to_datasample(samples, results)

    val_step = test_step
