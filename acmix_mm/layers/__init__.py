from .acmix import ACmix, FusedConvPath, ShiftConvPath, TokenACmix, fuse_acmix, shift_kernels
from .atconv import ATConv, GatedConvFFN, LayerNorm2d, LayerScale2d, RMSNorm2d
from .attention_paths import (
                              PatchwiseAttentionPath,
                              ShiftedWindowAttentionPath,
                              SlidingWindowAttentionPath,
                              SpatialReductionAttentionPath,
)
from .batch_norm import NativeBatchNorm2d
from .sliding_window import local_attention
from .sync_batchnorm import CPUSyncBatchNorm, convert_to_cpu_sync_batchnorm

__all__ = [
    'ATConv', 'GatedConvFFN', 'LayerNorm2d', 'LayerScale2d', 'RMSNorm2d', 'ACmix',
    'FusedConvPath', 'ShiftConvPath', 'TokenACmix', 'fuse_acmix', 'shift_kernels',
    'PatchwiseAttentionPath', 'ShiftedWindowAttentionPath',
    'SlidingWindowAttentionPath', 'SpatialReductionAttentionPath', 'local_attention',
    'CPUSyncBatchNorm', 'convert_to_cpu_sync_batchnorm', 'NativeBatchNorm2d'
]
