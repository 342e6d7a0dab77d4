"""Loading of the native extension and the Triton kernels, and the switch between them
and the PyTorch paths."""
import contextlib
import os

import torch

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


def native_cpu_fits(device, dtype):
    """Whether a native CPU op may serve a tensor on ``device`` of ``dtype``: the ops
    built and on, a CPU float32 or float64 tensor, and no export or jit trace under way
    (those take the standard operators; torch.compile traces the native ops through
    their fake implementations)."""
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return False
    return (native_enabled() and torch.device(device).type == 'cpu'
            and dtype in (torch.float32, torch.float64))


def triton_loaded():
    """Whether the Triton kernels for CUDA tensors are loaded (a GPU visible, Triton
    importable, ``ACMIX_MM_NATIVE_OPS`` not 0 at import)."""
    return TRITON_ERROR is None


def triton_enabled():
    """Whether layers use the Triton kernels on CUDA tensors: loaded and not switched
    off."""
    return TRITON_ERROR is None and _enabled


def native_status():
    """A one-line account of which path the layers run, for tools and logs, e.g.
    ``'native (C++ CPU kernels)'``, ``'native (C++ CPU kernels); CUDA: Triton kernels'``
    or ``'fallback: PyTorch (ACMIX_MM_NATIVE_OPS=0)'``. The CUDA part is there only where
    a GPU is visible."""
    if not _enabled:
        return 'fallback: PyTorch (ACMIX_MM_NATIVE_OPS=0)'
    if LOAD_ERROR is not None:
        status = f'fallback: PyTorch (native ops not built: {LOAD_ERROR})'
    else:
        status = 'native (C++ CPU kernels)'
    if TRITON_ERROR is None:
        return status + '; CUDA: Triton kernels'
    if torch.cuda.is_available():
        return status + f'; CUDA: masked fused attention (Triton not loaded: {TRITON_ERROR})'
    return status


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


def with_native_ops(step, enabled):
    """``step`` (a callable) run with the native operators switched on or off, for
    benchmarks that alternate both paths in one process."""
    def run(*args, **kwargs):
        with native_ops(enabled):
            return step(*args, **kwargs)
    return run


# The Triton kernels for CUDA tensors, loaded at import where a GPU is visible: not
# lazily (a first import inside a torch.compile trace would break the graph), and not on
# CPU-only machines (they would pay Triton's import for nothing). Last in this module,
# because the Triton modules import its functions.
TRITON_ERROR = 'no CUDA device'
if _enabled and torch.cuda.is_available():
    try:
        # Register torch.ops.acmix_mm.triton_*.
        from . import triton_patchwise, triton_window  # noqa: F401
        TRITON_ERROR = None
    except Exception as err:  # noqa: BLE001  (ImportError, or a Triton without a backend)
        TRITON_ERROR = f'{type(err).__name__}: {err}'
