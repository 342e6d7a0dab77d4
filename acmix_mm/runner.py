"""A runner that loses nothing it wrote, mixed precision and distributed training on
CPU, and the hook that fuses ACmix layers for testing.

mmengine writes a checkpoint straight to its final name, so a run killed while saving
leaves a truncated file where a good one is expected. Here the file is written under a
temporary name in the same folder and renamed into place (atomic on POSIX); the
``last_checkpoint`` pointer that ``--resume`` follows is only updated after that, and
older checkpoints are removed only then (:class:`~acmix_mm.hooks.SafeCheckpointHook`).
"""
import errno
import glob
import itertools
import os.path as osp
import re
import zipfile
from contextlib import contextmanager

import torch
from mmengine.dist import get_rank, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, LOOPS, MODEL_WRAPPERS, OPTIM_WRAPPERS, RUNNERS
from mmengine.runner import EpochBasedTrainLoop, Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from .checkpoint import allow_runner_checkpoint_types, load_checkpoint_file
from .errors import CheckpointError
from .fileio import atomic_output
from .hooks import FiniteLossHook, SafeCheckpointHook
from .layers import convert_to_cpu_sync_batchnorm
from .runner_utils import UserError


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """:class:`mmengine.runner.EpochBasedTrainLoop` that resumes an iteration
    checkpoint inside an epoch at its iteration.

    mmengine restarts the epoch from its first batch while the iteration count goes
    on, so a resumed run trains more iterations than its schedule. Here the batches
    the checkpoint already trained on are drawn and dropped (the sampler's order is
    fixed by the seed and the epoch, so they are the same batches), then training goes
    on from the next one.
    """

    def run_epoch(self):
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        batches = enumerate(self.dataloader)
        done = self._iter - self._epoch * len(self.dataloader)
        if done > 0:
            self.runner.logger.info(f'Resuming inside epoch {self._epoch + 1}: skipping '
                                    f'the {done} batches it already trained on.')
            batches = itertools.islice(batches, done, None)
        for idx, data_batch in batches:
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


def _is_type(cfg, cls):
    return isinstance(cfg, dict) and cfg.get('type') in (cls, cls.__name__)


