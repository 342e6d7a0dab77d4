from .acmix import ACmix, ShiftConvPath, TokenACmix, fuse_acmix, shift_kernels
from .attention_paths import (PatchwiseAttentionPath, ShiftedWindowAttentionPath,
                              SlidingWindowAttentionPath, SpatialReductionAttentionPath)
from .sliding_window import local_attention

__all__ = [
    'ACmix', 'ShiftConvPath', 'TokenACmix', 'fuse_acmix', 'shift_kernels',
    'PatchwiseAttentionPath', 'ShiftedWindowAttentionPath', 'SlidingWindowAttentionPath',
    'SpatialReductionAttentionPath', 'local_attention'
]
