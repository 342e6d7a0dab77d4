"""The Triton kernels for CUDA tensors (acmix_mm/ops/triton_window.py and
triton_patchwise.py), tested here without a GPU: tests/triton_interpreter_cases.py runs
them under the Triton interpreter in a pytest process of its own (``TRITON_INTERPRET=1``
must precede Triton's import, and this process may have imported Triton already). Also
the status line and the layer's CUDA branch around the kernels, on the CPU operator.

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

from conftest import load_script

HERE = osp.dirname(osp.abspath(__file__))


def needs_triton():
    if importlib.util.find_spec('triton') is None:
        if sys.platform.startswith('linux'):
            pytest.fail('Triton is not installed (torch brings it on Linux)')
        pytest.skip(f'torch ships no Triton for {sys.platform}')


def test_kernels_under_the_triton_interpreter():
    needs_triton()
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
        assert ops._native.TRITON_ERROR == 'no CUDA device'  # not imported at all
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


def test_gpu_check_backbone_stage():
    """benchmarks/gpu_check.py's backbone check on the CPU (tiny inputs): each backbone
    with the native ops and with the fallback within the tolerance the GPU run must meet
    against the CPU, one record each."""
    gpu_check = load_script('benchmarks/gpu_check.py')
    checks = gpu_check.Checks(torch.device('cpu'))
    gpu_check.check_backbones(checks, torch.device('cpu'), dry_run=True)
    assert len(checks.records) == 2 * len(gpu_check.BACKBONES)
    assert not checks.failed, [(r['figure'], r['details']) for r in checks.records
                               if not r['details']['passed']]


def test_gpu_check_script_parses():
    """benchmarks/gpu_check.sh is valid bash and refuses an unknown mode (its GPU run
    needs a GPU; ``--cpu-dry-run`` runs its checks on the CPU in minutes)."""
    script = osp.join(osp.dirname(HERE), 'benchmarks', 'gpu_check.sh')
    assert subprocess.run(['bash', '-n', script]).returncode == 0
    proc = subprocess.run(['bash', script, '--bogus'], capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage' in proc.stdout


@pytest.mark.parametrize('dtype', ['fp16', 'bf16', 'fp64'])
def test_kernels_compile_for_hopper(dtype):
    """The interpreter runs the kernels' Python but checks no types: here Triton
    compiles all six (attention and patch aggregation) for sm_90 (H100, H200) down to
    machine code with its own ptxas, no GPU needed, in half precision and in float64 (as
    benchmarks/gpu_check.py runs them)."""
    needs_triton()
    if os.environ.get('TRITON_INTERPRET') == '1':
        pytest.fail('TRITON_INTERPRET=1 is set for the whole test run')
    import triton.language as tl

    from acmix_mm.ops import triton_patchwise, triton_window
    acc = 'fp64' if dtype == 'fp64' else 'fp32'
    # Pointer arguments by name: the accumulation type's or the inputs'.
    types = {name: f'*{acc}' for name in ('lse_ptr', 'delta_ptr', 'scale_ptr')}
    types.update({name: 'i32' for name in triton_window._SIZES})
    for kernel, block in ((triton_window._forward_kernel, 'BLOCK_Q'),
                          (triton_window._backward_query_kernel, 'BLOCK_Q'),
                          (triton_window._backward_key_kernel, 'BLOCK_K')):
        signature = {name: types.get(name, f'*{dtype}') if name.endswith('_ptr') or
                     name in types else 'constexpr' for name in kernel.arg_names}
        constants = {'KERNEL': 7, 'STRIDE': 2, block: 64, 'BLOCK_W': 32, 'BLOCK_D': 32,
                     'ACC': tl.float64 if dtype == 'fp64' else tl.float32}
        compile_for_hopper(kernel, signature, constants)
    # The patch aggregation's: the weights' gradient in the accumulation type.
    types = {name: 'i32' for name in triton_patchwise._SIZES}
    types['dw_ptr'] = f'*{acc}'
    for kernel in (triton_patchwise._forward_kernel, triton_patchwise._weight_grad_kernel,
                   triton_patchwise._value_grad_kernel):
        signature = {name: types.get(name, f'*{dtype}') if name.endswith('_ptr') or
                     name in types else 'constexpr' for name in kernel.arg_names}
        constants = {'KERNEL': 7, 'BLOCK_P': 64, 'BLOCK_J': 64,
                     'ACC': tl.float64 if dtype == 'fp64' else tl.float32}
        compile_for_hopper(kernel, signature, constants)


def compile_for_hopper(kernel, signature, constants):
    """Compiles a Triton kernel for sm_90 down to a cubin (Triton's own ptxas)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    compiled = triton.compile(ASTSource(kernel, signature, constants),
                              target=GPUTarget('cuda', 90, 32), options=dict(num_warps=4))
    assert compiled.asm['cubin'], kernel.__name__
