from .acmix import ACmix, ShiftConvPath, shift_kernels
from .attention_paths import SpatialReductionAttentionPath

__all__ = ['ACmix', 'ShiftConvPath', 'shift_kernels', 'SpatialReductionAttentionPath']
