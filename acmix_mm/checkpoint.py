"""Checkpoint loading that stays safe and says what went wrong.

* Loading never executes pickled code: torch loads with ``weights_only=True`` (its
  default since 2.6) and we allow-list exactly the extra types that mmengine's runner
  writes into our own checkpoints (its message hub's ``HistoryBuffer`` and the numpy
  arrays and scalars inside), and those the official training scripts write beside
  the weights (an ``argparse.Namespace``, a yacs ``CfgNode``), instead of switching
  the protection off.
* Pretrained weights for a backbone may come in the official layout of another code
  base; each backbone passes a converter, and every key that does not fit is listed in
  the error, never dropped silently.
"""
import argparse
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, MMLogger, print_log
from mmengine.runner.checkpoint import CheckpointLoader

from .errors import CheckpointError
from .fileio import atomic_output


def _numpy_checkpoint_types():
    # Types that pickles of numpy arrays and scalars reference. numpy 1.x keeps the
    # reconstructors under ``numpy.core``, numpy 2.x under ``numpy._core``.
    if int(np.__version__.split('.')[0]) >= 2:
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    types = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    types += [type(np.dtype(name)) for name in ('float16', 'float32', 'float64', 'int32',
                                                 'int64', 'uint8', 'bool')]
    return types


_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_state(self):
    # mmengine pickles the buffer's statistics methods, as getattr(HistoryBuffer,
    # 'min') and so on, which would force allow-listing builtins.getattr. The default
    # ones are re-created by HistoryBuffer.__setstate__ anyway, so only custom ones
    # (registered by the user) are stored.
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    custom = {k: v for k, v in self._statistics_methods.items()
              if k not in _DEFAULT_STATISTICS}
    if custom:
        state['statistics_methods'] = custom
    return state


class ConfigNodeStandIn:
    """Stands in for yacs' ``CfgNode`` when a checkpoint that holds one is loaded.

    The official Swin(-ACmix) training script saves its yacs config under ``'config'``.
    Allow-listed under the pickled name ``yacs.config.CfgNode``, this class makes such
    files load without yacs: "creating" a node gives a plain ``OrderedDict`` (torch's
    safe unpickler fills only exact dicts), into which the node's items go; its flags
    (``__immutable__`` and the like) land in that dict's attributes. Nothing of yacs
    runs, and a file that names any other global is still refused.
    """

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


def allow_runner_checkpoint_types():
    """Make runner checkpoints load under ``weights_only=True``.

    Called where checkpoints are loaded and saved (:func:`load_checkpoint_file`, our
    runner, the tools that hand a file to the libraries' loaders), not on import.

    Allow-lists the types they hold (HistoryBuffer and numpy arrays and scalars) and
    keeps HistoryBuffer from pickling references to its methods. Also allow-listed:
    ``argparse.Namespace``, which DeiT-style training scripts (the official PVT and
    AttNet ones) store under ``'args'``, a plain attribute holder whose unpickling
    runs no code; and :class:`ConfigNodeStandIn` under the name of yacs' ``CfgNode``
    (the official Swin-ACmix training script's ``'config'``).
    """
    HistoryBuffer.__getstate__ = _history_buffer_state
    torch.serialization.add_safe_globals(
        [HistoryBuffer, argparse.Namespace, (ConfigNodeStandIn, 'yacs.config.CfgNode'),
         *_numpy_checkpoint_types()])


def _looks_like_torch_file(filename):
    """torch.save writes a zip archive (or, before torch 1.6, a pickle)."""
    if zipfile.is_zipfile(filename):
        return True
    with open(filename, 'rb') as f:
        return f.read(1) == b'\x80'


