"""Files written whole or not at all."""
import contextlib
import os
import os.path as osp


@contextlib.contextmanager
def atomic_output(filename):
    """Yield a temporary path beside ``filename`` to write to; rename it to
    ``filename`` when the block succeeds, remove it when it fails.

    A crash while writing leaves any earlier ``filename`` intact (a checkpoint, a
    converted file, a plot), never a half-written one.
    """
    directory, name = osp.split(osp.abspath(filename))
    partial = osp.join(directory, f'.{name}.partial')
    try:
        yield partial
        os.replace(partial, filename)
    finally:
        if osp.exists(partial):
            os.remove(partial)
