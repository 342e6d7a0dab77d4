from .acmix import ACmix, ShiftConvPath, TokenACmix, fuse_acmix, shift_kernels
from .atconv import ATConv, GatedConvFFN, LayerNorm2d, LayerScale2d, RMSNorm2d
from .attention_paths import (PatchwiseAttentionPath, ShiftedWindowAttentionPath,
                              SlidingWindowAttentionPath, SpatialReductionAttentionPath)
from .sliding_window import local_attention

__all__ = [
    'ATConv', 'GatedConvFFN', 'LayerNorm2d', 'LayerScale2d', 'RMSNorm2d', 'ACmix',
    'ShiftConvPath', 'TokenACmix', 'fuse_acmix', 'shift_kernels',
    'PatchwiseAttentionPath', 'ShiftedWindowAttentionPath',
    'SlidingWindowAttentionPath', 'SpatialReductionAttentionPath', 'local_attention'
]
