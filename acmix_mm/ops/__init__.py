"""Native operators of acmix_mm, each beside a PyTorch reference of the same op.

The C++ CPU kernels (``csrc/``) are built by ``setup.py`` during the README's set-up
and registered as ``torch.ops.acmix_mm.*`` custom operators, with fake (meta)
implementations and autograd formulas registered here, so that torch.compile traces
them without graph breaks. The Triton kernels (``triton_window.py``) serve CUDA tensors
the same way, loaded where a GPU is visible. Where the extension is not built (Triton
missing, on CUDA), or the environment sets ``ACMIX_MM_NATIVE_OPS=0``, the layers run
their pure-PyTorch paths instead; :func:`native_status` says which.
"""
from ._native import (
                      native_built,
                      native_enabled,
                      native_ops,
                      native_status,
                      triton_enabled,
                      triton_loaded,
                      with_native_ops,
)
from .batch_norm import batch_norm_nchw, batch_norm_nchw_usable
from .layout import contiguous_tokens, to_channels_first, to_channels_last
from .max_pool import max_pool2x2, max_pool2x2_usable
from .patchwise import (
                      patch_aggregate,
                      patch_aggregate_reference,
                      patch_hidden,
                      patch_hidden_reference,
                      patch_moments,
                      patch_moments_reference,
)
from .pieces_conv import (
                      narrow_pieces_conv,
                      narrow_pieces_conv_usable,
                      pieces_conv,
                      pieces_conv_fits,
                      pieces_conv_reference,
                      pieces_conv_usable,
)
from .sliding_window import (
                      reflect_window_attention,
                      reflect_window_attention_plus_conv,
                      sliding_window_attention,
                      sliding_window_attention_reference,
)

__all__ = [
    'batch_norm_nchw', 'batch_norm_nchw_usable', 'contiguous_tokens', 'max_pool2x2',
    'max_pool2x2_usable', 'native_built',
    'narrow_pieces_conv', 'narrow_pieces_conv_usable', 'native_enabled', 'native_ops',
    'native_status', 'patch_aggregate',
    'patch_aggregate_reference', 'patch_hidden', 'patch_hidden_reference', 'patch_moments',
    'patch_moments_reference', 'pieces_conv', 'pieces_conv_fits', 'pieces_conv_reference',
    'pieces_conv_usable',
    'reflect_window_attention', 'reflect_window_attention_plus_conv',
    'sliding_window_attention',
    'sliding_window_attention_reference', 'to_channels_first', 'to_channels_last',
    'triton_enabled', 'triton_loaded', 'with_native_ops'
]