def load_checkpoint_file(filename, map_location='cpu'):
    """Load a checkpoint file or URL safely (no pickled code is run).

    Raises:
        CheckpointError: if the file is missing, truncated, not a checkpoint, or holds
            objects outside the allow-list.
    """
    allow_runner_checkpoint_types()
    is_url = re.match(r'^[a-z0-9+]+://', str(filename)) is not None
    if not is_url:
        if not osp.isfile(filename):
            raise CheckpointError(
                f'Checkpoint file not found: {filename}. Download it to that path, pass '
                'the right path, or drop the init_cfg/--resume that asks for it.')
        if not _looks_like_torch_file(filename):
            raise CheckpointError(
                f'Cannot read checkpoint {filename}: it is truncated or not a PyTorch '
                'checkpoint; download or save it again.')
    try:
        checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as err:
        found = re.search(r'(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)',
                          str(err))
        what = f' ({found.group(1)})' if found else ''
        raise CheckpointError(
            f'Refused to load {filename}: it holds objects that are not plain '
            f'weights{what}. acmix_mm loads checkpoints with weights_only=True so that '
            'a checkpoint cannot run code; only load files you trust, converted to '
            'plain tensors.') from None
    except (RuntimeError, EOFError, OSError) as err:
        if is_url:
            raise CheckpointError(
                f'Cannot download {filename} ({err}). Download it by hand and pass its '
                'path (e.g. --cfg-options model.backbone.init_cfg.checkpoint=PATH), or '
                'set model.backbone.init_cfg=None to train from scratch.') from None
        raise CheckpointError(
            f'Cannot read checkpoint {filename}: {err}. The file may be truncated or '
            'not a PyTorch checkpoint; download or save it again.') from None
    check_finite(checkpoint, filename)
    return checkpoint


