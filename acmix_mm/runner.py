"""A runner whose checkpoints are written atomically, mixed precision and distributed
training on CPU, and the hook that fuses ACmix layers for testing.

mmengine writes a checkpoint straight to its final name, so a run killed while saving
leaves a truncated file where a good one is expected. Here the file is written under a
temporary name in the same folder and renamed into place (atomic on POSIX); the
``last_checkpoint`` pointer that ``--resume`` follows is only updated after that.
"""
import os.path as osp
from contextlib import contextmanager

import torch
from mmengine.dist import get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPERS, RUNNERS
from mmengine.runner import Runner

from .checkpoint import allow_runner_checkpoint_types
from .fileio import atomic_output
from .layers import convert_to_cpu_sync_batchnorm
from .runner_utils import UserError


@RUNNERS.register_module()
class AtomicCheckpointRunner(Runner):
    """:class:`mmengine.runner.Runner` that never leaves a partly written checkpoint,
    and whose checkpoints load under torch's ``weights_only=True``
    (:func:`~acmix_mm.checkpoint.allow_runner_checkpoint_types`)."""

    def __init__(self, *args, **kwargs):
        allow_runner_checkpoint_types()  # before it loads (resume, load_from) or saves
        super().__init__(*args, **kwargs)

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        # Only the main process writes (the parent method does nothing elsewhere);
        # remote backends write objects whole already.
        if not is_main_process() or '://' in str(out_dir):
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        with atomic_output(osp.join(out_dir, filename)) as partial:
            super().save_checkpoint(out_dir, osp.basename(partial), *args, **kwargs)


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
