"""The Triton kernels for CUDA tensors (acmix_mm/ops/triton_window.py), tested here
without a GPU: tests/triton_interpreter_cases.py runs them under the Triton interpreter
in a pytest process of its own (``TRITON_INTERPRET=1`` must precede Triton's import,
and this process may have imported Triton already). Also the status line and the
layer's CUDA branch around the kernels, on the CPU operator.

torch's Linux wheels bring Triton, so its absence there is a failure, not a skip.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from acmix_mm import ops
from acmix_mm.layers import sliding_window

HERE = osp.dirname(osp.abspath(__file__))


def test_kernels_under_the_triton_interpreter():
    if importlib.util.find_spec('triton') is None:
        if sys.platform.startswith('linux'):
            pytest.fail('Triton is not installed (torch brings it on Linux)')
        pytest.skip(f'torch ships no Triton for {sys.platform}')
    env = dict(os.environ, TRITON_INTERPRET='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [osp.dirname(HERE)] + [p for p in [env.get('PYTHONPATH')] if p])
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         osp.join(HERE, 'triton_interpreter_cases.py')],
        cwd=osp.dirname(HERE), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert ' passed' in proc.stdout and 'skipped' not in proc.stdout, proc.stdout[-2000:]


def check_cuda_branch(stride, size):
    """The layer's CUDA branch builds padded planes around
    :func:`acmix_mm.ops.sliding_window_attention` (the Triton op on CUDA): it gives the
    PyTorch block path's outputs and gradients in float64, key offset, output scale and
    stride included."""
    generator = torch.Generator().manual_seed(0)
    batch, heads, dims = 2, 2, 3
    pixels = size[0] * size[1]
    qkv, offset, scale = (torch.randn(*shape, dtype=torch.float64, generator=generator,
                                      requires_grad=True)
                          for shape in ((batch, pixels, 3 * heads * dims), (pixels, dims),
                                        (1, )))
    options = dict(key_offset=offset, out_scale=scale, channel_major=True)
    got = sliding_window._padded_window_attention(qkv, size, heads, 7, stride, **options)
    got = got.view(batch, heads, dims, -1).permute(0, 3, 1, 2)
    expected, _ = sliding_window.local_attention(qkv, size, heads, 7, stride, **options)
    grad = torch.randn_like(expected)
    for ours, theirs in zip(
            (got, ) + torch.autograd.grad(got, (qkv, offset, scale), grad),
            (expected, ) + torch.autograd.grad(expected, (qkv, offset, scale), grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('stride,size', [(1, (5, 9)), (2, (9, 6))])
def test_cuda_branch_of_the_layer_equals_the_pytorch_path(stride, size):
    """:func:`check_cuda_branch` on the op CPU tensors take (the C++ op, or the unfold
    reference): the code around the kernel; triton_interpreter_cases.py runs it on the
    Triton kernel."""
    check_cuda_branch(stride, size)


def test_status_names_the_cuda_path(monkeypatch):
    """Where a GPU is visible, the status says what runs on it; on CPU-only machines the
    line is the CPU's alone (Triton is not even imported)."""
    if not torch.cuda.is_available():
        assert not ops.triton_loaded() and 'CUDA' not in ops.native_status()
        assert 'acmix_mm.ops.triton_window' not in sys.modules
    cpu_part = ops.native_status().split(';')[0]
    monkeypatch.setattr(ops._native, 'TRITON_ERROR', None)
    assert ops.native_status() == cpu_part + '; CUDA: Triton kernels'
    assert ops.triton_enabled()
    with ops.native_ops(False):
        assert not ops.triton_enabled()
    monkeypatch.setattr(ops._native, 'TRITON_ERROR', 'ImportError: no triton')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert ops.native_status() == (cpu_part + '; CUDA: masked fused attention (Triton not '
                                   'loaded: ImportError: no triton)')
    assert not ops.triton_enabled()


def test_gpu_check_script_parses():
    """benchmarks/gpu_check.sh is valid bash and refuses an unknown mode (its GPU run
    needs a GPU; ``--cpu-dry-run`` runs its checks on the CPU in minutes)."""
    script = osp.join(osp.dirname(HERE), 'benchmarks', 'gpu_check.sh')
    assert subprocess.run(['bash', '-n', script]).returncode == 0
    proc = subprocess.run(['bash', script, '--bogus'], capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage' in proc.stdout