@RUNNERS.register_module()
class AtomicCheckpointRunner(Runner):
    """:class:`mmengine.runner.Runner` that loses nothing it wrote.

    * Checkpoints are written under a temporary name and renamed into place; older
      ones go only after that (:class:`~acmix_mm.hooks.SafeCheckpointHook` takes the
      place of mmengine's ``CheckpointHook``).
    * A NaN or infinite loss stops the run (:class:`~acmix_mm.hooks.FiniteLossHook`).
    * An iteration checkpoint inside an epoch resumes at its iteration
      (:class:`ResumableEpochBasedTrainLoop` takes the place of mmengine's loop).
    * Checkpoints load under torch's ``weights_only=True``
      (:func:`~acmix_mm.checkpoint.allow_runner_checkpoint_types`), with one clear
      error for a missing, truncated, unsafe or non-finite file.
    """

    def __init__(self, *args, **kwargs):
        from .transforms import check_pipelines  # mmseg's transforms: import when used
        allow_runner_checkpoint_types()  # before it loads (resume, load_from) or saves
        cfg = kwargs.get('cfg') or {}
        head = {}
        if cfg.get('default_scope') == 'mmseg':
            head = (cfg.get('model') or {}).get('decode_head') or {}
            if isinstance(head, list):  # cascade decode heads share the classes
                head = head[-1]
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if isinstance(kwargs.get(loader), dict):
                kwargs[loader] = check_pipelines(
                    kwargs[loader], cfg.get('truncated_images', 'error'),
                    seg_classes=head.get('num_classes'),
                    ignore_index=head.get('ignore_index', 255))
        super().__init__(*args, **kwargs)

    def register_hooks(self, default_hooks=None, custom_hooks=None):
        default_hooks = dict(default_hooks or {})
        checkpoint = default_hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
        if _is_type(checkpoint, CheckpointHook):
            default_hooks['checkpoint'] = dict(checkpoint, type=SafeCheckpointHook)
        custom_hooks = list(custom_hooks or [])
        if not any(_is_type(h, FiniteLossHook) or isinstance(h, FiniteLossHook)
                   for h in custom_hooks):
            custom_hooks.append(dict(type=FiniteLossHook))
        super().register_hooks(default_hooks, custom_hooks)

    def build_train_loop(self, loop):
        if _is_type(loop, EpochBasedTrainLoop):
            loop = dict(loop, type=ResumableEpochBasedTrainLoop)
        elif isinstance(loop, dict) and 'type' not in loop and loop.get('by_epoch'):
            loop = dict(loop, type=ResumableEpochBasedTrainLoop)
            loop.pop('by_epoch')
        return super().build_train_loop(loop)

    def load_or_resume(self):
        if self._resume and self._load_from is None and not self._has_loaded:
            # --resume without a file: the pointer's checkpoint, or the newest complete
            # one where the pointer is gone or stale (mmengine would fail on it).
            found = resumable_checkpoint(self.work_dir)
            if found is not None:
                self._load_from = found
                self.logger.info(f'Resuming from {found}, the latest checkpoint in '
                                 f'{self.work_dir}.')
        super().load_or_resume()

    def resume(self, filename, *args, **kwargs):
        try:
            super().resume(filename, *args, **kwargs)
        except KeyError as err:  # mmengine reads checkpoint['meta']['epoch'] and so on
            raise CheckpointError(
                f'Cannot resume from {filename}: it is not a training checkpoint of '
                f'mmengine (it has no {err}). To start from its weights, pass it as '
                f'--cfg-options load_from={filename} instead of --resume.') from None

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):  # noqa: B006 (mmengine's default)
        """As :meth:`mmengine.runner.Runner.load_checkpoint` (used by ``load_from`` and
        ``--resume``), through :func:`~acmix_mm.checkpoint.load_checkpoint_file`."""
        checkpoint = load_checkpoint_file(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict,
                                               revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        # Only the main process writes (the parent method does nothing elsewhere);
        # remote backends write objects whole already.
        if not is_main_process() or '://' in str(out_dir):
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        target = osp.join(out_dir, filename)
        try:
            with atomic_output(target) as partial:
                super().save_checkpoint(out_dir, osp.basename(partial), *args, **kwargs)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
                raise
            raise UserError(
                f'Cannot write checkpoint {target}: {err.strerror} (errno {err.errno}); '
                f'the last good checkpoint is {last_good_checkpoint(self.work_dir)}. Free '
                'space or make the work dir writable, then rerun with --resume.') from None


def resumable_checkpoint(work_dir):
    """The checkpoint ``--resume`` takes in ``work_dir``: the one ``last_checkpoint``
    names, else the newest complete ``epoch_*.pth`` / ``iter_*.pth``; None if none."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            path = f.read().strip()
        if path and osp.isfile(path) and zipfile.is_zipfile(path):
            return path
    found = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
             if re.fullmatch(r'(epoch|iter)_\d+\.pth', osp.basename(p))
             and zipfile.is_zipfile(p)]
    return max(found, key=osp.getmtime) if found else None


def last_good_checkpoint(work_dir):
    """Where the last good checkpoint of ``work_dir`` is, for messages."""
    return resumable_checkpoint(work_dir) or 'none (no checkpoint was saved yet)'


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """Mixed precision on CPU: forward under bfloat16 autocast, no loss scaling.

    mmengine's ``AmpOptimWrapper`` refuses to run without an accelerator; bfloat16 has
    float32's exponent range, so gradients need no scaling. ``tools/train.py --amp``
    picks this wrapper when there is no GPU and mmengine's fp16 one when there is.

    Args:
        dtype (str): 'bfloat16' (float16 autocast is slow or missing on CPU).
            Default: 'bfloat16'.
        **kwargs: Arguments of :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, dtype='bfloat16', **kwargs):
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for processes on CPUs (gloo), which SyncBN configs can use.

    torch's ``SyncBatchNorm`` (and mmcv's) run on GPUs only and DDP refuses them on CPU,
    so every one is replaced by :class:`acmix_mm.layers.CPUSyncBatchNorm` first: batch
    statistics still span all processes. ``tools/train.py`` picks this wrapper for
    distributed runs without a GPU. A failure while wrapping (a process whose model
    differs, or one that died) ends in one clear error on each process.

    Args:
        module (nn.Module): The model.
        **kwargs: Arguments of :class:`mmengine.model.MMDistributedDataParallel`
            (``device_ids`` must be None on CPU).
    """

    def __init__(self, module, **kwargs):
        module = convert_to_cpu_sync_batchnorm(module)
        try:
            super().__init__(module=module, **kwargs)
        except (RuntimeError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise UserError(
                f'rank {get_rank()}: cannot set up distributed training of the model: '
                f'{reason}. Every process must build the same model from the same '
                'config; if another process failed first, its error names the '
                'cause.') from None


@HOOKS.register_module()
class FuseACmixHook(Hook):
    """Before testing (after the checkpoint is loaded), fuse the ACmix convolution
    paths into single grouped convolutions where that is cheaper
    (``tools/test.py --deploy``). Outputs equal the training form within float
    rounding.

    Args:
        only_cheaper (bool): See :func:`acmix_mm.layers.fuse_acmix`. Default: True.
    """

    def __init__(self, only_cheaper=True):
        self.only_cheaper = only_cheaper

    def before_test(self, runner):
        from .layers import fuse_acmix
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        count = fuse_acmix(model, self.only_cheaper)
        runner.logger.info(f'Fused the convolution path of {count} ACmix layers.')