def _non_finite_tensors(obj, prefix=''):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            yield prefix
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _non_finite_tensors(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _non_finite_tensors(value, f'{prefix}.{i}')


def check_finite(checkpoint, filename):
    """Refuse a checkpoint with NaN or infinite tensors (weights, buffers, optimizer
    state): the run that wrote it diverged, and its weights would poison what loads them.

    Raises:
        CheckpointError: naming the first tensors that are not finite.
    """
    bad = list(_non_finite_tensors(checkpoint))
    if bad:
        shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise CheckpointError(
            f'Refused checkpoint {filename}: {len(bad)} tensors hold NaN or infinite '
            f'values ({shown}); the run that wrote it diverged. Use an earlier checkpoint '
            'of that run, or train again with a lower learning rate.')


def extract_state_dict(checkpoint, prefix='backbone.'):
    """The weights inside a checkpoint: ``state_dict`` or ``model`` or the dict itself.

    A detector or segmentor checkpoint holds the backbone under ``prefix``; only that
    part is returned. A ``module.`` prefix left by DataParallel is stripped.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'Expected a dict of weights, got {type(checkpoint)}.')
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
            break
    state_dict = OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in checkpoint.items())
    if prefix and any(k.startswith(prefix) for k in state_dict):
        state_dict = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                                 if k.startswith(prefix))
    return state_dict


def rename_key(key, renames):
    """``key`` after the first ``(pattern, replacement)`` of ``renames`` that matches it
    (``re.sub``), or unchanged if none does."""
    for pattern, replacement in renames:
        new_key, found = re.subn(pattern, replacement, key)
        if found:
            return new_key
    return key


def join_projections(state_dict, keys):
    """Several projections (linear layers or 1x1 convolutions) joined into one: their
    weights (kernels flattened) or biases, stacked in the order of ``keys``. The
    official codes keep q, k and v (or q and kv) apart; our shared projection is one."""
    return torch.cat([state_dict[key].flatten(1) if state_dict[key].dim() > 1 else
                      state_dict[key] for key in keys])


def _missing_keys(own, state_dict, new_keys=()):
    """Model keys absent from ``state_dict``, split into missing ones and those that
    match a ``new_keys`` pattern (expected to be absent)."""
    absent = [k for k in own if k not in state_dict]
    fresh = [k for k in absent if any(re.search(p, k) for p in new_keys)]
    return [k for k in absent if k not in fresh], fresh


def _fit_problems(own, state_dict, missing):
    """What keeps ``state_dict`` from fitting a model whose state is ``own``, as indented
    lines (each list cut at 20 keys), or '' when it fits."""
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    problems = []
    for title, keys in (('keys in the checkpoint that the model does not have',
                         unexpected), ('shape mismatches', mismatched),
                        ('model weights the checkpoint does not have', missing)):
        if keys:
            shown = '\n    '.join(keys[:20])
            more = f'\n    ... and {len(keys) - 20} more' if len(keys) > 20 else ''
            problems.append(f'  {title} ({len(keys)}):\n    {shown}{more}')
    return '\n'.join(problems)


def check_model_checkpoint(model, checkpoint, filename):
    """Raise unless ``checkpoint`` (loaded from ``filename``) holds exactly the weights of
    the whole ``model`` (a detector or segmentor), as testing needs.

    mmengine loads a model checkpoint non-strictly and only logs what does not fit, so a
    checkpoint of another model would be evaluated with random weights.

    Raises:
        CheckpointError: listing the keys the model lacks, the shapes that differ and
            the model weights the checkpoint lacks.
    """
    state_dict = extract_state_dict(checkpoint, prefix=None)
    own = model.state_dict()
    problems = _fit_problems(own, state_dict, _missing_keys(own, state_dict)[0])
    if problems:
        raise CheckpointError(
            f'Checkpoint {filename} does not fit the {type(model).__name__} of this '
            f'config:\n{problems}\nPass the checkpoint this config trained (its '
            'work_dir holds epoch_*.pth / iter_*.pth), or the config it was trained with.')


def load_pretrained(module, filename, converter=None, new_keys=(), logger=None):
    """Load pretrained weights into a backbone, converting official layouts.

    Args:
        module (nn.Module): The backbone.
        filename (str): Path or URL of the checkpoint.
        converter (callable, optional): Maps a state dict in a foreign layout to ours
            and returns ``(state_dict, discarded)``, ``discarded`` listing as
            ``'key: reason'`` the foreign tensors it deliberately left out (an ImageNet
            classifier, buffers the model recomputes); these are logged.
        new_keys (Sequence[str]): Regular expressions of our parameter names that a
            foreign checkpoint cannot hold (e.g. the ACmix convolution path when
            starting from plain PVT). They keep their initialisation and are reported.
        logger (MMLogger, optional): Where to report. Default: the current logger.

    Raises:
        CheckpointError: if any checkpoint key has no place in the model, a shape
            differs, or a model parameter outside ``new_keys`` is not in the checkpoint.
    """
    logger = logger or MMLogger.get_current_instance()
    state_dict = extract_state_dict(load_checkpoint_file(filename))
    discarded = []
    if converter is not None:
        state_dict, discarded = converter(state_dict)
    own = module.state_dict()
    missing, fresh = _missing_keys(own, state_dict, new_keys)
    problems = _fit_problems(own, state_dict, missing)
    if problems:
        raise CheckpointError(
            f'Checkpoint {filename} does not fit {type(module).__name__}:\n' + problems +
            '\nCheck that the checkpoint is for this architecture (arch/depth) and '
            'layout, or set init_cfg=None.')
    module.load_state_dict(state_dict, strict=False)
    if discarded:
        print_log(f'Not used from {filename} ({len(discarded)} tensors):\n    ' +
                  '\n    '.join(discarded), logger=logger)
    print_log(
        f'Loaded {len(state_dict)} tensors from {filename} into '
        f'{type(module).__name__}' +
        (f'; {len(fresh)} ACmix-only tensors keep their initialisation' if fresh else
         ''),
        logger=logger)


def save_atomic(obj, filename):
    """``torch.save`` to a temporary file beside ``filename``, then rename it.

    A crash while writing leaves any earlier ``filename`` intact.
    """
    with atomic_output(filename) as partial:
        torch.save(obj, partial)
