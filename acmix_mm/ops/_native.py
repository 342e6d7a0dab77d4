"""Loading of the native extension and the switch between it and the PyTorch paths."""
import contextlib
import os

LOAD_ERROR = None
try:
    from . import _C  # noqa: F401  (registers torch.ops.acmix_mm.*)
except ImportError as err:  # not built, or built against another torch
    LOAD_ERROR = f'{type(err).__name__}: {err}'

# Read once at import; tests and benchmarks switch with native_ops().
_enabled = os.environ.get('ACMIX_MM_NATIVE_OPS', '1') != '0'


def native_built():
    """Whether the native extension is built and loaded."""
    return LOAD_ERROR is None


def native_enabled():
    """Whether layers use the native operators: built and not switched off."""
    return LOAD_ERROR is None and _enabled


def native_status():
    """A one-line account of which path the layers run, for tools and logs, e.g.
    ``'native (C++ CPU kernels)'`` or ``'fallback: PyTorch (ACMIX_MM_NATIVE_OPS=0)'``."""
    if LOAD_ERROR is not None:
        return f'fallback: PyTorch (native ops not built: {LOAD_ERROR})'
    if not _enabled:
        return 'fallback: PyTorch (ACMIX_MM_NATIVE_OPS=0)'
    return 'native (C++ CPU kernels)'


@contextlib.contextmanager
def native_ops(enabled):
    """Switch the native operators on or off inside a ``with`` block (tests and
    benchmarks compare both paths in one process); restores the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous
