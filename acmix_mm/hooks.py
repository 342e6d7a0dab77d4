"""Hooks that keep a run from losing or poisoning what it wrote.

:class:`AtomicCheckpointRunner` puts both in place of (or beside) mmengine's defaults,
so every config that runs on it gets them without naming them.
"""
import contextlib
import math
import signal
import threading

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from .errors import AcmixError


class NonFiniteLossError(AcmixError, FloatingPointError):
    """The training loss became NaN or infinite."""


class _RemovalsDeferred:
    """A file backend whose ``remove`` and ``rmtree`` only record what they were asked,
    and tell ``on_change`` the list so far."""

    def __init__(self, backend, on_change):
        self.backend, self.deferred, self.on_change = backend, [], on_change

    def remove(self, path):
        self.deferred.append(('remove', path))
        self.on_change(self.deferred)

    def rmtree(self, path):
        self.deferred.append(('rmtree', path))
        self.on_change(self.deferred)

    def __getattr__(self, name):
        return getattr(self.backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` that removes old checkpoints only after
    the new one is complete.

    mmengine deletes the checkpoint that ``max_keep_ckpts`` (or a new best) pushes out
    *before* it writes the next one, so a run killed during that save keeps no
    checkpoint at all and ``last_checkpoint`` names a deleted file. Here the removals
    are deferred until the new file is in place and the pointer names it. Takes the
    same arguments as :class:`~mmengine.hooks.CheckpointHook`.

    The removals due are also noted in the new checkpoint (its message hub), before it
    is written: a run killed after the save but before the removals leaves them to the
    run that resumes from it, which makes them first.
    """
    PENDING = 'deferred_ckpt_removals'

    @contextlib.contextmanager
    def _removals_deferred(self, runner):
        backend = self.file_backend

        def note(deferred):
            runner.message_hub.update_info(self.PENDING, list(deferred))

        with interrupts_deferred():
            self.file_backend = _RemovalsDeferred(backend, note)
            try:
                yield
            finally:
                deferred, self.file_backend = self.file_backend.deferred, backend
            # Reached only when the save succeeded: now the old files may go.
            self._remove(deferred)
            note([])

    def _remove(self, removals):
        if not is_main_process():
            return
        for name, path in removals:
            if self.file_backend.exists(path):
                getattr(self.file_backend, name)(path)

    def before_train(self, runner):
        super().before_train(runner)
        # Removals a killed run had due (see above), now that this run resumed after it.
        self._remove(runner.message_hub.runtime_info.get(self.PENDING, []))
        runner.message_hub.update_info(self.PENDING, [])

    def _save_checkpoint_with_step(self, runner, step, meta):
        with self._removals_deferred(runner):
            super()._save_checkpoint_with_step(runner, step, meta)

    def _save_best_checkpoint(self, runner, metrics):
        with self._removals_deferred(runner):
            super()._save_best_checkpoint(runner, metrics)


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them.

    A save interrupted between writing the checkpoint and the ``last_checkpoint``
    pointer (mmengine writes it in place) would leave the pointer empty; held, the
    signal stops the run right after a complete save.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first iteration whose loss is NaN or infinite.

    mmengine trains on after a divergence and saves the NaN weights, which later load
    silently downstream. This hook runs before the checkpoint hook of the same
    iteration, so nothing after the divergence is saved.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not outputs:
            return
        values = {k: v for k, v in outputs.items()
                  if isinstance(v, (torch.Tensor, float, int))}
        finite = torch.isfinite(torch.stack(
            [torch.as_tensor(v, dtype=torch.float32).detach().cpu().mean()
             for v in values.values()])).all()
        if bool(finite):
            return
        terms = ', '.join(f'{k}={float(torch.as_tensor(v).float().mean()):.4g}'
                          for k, v in values.items())
        lr = ''
        if hasattr(runner, 'optim_wrapper'):
            rates = runner.optim_wrapper.get_lr()
            first = next(iter(rates.values()), None)
            if first and not math.isnan(first[0]):
                lr = f' (learning rate {first[0]:.4g})'
        raise NonFiniteLossError(
            f'iteration {runner.iter + 1}: the loss is not finite ({terms}); training '
            f'stopped and nothing after this iteration was saved. Try a lower learning '
            f'rate{lr} (optim_wrapper.optimizer.lr), --auto-scale-lr when the total '
            'batch is smaller than the config\'s, or gradient clipping '
            '(optim_wrapper.clip_grad=dict(max_norm=1.0)).')
