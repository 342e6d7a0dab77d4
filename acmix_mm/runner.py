"""A runner whose checkpoints are written atomically.

mmengine writes a checkpoint straight to its final name, so a run killed while saving
leaves a truncated file where a good one is expected. Here the file is written under a
temporary name in the same folder and renamed into place (atomic on POSIX); the
``last_checkpoint`` pointer that ``--resume`` follows is only updated after that.
"""
import os
import os.path as osp

from mmengine.registry import RUNNERS
from mmengine.runner import Runner


@RUNNERS.register_module()
class AtomicCheckpointRunner(Runner):
    """:class:`mmengine.runner.Runner` that never leaves a partly written checkpoint."""

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        if '://' in str(out_dir):  # remote backends write objects whole already
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        partial = f'.{filename}.partial'
        try:
            super().save_checkpoint(out_dir, partial, *args, **kwargs)
            os.replace(osp.join(out_dir, partial), osp.join(out_dir, filename))
        finally:
            if osp.exists(osp.join(out_dir, partial)):
                os.remove(osp.join(out_dir, partial))
