"""Deployment through ONNX: the exported network and its evaluation by ONNX Runtime.

``tools/export_onnx.py`` exports a model's tensor-mode forward (:class:`RawOutputs`: the
normalised image batch in, the raw head outputs out) and records in the file which model
it came from (:func:`model_signature`). ``tools/test.py CONFIG FILE.onnx`` evaluates such
a file: :class:`OnnxRuntimeModel` runs the config's data preprocessor, the graph through
ONNX Runtime, and the head's own post-processing (mmdet's ``predict_by_feat``, mmseg's
resize and ``postprocess_result``), so that the config's evaluator scores it as it
scores the PyTorch model.
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


TWO_STAGE = ('MaskRCNN', 'CascadeRCNN', 'FasterRCNN', 'TwoStageDetector')


def check_exportable(model_cfg):
    """Refuse a model the export does not cover yet (two-stage detectors)."""
    if model_cfg.get('type') in TWO_STAGE:
        raise ConfigError(f'{model_cfg.type} is not supported by the ONNX export yet (its '
                          'RoI heads need the proposals NMS makes); single-stage detectors '
                          '(RetinaNet) and segmentors are.')


class RawOutputs(nn.Module):
    """The model's tensor-mode forward with its nested outputs as one flat tuple."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        return tuple(flatten(self.model._forward(inputs)))


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


def model_signature(model):
    """A fingerprint of the model's architecture: its type and every state-dict name
    and shape (not the values), taken before any fusing for deployment."""
    lines = [type(model).__name__] + [
        f'{name}:{tuple(value.shape)}' for name, value in model.state_dict().items()]
    return hashlib.sha1('\n'.join(lines).encode()).hexdigest()


def export_metadata(signature, config_path):
    """What an exported file records: the config and the architecture
    (:func:`model_signature`) it came from."""
    return {SIGNATURE_KEY: signature, CONFIG_KEY: str(config_path)}


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


class OnnxRuntimeModel(BaseModel):
    """A detector or segmentor whose network runs in ONNX Runtime.

    Wraps the PyTorch model built from the config, which supplies the data preprocessor
    and the post-processing; its own weights are not used. The graph takes one image:
    a batch runs image by image (each padded as the batch is).

    Args:
        model (BaseModel): The config's model (a single-stage mmdet detector or an
            mmseg ``EncoderDecoder`` with ``test_cfg.mode='whole'``).
        session (onnxruntime.InferenceSession): The exported graph.
    """

    def __init__(self, model, session):
        super().__init__(data_preprocessor=None)
        self.model = model
        self.data_preprocessor = model.data_preprocessor
        self.session = session
        self.input = session.get_inputs()[0]
        if hasattr(model, 'decode_head'):
            mode = (model.test_cfg or {}).get('mode', 'whole')
            if mode != 'whole':
                raise ConfigError(f"ONNX Runtime evaluation runs test_cfg.mode='whole', "
                                  f'not {mode!r}; set model.test_cfg.mode=whole.')
        elif not hasattr(model, 'bbox_head'):
            raise ConfigError(f'ONNX Runtime evaluation supports single-stage detectors '
                              f'and segmentors, not {type(model).__name__}.')

    def forward(self, inputs, data_samples=None, mode='predict'):
        raise NotImplementedError('OnnxRuntimeModel only evaluates (test_step).')

    def _run(self, image):
        """The graph's outputs for one (1, 3, H, W) image."""
        expected = self.input.shape[2:]
        got = tuple(image.shape[2:])
        if all(isinstance(side, int) for side in expected) and tuple(expected) != got:
            raise ConfigError(
                f'The ONNX model was exported for {expected[0]}x{expected[1]} inputs; the '
                f'test pipeline gives {got[0]}x{got[1]}. Export it with --dynamic (or '
                'with --shape for this size).')
        outputs = self.session.run(None, {self.input.name: image.cpu().numpy()})
        return [torch.from_numpy(np.asarray(out)) for out in outputs]

    def test_step(self, data):
        data = self.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
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
