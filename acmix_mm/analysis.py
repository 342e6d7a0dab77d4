"""Complexity counting with mmengine's analysis, taught the ops our models use.

mmengine's counter (the one whose counts give the paper's baseline columns, e.g. 230
GFLOPs for RetinaNet PVT-T at 800x1333) skips ``scaled_dot_product_attention``: without
a handle, attention computed through it would be left out and ACmix models would look
cheaper than they are. Sliding-window attention runs as a custom autograd function that
the tracer cannot look into; its modules report their own count (k*k keys per query, as
the paper counts it) through ``attention_flops``. Like the counter, we count one
multiply-add as one FLOP.
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
    reported = []

    def report(module, args, output):
        reported.append(module.attention_flops(args[0].shape[0], args[2]))

    hooks = [m.register_forward_hook(report) for m in model.modules()
             if hasattr(m, 'attention_flops')]
    try:
        analyzer = FlopAnalyzer(model, inputs).set_op_handle(**EXTRA_FLOP_HANDLES)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
    finally:
        for hook in hooks:
            hook.remove()
    return flops + sum(reported), parameter_count(model)['']
