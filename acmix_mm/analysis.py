"""Complexity counting with mmengine's analysis, taught the ops our models use.

mmengine's counter (the one whose counts give the paper's baseline columns, e.g. 230
GFLOPs for RetinaNet PVT-T at 800x1333) skips ``scaled_dot_product_attention``: without
a handle, attention computed through it would be left out and ACmix models would look
cheaper than they are. Like the counter, we count one multiply-add as one FLOP.
"""
from math import prod

from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape


def sdpa_flop_jit(inputs, outputs):
    """q k^T and (attention) v of scaled_dot_product_attention, as two matmuls."""
    query, key, value = (get_shape(v) for v in inputs[:3])
    return prod(query[:-1]) * key[-2] * (query[-1] + value[-1])


EXTRA_FLOP_HANDLES = {'aten::scaled_dot_product_attention': sdpa_flop_jit}


def complexity(model, inputs):
    """FLOPs (multiply-adds) and parameters of ``model(*inputs)``.

    Returns:
        tuple[int, int]: (flops, params).
    """
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**EXTRA_FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analyzer.total(), parameter_count(model)['']
