"""Native operators (acmix_mm.ops): the C++ sliding-window attention against its unfold
definition and the official ResNet-ACmix, SAN's patchwise aggregation against the
official SAN formulation, their gradients, their registration as custom ops, and the
layers and backbones with the native ops on and off.

CI builds the extension through the README's set-up, so its absence is a failure here,
not a skip (unless ACMIX_MM_NATIVE_OPS=0 says that the fallback is wanted).
"""
import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from acmix_mm import ops
from acmix_mm.backbones import SAN, ResNetACmix, resnet_official_to_acmix
from acmix_mm.layers import ACmix, sliding_window
from acmix_mm.references.resnet_acmix import ReferenceACmix
from acmix_mm.references.san import (
    ReferenceSAM,
    ours_from_reference,
)

WANTED = os.environ.get('ACMIX_MM_NATIVE_OPS', '1') != '0'
needs_native = pytest.mark.skipif(not WANTED, reason='ACMIX_MM_NATIVE_OPS=0: fallback asked for')


def test_native_ops_are_built_unless_switched_off():
    if WANTED:
        assert ops.native_built(), ops.native_status()
        assert ops.native_enabled()
        assert ops.native_status().startswith('native')
    else:
        assert ops.native_status() == 'fallback: PyTorch (ACMIX_MM_NATIVE_OPS=0)'


def padded_inputs(planes, dims, size, kernel_size, stride, dtype=torch.float64, seed=0):
    """Queries (N, d, H', W') and padded keys and values (N, d, H + k - 1, W + k - 1)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    out_shape = (-(-height // stride), -(-width // stride))
    padded = (height + kernel_size - 1, width + kernel_size - 1)
    return [
        torch.randn(planes, dims, *shape, dtype=dtype, generator=generator,
                    requires_grad=True)
        for shape in (out_shape, padded, padded)
    ]


def native(query, key, value, kernel_size, stride, scale):
    return torch.ops.acmix_mm.sliding_window_attention(query, key, value, kernel_size,
                                                       stride, scale)[0]


# (planes, head_dims, map size before padding, kernel, stride): maps just above the
# reflection limit (4x4 for kernel 7), odd sizes, rows wider than the kernel's 128-pixel
# tiles, head widths that are no multiple of the four products (or channels) summed at a
# time. With kernels 3, 5 and 7 the register-blocked kernels take rows of at least a
# vector (16 pixels in float32, 8 in float64), at stride 1 and 2: whole vectors, a last
# one shifted back over its neighbour (37, 66 and 20 wide rows), and no tile narrower than
# a vector (rows of 133 = 128 + 5 queries); the row kernels take narrower rows. Key rows
# that no window reaches (below the last window, or between windows of 1 at stride 2)
# get zero gradients.
SHAPES = [(1, 4, (4, 4), 7, 1), (3, 5, (9, 13), 7, 2), (2, 8, (11, 6), 3, 1),
          (2, 3, (4, 5), 7, 2), (2, 16, (7, 70), 7, 1), (4, 1, (5, 131), 5, 2),
          (1, 6, (8, 8), 1, 1), (2, 5, (6, 37), 5, 1), (1, 7, (5, 140), 3, 1),
          (1, 2, (3, 9), 9, 1), (1, 3, (6, 40), 3, 2), (1, 3, (5, 133), 7, 1),
          (1, 2, (5, 266), 7, 2), (1, 2, (6, 7), 1, 2)]


@needs_native
@pytest.mark.parametrize('planes,dims,size,kernel_size,stride', SHAPES)
def test_op_equals_the_unfold_definition_in_float64(planes, dims, size, kernel_size,
                                                    stride):
    inputs = padded_inputs(planes, dims, size, kernel_size, stride)
    scale = dims**-0.5
    got = native(*inputs, kernel_size, stride, scale)
    expected = ops.sliding_window_attention_reference(*inputs, kernel_size, stride, scale)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    grad = torch.randn_like(expected)
    for ours, theirs in zip(torch.autograd.grad(got, inputs, grad),
                            torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


@needs_native
def test_op_on_one_thread_equals_the_unfold_definition():
    """On one thread every case has a plane per thread: the backward pass stores each key
    row's gradients once (zeros where no window reaches), where on more threads than
    planes it adds bands into zeroed planes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for planes, dims, size, kernel_size, stride in SHAPES:
            test_op_equals_the_unfold_definition_in_float64(planes, dims, size, kernel_size,
                                                            stride)
    finally:
        torch.set_num_threads(previous)


@needs_native
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('planes,rows,threads', [(8, 10, 2), (2, 30, 4)])
def test_backward_in_bands_adds_up(stride, planes, rows, threads):
    """Maps large enough that the backward pass keeps a few query rows' weights at a
    time: with a thread per plane, a ring of the last ceil(k / S) query rows (each key
    row's gradients stored once); with fewer planes than threads, all threads on each
    band of a few MB, key rows seen from two bands adding up."""
    inputs = padded_inputs(planes, 2, (rows * stride, 700 * stride), 7, stride)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = native(*inputs, 7, stride, 0.5)
        expected = ops.sliding_window_attention_reference(*inputs, 7, stride, 0.5)
        grad = torch.randn_like(expected)
        for ours, theirs in zip(torch.autograd.grad(got, inputs, grad),
                                torch.autograd.grad(expected, inputs, grad)):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    finally:
        torch.set_num_threads(previous)


@needs_native
@pytest.mark.parametrize('stride', [1, 2])
def test_op_in_float32_is_close_to_float64(stride):
    """float32 runs a polynomial exp; it stays within float32 rounding of the exact
    result."""
    assert_float32_follows_float64(lambda *x: native(*x, 7, stride, 0.25),
                                   padded_inputs(2, 16, (23, 75), 7, stride), 1e-5, 1e-5)


def assert_float32_follows_float64(op, inputs, out_tol, grad_tol):
    """``op`` in float32 gives its float64 outputs within atol ``out_tol`` (rtol 1e-5)
    and its gradients within atol ``grad_tol`` (rtol 1e-4)."""
    singles = [x.detach().float().requires_grad_() for x in inputs]
    expected, got = op(*inputs), op(*singles)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=out_tol)
    grad = torch.randn_like(expected)
    for ours, theirs in zip(torch.autograd.grad(got, singles, grad.float()),
                            torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=grad_tol)


@needs_native
@pytest.mark.parametrize('stride', [1, 2])
def test_gradcheck(stride):
    inputs = padded_inputs(1, 2, (4, 5), 7, stride)
    assert torch.autograd.gradcheck(lambda *x: native(*x, 7, stride, 0.6), inputs)


@needs_native
@pytest.mark.parametrize('stride', [1, 2])
def test_opcheck(stride):
    """Schema, fake tensors, autograd registration and AOT dispatch (what torch.compile
    relies on) of both ops."""
    query, key, value = padded_inputs(2, 4, (6, 9), 7, stride, dtype=torch.float32)
    torch.library.opcheck(torch.ops.acmix_mm.sliding_window_attention.default,
                          (query, key, value, 7, stride, 0.5))
    out, lse = torch.ops.acmix_mm.sliding_window_attention(query, key, value, 7, stride,
                                                           0.5)
    torch.library.opcheck(torch.ops.acmix_mm.sliding_window_attention_backward.default,
                          (torch.randn_like(out), query.detach(), key.detach(),
                           value.detach(), out.detach(), lse, 7, stride, 0.5))


def fused_inputs(batch, heads, dims, size, dtype=torch.float64, seed=0, planes=False):
    """A projection (B, H*W, 3*C), a key offset (H*W, d) and an output scale; with
    ``planes`` the projection and the offset are views of planes (B, 3*C, H*W) and
    (d, H*W), as the layer makes them at stride 1."""
    generator = torch.Generator().manual_seed(seed)
    pixels = size[0] * size[1]
    shapes = ((batch, 3 * heads * dims, pixels), (dims, pixels), (1, ))
    qkv, offset, scale = (torch.randn(*shape, dtype=dtype, generator=generator)
                          for shape in shapes)
    if planes:
        qkv, offset = qkv.transpose(1, 2), offset.t()
    else:
        qkv, offset = qkv.transpose(1, 2).contiguous(), offset.t().contiguous()
    return [x.requires_grad_() for x in (qkv, offset, scale)]


@needs_native
@pytest.mark.parametrize('channel_major', [False, True])
@pytest.mark.parametrize('stride,size', [(1, (4, 5)), (2, (5, 7))])
def test_fused_op_gradcheck_and_opcheck(channel_major, stride, size):
    """The layer's operator (projection in, planes out; padding, key offset and output
    scale inside): gradients of all three inputs, and its registration."""
    qkv, offset, scale = fused_inputs(2, 2, 3, size)

    def fused(qkv, offset, scale):
        return torch.ops.acmix_mm.reflect_window_attention(qkv, offset, scale, 2, *size, 7,
                                                           stride, channel_major, 0.6)[0]

    # Fast mode: the Jacobian against random vectors (the full one takes a minute).
    assert torch.autograd.gradcheck(fused, (qkv, offset, scale), fast_mode=True)
    singles = [x.detach().float().requires_grad_() for x in (qkv, offset, scale)]
    torch.library.opcheck(torch.ops.acmix_mm.reflect_window_attention.default,
                          (*singles, 2, *size, 7, stride, channel_major, 0.6))


@needs_native
@pytest.mark.parametrize('channel_major', [False, True])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [(9, 45), (4, 150)])
def test_fused_op_in_float32_is_close_to_float64(channel_major, stride, size):
    """float32 moves piece-major tokens and planes 16 channels of 16 pixels at a time
    (transposed in registers), the rest value by value: 20 channels a head (a group of
    16 and 4 left), rows of whole blocks and a remainder both ways; the backward takes
    rows back in chunks (128 pixels at stride 1, 32 at stride 2: 150 wide is a whole
    chunk and a remainder at both)."""
    inputs = fused_inputs(2, 2, 20, size)

    def fused(qkv, offset, scale):
        return torch.ops.acmix_mm.reflect_window_attention(qkv, offset, scale, 2, *size, 7,
                                                           stride, channel_major, 0.3)[0]

    assert_float32_follows_float64(fused, inputs, 1e-5, 1e-3)


@needs_native
@pytest.mark.parametrize('stride,planes', [(1, False), (2, False), (1, True)])
def test_fused_op_in_bands_equals_whole_planes(stride, planes):
    """The forward pass packs and attends bands of query rows (here 21 rows in float64,
    42 in float32); the result is that of the planes padded whole (the formulation of
    the CUDA path, on the planes op) to float64 rounding, and float32 follows it. The
    planes are large enough (9 MB each in float32) to be asked for on huge pages. A
    projection given as planes at stride 1 has its queries read in place, band by band,
    and their gradient written in place."""
    size, heads, dims = (176, 184), 4, 16
    inputs = fused_inputs(1, heads, dims, size, planes=planes)
    fused, whole = fused_and_whole(size, heads, dims, stride)
    check_fused_equals_whole(fused, whole, inputs)
    assert_float32_follows_float64(fused, inputs, 1e-5, 1e-3)


def fused_and_whole(size, heads, dims, stride):
    """The fused op (kernel 7, piece-major projection) and the PyTorch formulation on the
    planes padded whole, each as f(qkv, offset, scale)."""

    def fused(qkv, offset, scale):
        return torch.ops.acmix_mm.reflect_window_attention(qkv, offset, scale, heads, *size,
                                                           7, stride, False, dims**-0.5)[0]

    def whole(qkv, offset, scale):
        return sliding_window._padded_window_attention(qkv, size, heads, 7, stride, offset,
                                                       scale, False)

    return fused, whole


def check_fused_equals_whole(fused, whole, inputs, threads=None):
    """Outputs and gradients of the two in float64, the fused op run on ``threads``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        got = fused(*inputs)
        grad = torch.randn_like(got)
        ours = torch.autograd.grad(got, inputs, grad)
    finally:
        torch.set_num_threads(previous)
    expected = whole(*inputs)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(ours, torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


@needs_native
@pytest.mark.parametrize('stride,threads', [(1, 1), (2, 1), (1, 3), (2, 8)])
def test_fused_op_gradients_take_the_place_of_its_packed_keys(stride, threads):
    """With whole planes a thread (no more threads than planes), the backward pass
    writes each key row's gradients over its packed keys and values once no query row
    reads them (with more threads, in bands, it does not); the gradients are the PyTorch
    formulation's in float64 all the same."""
    size, heads, dims = (11, 14), 2, 4
    inputs = fused_inputs(2, heads, dims, size, planes=True)
    check_fused_equals_whole(*fused_and_whole(size, heads, dims, stride), inputs, threads)


@needs_native
@pytest.mark.parametrize('stride,size,channel_major', [(1, (9, 21), False), (2, (7, 8), True),
                                                        (1, (20, 40), False)])
def test_fused_op_reads_planes_as_it_reads_tokens(stride, size, channel_major):
    """A projection that is a view of NCHW planes (packed by copying rows) gives the
    tokens' outputs and gradients; the projection's gradient comes back as planes."""
    planes = torch.randn(2, 30, size[0] * size[1], dtype=torch.float64, requires_grad=True)
    tokens = planes.detach().transpose(1, 2).contiguous().requires_grad_()
    _, offset, scale = fused_inputs(2, 2, 5, size)

    def fused(qkv):
        return torch.ops.acmix_mm.reflect_window_attention(qkv, offset, scale, 2, *size, 7,
                                                           stride, channel_major, 0.5)[0]

    from_planes, from_tokens = fused(planes.transpose(1, 2)), fused(tokens)
    assert torch.equal(from_planes, from_tokens)
    grad = torch.randn_like(from_planes)
    ours = torch.autograd.grad(from_planes, (planes, offset, scale), grad)
    theirs = torch.autograd.grad(from_tokens, (tokens, offset, scale), grad)
    assert ours[0].is_contiguous() and torch.equal(ours[0].transpose(1, 2), theirs[0])
    for a, b in zip(ours[1:], theirs[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.library.opcheck(torch.ops.acmix_mm.reflect_window_attention.default,
                          (planes.detach().float().transpose(1, 2), offset.detach().float(),
                           scale.detach().float(), 2, *size, 7, stride, channel_major, 0.5))


@needs_native
def test_op_refuses_windows_past_the_keys():
    query, key, value = padded_inputs(1, 2, (6, 6), 7, 1)
    with pytest.raises(RuntimeError, match='need keys of at least 12x12'):
        native(query, key[..., :-1, :], value[..., :-1, :], 7, 1, 1.0)
    with pytest.raises(RuntimeError, match='differ in dtype'):
        native(query, key.float(), value, 7, 1, 1.0)
    qkv, offset, scale = fused_inputs(1, 2, 4, (3, 8))
    with pytest.raises(RuntimeError, match='larger than 3 pixels; got 3x8'):
        torch.ops.acmix_mm.reflect_window_attention(qkv, offset, scale, 2, 3, 8, 7, 1, True,
                                                    1.0)


# (in, out channels, heads, stride, batch, map size)
# 6x71 at stride 2: odd rows of several chunks of the gradient's unpacking. The last:
# groups of 8 channels, where float64 runs the native convolution path.
LAYERS = [(16, 16, 4, 1, 2, (4, 4)), (8, 16, 1, 2, 3, (9, 7)), (32, 32, 8, 1, 1, (13, 5)),
          (16, 24, 2, 2, 2, (5, 10)), (16, 16, 4, 1, 1, (12, 80)), (16, 16, 4, 2, 1, (6, 71)),
          (16, 32, 4, 1, 2, (7, 9))]


@pytest.mark.parametrize('native_on', [True, False])
@pytest.mark.parametrize('in_channels,out_channels,heads,stride,batch,size', LAYERS)
def test_acmix_layer_equals_the_official_formulation(native_on, in_channels, out_channels,
                                                     heads, stride, batch, size):
    """The official logits q . (k_j + pe_i - pe_j) equal q . (k_j - pe_j) within the
    softmax of each window: the native path (the encodings folded into the padded keys)
    gives the official unfold code's outputs and gradients in float64."""
    native_on = native_on and WANTED  # ACMIX_MM_NATIVE_OPS=0: both cases check the fallback
    torch.manual_seed(0)
    reference = ReferenceACmix(in_channels, out_channels, head=heads, stride=stride).double()
    reference.conv_p.bias.data.normal_()  # cancels too
    ours = ACmix(in_channels, out_channels, head=heads, stride=stride).double()
    prefix = 'layer1.0.conv2.'
    converted, _ = resnet_official_to_acmix(
        {prefix + k: v for k, v in reference.state_dict().items()})
    ours.load_state_dict({k[len(prefix):]: v for k, v in converted.items()})
    x = torch.randn(batch, in_channels, *size, dtype=torch.float64, requires_grad=True)
    with ops.native_ops(native_on):
        assert sliding_window.native_usable(x) == native_on
        got = ours(x)
    expected = reference(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    grad = torch.randn_like(expected)
    # The input, alpha and the position encoding's weights.
    got_grads = torch.autograd.grad(
        got, [x, ours.alpha, ours.attn_path.position_proj.weight], grad)
    ref_grads = torch.autograd.grad(expected, [x, reference.rate1, reference.conv_p.weight],
                                    grad)
    for ours_grad, ref_grad in zip(got_grads, ref_grads):
        torch.testing.assert_close(ours_grad.flatten(), ref_grad.flatten(), rtol=1e-9,
                                   atol=1e-9)


@needs_native
@pytest.mark.parametrize('stride', [1, 2])
def test_acmix_layer_reads_the_projection_as_planes_where_both_paths_do(monkeypatch,
                                                                       stride):
    """At stride 1 the projection is written as planes, which one operator reads as they
    are for both paths (the attention plus the convolution on planes); at stride 2 (no
    planes kernel for the convolution path) both paths read contiguous tokens. No token
    copy either way."""
    from acmix_mm.layers import acmix as acmix_module
    from acmix_mm.layers import attention_paths
    calls = []
    for module, name in ((acmix_module, 'narrow_pieces_conv'), (acmix_module, 'pieces_conv'),
                         (acmix_module, 'contiguous_tokens'),
                         (attention_paths, 'native_local_attention_plus_conv')):
        function = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, _f=function, _n=name: calls.append(_n) or _f(*a))
    layer = ACmix(64, 64, stride=stride)  # 16 channels a head, as ResNet-ACmix's first
    layer(torch.randn(1, 64, 12, 20, requires_grad=True)).sum().backward()
    assert calls == (['native_local_attention_plus_conv'] if stride == 1 else ['pieces_conv'])


def plus_conv_inputs(batch, size, dims, dtype=torch.float64):
    """The projection (as planes), key offset and output scale of 4 heads of ``dims``
    channels, and the convolution path's weight (4 * dims, 12, 3, 3)."""
    inputs = fused_inputs(batch, 4, dims, size, dtype, planes=True)
    weight = torch.randn(4 * dims, 12, 3, 3, dtype=dtype, generator=torch.Generator()
                         .manual_seed(1)).requires_grad_()
    return inputs + [weight]


@needs_native
@pytest.mark.parametrize('batch,size,dims,threads', [(2, (9, 21), 4, None),
                                                     (1, (20, 83), 16, None),
                                                     (1, (12, 40), 8, 8)])
def test_attention_plus_conv_op_equals_the_two_ops_apart(batch, size, dims, threads):
    """ResNet-ACmix's layer at stride 1 as one operator: the output is the attention
    operator's plus narrow_pieces_conv's of the same planes (summed as the convolution
    stores), and the gradients are those of the two ops apart (the convolution's
    gradient of the projection added in place to the attention's), in float64; float32
    follows (at 20x83 the AVX-512 clones, rows read in place). With more threads than
    planes the attention's backward runs in bands, the query gradient written in place
    all the same."""
    inputs = plus_conv_inputs(batch, size, dims)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        check_attention_plus_conv(inputs, size, dims)
    finally:
        torch.set_num_threads(previous)


def check_attention_plus_conv(inputs, size, dims):
    """The one operator against the attention operator plus narrow_pieces_conv."""

    def together(qkv, offset, scale, weight):
        return ops.reflect_window_attention_plus_conv(qkv, size, 4, 7, offset, scale, weight,
                                                      dims**-0.5)

    def apart(qkv, offset, scale, weight):
        conv = ops.narrow_pieces_conv(qkv.transpose(1, 2).unflatten(2, size), weight)
        attention = ops.reflect_window_attention(qkv, size, 4, 7, 1, offset, scale, False,
                                                 dims**-0.5)
        return attention.view_as(conv) + conv

    assert_same_with_gradients(together(*inputs), apart(*inputs), inputs, inputs,
                               (1e-12, ) * 4)
    assert_float32_follows_float64(together, inputs, 1e-4, 1e-3)


@needs_native
def test_attention_plus_conv_op_gradcheck_and_opcheck():
    inputs = plus_conv_inputs(2, (4, 5), 4)

    def together(*inputs):
        return ops.reflect_window_attention_plus_conv(inputs[0], (4, 5), 4, 7, *inputs[1:],
                                                      0.5)

    assert torch.autograd.gradcheck(together, inputs)
    singles = [x.detach().float().requires_grad_() for x in plus_conv_inputs(1, (6, 9), 4)]
    torch.library.opcheck(torch.ops.acmix_mm.reflect_window_attention_plus_conv.default,
                          (singles[0], singles[1], singles[2], singles[3], 4, 6, 9, 7, 0.5))


@needs_native
@pytest.mark.parametrize('together', [False, True])
def test_gradients_as_planes_are_summed_in_place(monkeypatch, together):
    """The attention operator's gradient of the projection (planes) is a tensor of its
    own, not a transposed view, so autograd adds the convolution path's gradient into it
    rather than allocating the sum (where the paths run apart); the operator of both
    paths adds it there itself and returns that tensor; linear_of_maps' gradient of
    planes is one too."""
    from acmix_mm.layers import acmix as acmix_module
    from acmix_mm.layers.attention_paths import SlidingWindowAttentionPath
    from acmix_mm.ops.linear import linear_of_maps
    if not together:
        monkeypatch.setattr(SlidingWindowAttentionPath, 'adds_conv_for', lambda *args: False)
    seen = {}
    project = acmix_module.TokenACmix.project

    def recording_project(self, *args, **kwargs):
        qkv = project(self, *args, **kwargs)
        qkv.register_hook(lambda grad: seen.update(sum=grad.data_ptr()))
        return qkv

    monkeypatch.setattr(acmix_module.TokenACmix, 'project', recording_project)
    x = torch.randn(1, 64, 12, 20, requires_grad=True)
    out = ACmix(64, 64)(x)
    nodes, attention = [out.grad_fn], None
    while attention is None:
        node = nodes.pop()
        if 'reflect_window_attention' in node.name():
            attention = node
        nodes += [f for f, _ in node.next_functions if f is not None]
    # (keeping the gradient itself would hold a second reference, which rules the
    # in-place sum out)
    assert ('plus_conv' in attention.name()) == together
    attention.register_hook(lambda grads, _: seen.update(
        attention=grads[0].data_ptr(), view=grads[0]._is_view()))
    out.backward(torch.randn_like(out))
    assert not seen['view'] and seen['sum'] == seen['attention']

    tokens = x.detach().flatten(2).transpose(1, 2).requires_grad_()
    (grad, ) = torch.autograd.grad(linear_of_maps(tokens, torch.randn(32, 64), None, True),
                                   tokens, torch.randn(1, 240, 32))
    assert not grad._is_view() and grad.transpose(1, 2).is_contiguous()


def small_resnet_acmix():
    backbone = ResNetACmix(26, base_channels=16)
    backbone.init_weights()
    return backbone, (96, 72), backbone.layer4[0].conv2.alpha


def small_san():
    backbone = SAN(10, out_indices=(0, 1))  # stride 8 at most: 8x12 maps for kernel 7
    return backbone, (64, 96), backbone.stages[1].blocks[0].attn.attn_path.fc2.weight


@needs_native
@pytest.mark.parametrize('build', [small_resnet_acmix, small_san], ids=['ResNetACmix', 'SAN'])
def test_backbone_is_the_same_with_native_ops_on_and_off(build):
    torch.manual_seed(0)
    backbone, size, param = build()
    backbone.double()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    results = []
    for native_on in (True, False):
        with ops.native_ops(native_on):
            outs = backbone(x)
            loss = sum(out.square().mean() for out in outs)
            grads = torch.autograd.grad(loss, [x, param])
        results.append((outs, grads))
    (outs_on, grads_on), (outs_off, grads_off) = results
    for on, off in zip(outs_on + grads_on, outs_off + grads_off):
        torch.testing.assert_close(on, off, rtol=1e-9, atol=1e-10)


@needs_native
def test_reduced_precision_runs_in_float32():
    """Under bfloat16 autocast the projection gives bfloat16; the kernel runs in float32
    and the layer trains."""
    torch.manual_seed(0)
    layer = ACmix(16, 16)
    x = torch.randn(2, 16, 9, 11)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x)
    expected = layer(x)
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    out.float().square().mean().backward()
    assert torch.isfinite(layer.qkv.weight.grad).all()


@needs_native
def test_compiled_layer_trains_through_the_custom_op():
    """Fake tensors and the autograd formula let torch.compile trace forward and
    backward in one graph each."""
    torch.manual_seed(0)
    layer = ACmix(16, 16, stride=2)
    x = torch.randn(2, 16, 10, 12, requires_grad=True)
    compiled = torch.compile(layer, backend='aot_eager', fullgraph=True)
    out = compiled(x)
    (grad, ) = torch.autograd.grad(out.square().sum(), x)
    with ops.native_ops(False):
        expected = layer(x)
    (expected_grad, ) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_switched_off_by_the_environment(monkeypatch):
    """ACMIX_MM_NATIVE_OPS=0, read when acmix_mm.ops is imported (here: reloaded)."""
    monkeypatch.setenv('ACMIX_MM_NATIVE_OPS', '0')
    try:
        importlib.reload(ops._native)
        assert ops.native_status() == 'fallback: PyTorch (ACMIX_MM_NATIVE_OPS=0)'
        assert not sliding_window.native_usable(torch.zeros(1))
    finally:
        monkeypatch.undo()
        importlib.reload(ops._native)
    assert ops.native_enabled() == (WANTED and ops.native_built())


def test_missing_extension_falls_back(monkeypatch):
    monkeypatch.setattr(ops._native, 'LOAD_ERROR', 'ImportError: no _C here')
    assert ops.native_status() == ('fallback: PyTorch (native ops not built: ImportError: '
                                   'no _C here)')
    assert not sliding_window.native_usable(torch.zeros(1))
    layer = ACmix(8, 8)
    assert layer(torch.randn(1, 8, 6, 7)).shape == (1, 8, 6, 7)


@needs_native
def test_export_takes_the_pytorch_path():
    """torch.export (under ONNX export too) records the PyTorch path, which exports to
    standard operators, and it computes what the native operator computes."""
    torch.manual_seed(0)
    layer = ACmix(8, 8).eval()
    x = torch.randn(1, 8, 6, 7)
    program = torch.export.export(layer, (x, ))
    targets = [str(node.target) for node in program.graph.nodes if node.op == 'call_function']
    assert targets and not any('acmix_mm' in target for target in targets)
    torch.testing.assert_close(program.module()(x), layer(x), rtol=1e-5, atol=1e-6)


def pieces_inputs(batch, size, head_dims, pieces, dtype=torch.float64, seed=0):
    """Piece-major tokens (B, H*W, P * d) and a weight (4 * d, P, 3, 3)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, size[0] * size[1], pieces * head_dims, dtype=dtype,
                         generator=generator)
    weight = torch.randn(4 * head_dims, pieces, 3, 3, dtype=dtype, generator=generator)
    return tokens.requires_grad_(), weight.requires_grad_()


# (batch, map size, d, pieces, stride): maps narrower than a tile of 4 pixels and one
# pixel high, piece counts that are no multiple of three, two vectors of groups,
# batch > 1; at stride 2 odd and even sides and maps wide enough for interior tiles.
PIECES_SHAPES = [(2, (5, 7), 8, 12, 1), (1, (1, 3), 16, 12, 1), (1, (6, 9), 16, 5, 1),
                 (3, (9, 21), 8, 6, 1), (1, (3, 2), 8, 12, 1), (2, (7, 21), 8, 12, 2),
                 (1, (6, 20), 16, 5, 2), (1, (1, 2), 8, 12, 2), (2, (4, 13), 8, 6, 2)]


@needs_native
@pytest.mark.parametrize('batch,size,head_dims,pieces,stride', PIECES_SHAPES)
def test_pieces_conv_equals_conv2d_in_float64(batch, size, head_dims, pieces, stride):
    """The native convolution path gives F.conv2d's grouped convolution (oneDNN) and its
    gradients of the tokens and the weight."""
    tokens, weight = pieces_inputs(batch, size, head_dims, pieces)
    assert ops.pieces_conv_usable(tokens, weight, stride)
    assert_same_with_gradients(ops.pieces_conv(tokens, weight, size, stride),
                               ops.pieces_conv_reference(tokens, weight, size, stride),
                               (tokens, weight), (tokens, weight), (1e-12, ) * 4)


@needs_native
def test_pieces_conv_gradcheck_and_opcheck():
    tokens, weight = pieces_inputs(2, (3, 4), 8, 3)
    for stride in (1, 2):
        assert torch.autograd.gradcheck(lambda t, w: ops.pieces_conv(t, w, (3, 4), stride),
                                        (tokens, weight))
    singles = [x.detach().float().requires_grad_() for x in pieces_inputs(1, (5, 6), 16, 12)]
    torch.library.opcheck(torch.ops.acmix_mm.pieces_conv, (*singles, 5, 6))
    torch.library.opcheck(torch.ops.acmix_mm.pieces_conv, (*singles, 5, 6, 2))


@needs_native
@pytest.mark.parametrize('stride', [1, 2])
def test_pieces_conv_in_float32_is_close_to_float64(stride):
    """float32 moves outputs and their gradients between planes and rows 16 groups of
    16 pixels at a time (transposed in registers), the rest value by value: 32 groups,
    rows of 40 and 20 outputs. Sums of 108 products of unit normals: absolute
    tolerances."""
    assert_float32_follows_float64(lambda *x: ops.pieces_conv(*x, (9, 40), stride),
                                   pieces_inputs(1, (9, 40), 32, 12), 1e-4, 1e-3)


def narrow_inputs(batch, size, pieces, dtype=torch.float64, seed=0, groups=4):
    """Piece-major planes (B, d * P, H, W) and a weight (4 * d, P, 3, 3): d groups."""
    generator = torch.Generator().manual_seed(seed)
    planes = torch.randn(batch, groups * pieces, *size, dtype=dtype, generator=generator)
    weight = torch.randn(4 * groups, pieces, 3, 3, dtype=dtype, generator=generator)
    return planes.requires_grad_(), weight.requires_grad_()


def narrow_reference(planes, weight):
    """The grouped convolution of piece-major planes (group g reads channel g of every
    piece), as F.conv2d reads it: the planes reordered channel-major."""
    batch, channels, height, width = planes.shape
    pieces, groups = weight.shape[1], weight.shape[0] // 4
    maps = planes.view(batch, pieces, groups, height, width).transpose(1, 2).reshape(
        planes.shape)
    return F.conv2d(maps, weight, None, 1, 1, groups=groups)


# (batch, map size, pieces, groups): rows narrower than a vector, one pixel high, a
# vector and a remainder, rows of more than one tile of 4 vectors (70 and 133 wide: the
# forward pass and input gradient read them in place, the last tile shifted back and
# the edge columns apart), batch > 1;
# SAN-ACmix-19's 6 pieces, ResNet-ACmix's 12 (whose planes run 6 pieces a pass of the
# input gradient); d = 4 (SAN-ACmix-19's first stage) and 8, 16 (blocks of 4 groups).
NARROW_SHAPES = [(1, (5, 7), 6, 4), (2, (1, 3), 3, 4), (1, (4, 16), 12, 4),
                 (3, (9, 37), 6, 4), (2, (6, 70), 12, 8), (1, (3, 133), 3, 16)]


@needs_native
@pytest.mark.parametrize('batch,size,pieces,groups', NARROW_SHAPES)
def test_narrow_pieces_conv_equals_conv2d_in_float64(batch, size, pieces, groups):
    """The native convolution on planes gives F.conv2d's grouped convolution and its
    gradients of the planes and the weight."""
    planes, weight = narrow_inputs(batch, size, pieces, groups=groups)
    assert ops.narrow_pieces_conv_usable(planes, weight, 1)
    assert_same_with_gradients(ops.narrow_pieces_conv(planes, weight),
                               narrow_reference(planes, weight), (planes, weight),
                               (planes, weight), (1e-12, ) * 4)


@needs_native
def test_narrow_pieces_conv_gradcheck_opcheck_and_float32():
    planes, weight = narrow_inputs(2, (3, 5), 3)
    assert torch.autograd.gradcheck(ops.narrow_pieces_conv, (planes, weight))
    singles = [x.detach().float().requires_grad_() for x in narrow_inputs(1, (5, 18), 6)]
    torch.library.opcheck(torch.ops.acmix_mm.narrow_pieces_conv, singles)
    # Sums of 54 products of unit normals: absolute tolerances.
    assert_float32_follows_float64(ops.narrow_pieces_conv, narrow_inputs(1, (9, 40), 6),
                                   1e-4, 1e-3)
    # rows the forward pass reads in place (float32 runs the vector clones, float64 the
    # baseline code)
    assert_float32_follows_float64(ops.narrow_pieces_conv, narrow_inputs(2, (5, 83), 12),
                                   1e-4, 1e-3)
    # what the fast path does not take: stride 2, other widths, layouts, autocast
    assert not ops.narrow_pieces_conv_usable(planes, weight, 2)
    assert not ops.narrow_pieces_conv_usable(planes[:, :8], weight[:, :2], 1)
    assert not ops.narrow_pieces_conv_usable(
        planes.detach().to(memory_format=torch.channels_last), weight, 1)


@needs_native
def test_convolution_paths_use_the_native_op_where_it_fits():
    """ResNet-ACmix's (fused) convolution path runs the native op where the groups fit
    (4 heads, d a multiple of the lanes, stride 1 or 2), F.conv2d elsewhere (heads 2,
    export), with the same outputs and parameter gradients either way."""
    from acmix_mm.layers.acmix import conv_of_pieces
    torch.manual_seed(0)
    for heads, stride, native_op in [(4, 1, True), (2, 1, False), (4, 2, True)]:
        layer = ACmix(16, 32, head=heads, stride=stride).double()
        path = layer.conv_path
        qkv = torch.randn(2, 7 * 9, path.num_pieces * path.head_dims, dtype=torch.float64)
        weight = path.fused_weights()[0]
        assert ops.pieces_conv_usable(qkv, weight, path.dep_conv.stride) == native_op
        # the layer then projects piece-major, the native op's layout: no copy
        assert path.reads_channel_major_for(qkv) == (not native_op)
        # with fc's bias (Swin-ACmix has one), as the map of ones it becomes
        bias = torch.randn(9, dtype=torch.float64)
        results = []
        for native_on in (True, False):
            with ops.native_ops(native_on):
                weight, bias_kernel = path.fused_weights()
                bias_kernel = torch.einsum('csyx,s->cyx', path.dep_conv.weight,
                                           bias).unsqueeze(1)
                out = conv_of_pieces(qkv, (7, 9), path.num_pieces, weight, bias_kernel,
                                     path.dep_conv.stride, channel_major=True)
            grads = torch.autograd.grad(out.square().sum(),
                                        [path.fc.weight, path.dep_conv.weight])
            results.append((out, *grads))
        for ours, theirs in zip(*results):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def aggregate_inputs(batch, channels, groups, hidden, size, kernel_size, dtype=torch.float64,
                     seed=0):
    """Padded values (B, C, H + k - 1, W + k - 1), a hidden map (B, G', H, W) and fc2's
    weight (G * k*k, G') and bias."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    shapes = ((batch, channels, height + kernel_size - 1, width + kernel_size - 1),
              (batch, hidden, height, width), (groups * kernel_size**2, hidden),
              (groups * kernel_size**2, ))
    return [torch.randn(*shape, dtype=dtype, generator=generator, requires_grad=True)
            for shape in shapes]


@needs_native
def test_patch_aggregate_refuses_misfit_inputs():
    value, hidden, weight, bias = aggregate_inputs(1, 6, 2, 3, (5, 5), 3)
    with pytest.raises(RuntimeError, match='are 7x7, got 6x7'):
        ops.patch_aggregate(value[:, :, 1:], hidden, weight, bias, 3)
    with pytest.raises(RuntimeError, match='differ in dtype'):
        ops.patch_aggregate(value.float(), hidden, weight, bias, 3)
    with pytest.raises(RuntimeError, match='6 value channels do not share 4 weight'):
        ops.patch_aggregate(value, hidden, weight.repeat(2, 1), bias.repeat(2), 3)


def hidden_inputs(batch, channels, hidden, size, kernel_size, dtype=torch.float64, seed=0):
    """Queries (B, r, H, W), padded keys (B, r, H + k - 1, W + k - 1), the scale and
    shift of the r * (k*k + 1) patch channels and fc1's weight (G', r * (k*k + 1))."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    patch = channels * (kernel_size**2 + 1)
    shapes = ((batch, channels, height, width),
              (batch, channels, height + kernel_size - 1, width + kernel_size - 1), (patch, ),
              (patch, ), (hidden, patch))
    return [torch.randn(*shape, dtype=dtype, generator=generator, requires_grad=True)
            for shape in shapes]


def moments_inputs(batch, channels, size, kernel_size, dtype=torch.float64, seed=0):
    """Queries (B, r, H, W), padded keys (B, r, H + k - 1, W + k - 1) and the two
    centres (r, ) (constants: no gradient)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    shapes = ((batch, channels, height, width),
              (batch, channels, height + kernel_size - 1, width + kernel_size - 1))
    maps = [torch.randn(*shape, dtype=dtype, generator=generator, requires_grad=True) + 1
            for shape in shapes]
    return [x.detach().requires_grad_() for x in maps] + [
        torch.randn(channels, dtype=dtype, generator=generator) for _ in range(2)]


# Shapes of each op's inputs: maps just above the reflection limit (4x4 for kernel 7), odd
# sizes, batches, hidden widths that are no multiple of the four rows combined at a
# time, and rows wide enough that the backward pass runs in several bands of rows.
# patch_aggregate: (batch, channels, weight groups G, hidden G', map size, kernel), with
# one group and groups sharing 3 channels; patch_hidden: (batch, channels r, hidden G',
# map size, kernel), with 64 hidden channels (a backward pass by matrix products) last;
# patch_moments: (batch, channels r, map size, kernel).
PATCHWISE_OPS = {
    'aggregate': (aggregate_inputs, ops.patch_aggregate, ops.patch_aggregate_reference,
                  [(1, 8, 2, 3, (4, 4), 7), (2, 16, 2, 4, (5, 9), 7),
                   (3, 9, 3, 5, (2, 7), 3), (2, 8, 1, 2, (11, 6), 5),
                   (1, 4, 4, 1, (3, 5), 1), (2, 8, 8, 4, (20, 600), 7)],
                  (2, 16, 2, 4, (9, 75), 7), (4, 2, 3)),
    'hidden': (hidden_inputs, ops.patch_hidden, ops.patch_hidden_reference,
               [(1, 2, 3, (4, 4), 7), (2, 3, 4, (5, 9), 7), (3, 5, 1, (2, 7), 3),
                (2, 1, 6, (11, 6), 5), (1, 3, 2, (3, 5), 1), (1, 4, 2, (16, 500), 7),
                (2, 2, 64, (4, 6), 3)],
               (2, 4, 8, (9, 75), 7), (2, 3)),
    'moments': (moments_inputs, ops.patch_moments, ops.patch_moments_reference,
                [(1, 2, (4, 4), 7), (2, 3, (5, 9), 7), (3, 5, (2, 7), 3), (2, 1, (11, 6), 5),
                 (1, 3, (3, 5), 1), (1, 4, (16, 500), 7)],
                (2, 4, (9, 75), 7), (2, )),
}


def assert_same_with_gradients(got, expected, inputs, expected_inputs, tolerances):
    """Outputs equal, and the gradients of ``inputs`` and ``expected_inputs`` for one
    random output gradient; ``tolerances``: (rtol, atol) of the outputs, then of the
    gradients."""
    rtol, atol, grad_rtol, grad_atol = tolerances
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=atol)
    grad = torch.randn_like(expected)
    inputs = [x for x in inputs if x.requires_grad]
    expected_inputs = [x for x in expected_inputs if x.requires_grad]
    for ours, theirs in zip(torch.autograd.grad(got, inputs, grad.to(got.dtype)),
                            torch.autograd.grad(expected, expected_inputs, grad)):
        torch.testing.assert_close(ours.double(), theirs, rtol=grad_rtol, atol=grad_atol)


@needs_native
@pytest.mark.parametrize('name,shape', [(name, shape) for name, spec in PATCHWISE_OPS.items()
                                        for shape in spec[3]])
def test_patchwise_op_equals_the_san_formulation_in_float64(name, shape):
    """Each op against hszhao/SAN's formulation (patches unfolded, fc1 and fc2 as 1x1
    convolutions), gradients included."""
    make_inputs, op, reference = PATCHWISE_OPS[name][:3]
    inputs = make_inputs(*shape)
    assert_same_with_gradients(op(*inputs, shape[-1]), reference(*inputs, shape[-1]), inputs,
                               inputs, (1e-9, 1e-9, 1e-9, 1e-9))


@needs_native
@pytest.mark.parametrize('name', list(PATCHWISE_OPS))
def test_patchwise_op_in_float32_is_close_to_float64(name):
    make_inputs, op, _, _, shape, _ = PATCHWISE_OPS[name]
    inputs = make_inputs(*shape)
    singles = [x.detach().float().requires_grad_(x.requires_grad) for x in inputs]
    assert_same_with_gradients(op(*singles, shape[-1]), op(*inputs, shape[-1]), singles,
                               inputs, (1e-5, 1e-4, 1e-4, 1e-2))


@needs_native
@pytest.mark.parametrize('name', list(PATCHWISE_OPS))
@pytest.mark.parametrize('batch,kernel_size,size,fast', [(2, 7, (4, 5), True),
                                                         (1, 3, (3, 2), False)])
def test_patchwise_op_gradcheck_and_opcheck(name, batch, kernel_size, size, fast):
    """The full Jacobian on a tiny map; against random vectors (fast mode) on a larger
    one, whose full check takes several seconds. Then the registrations of the op and
    of its backward."""
    make_inputs, op, _, _, _, widths = PATCHWISE_OPS[name]
    inputs = make_inputs(batch, *widths, size, kernel_size)
    assert torch.autograd.gradcheck(lambda *x: op(*x, kernel_size), inputs, fast_mode=fast)
    singles = [x.detach().float().requires_grad_(x.requires_grad) for x in inputs]
    forward = getattr(torch.ops.acmix_mm, f'patch_{name}')
    torch.library.opcheck(forward.default, (*singles, kernel_size))
    out = op(*singles, kernel_size)
    backward = getattr(torch.ops.acmix_mm, f'patch_{name}_backward')
    torch.library.opcheck(backward.default, (torch.randn_like(out),
                                             *(x.detach() for x in singles), kernel_size))


@needs_native
def test_patch_hidden_refuses_misfit_inputs():
    query, key, scale, shift, weight = hidden_inputs(1, 2, 3, (5, 5), 3)
    with pytest.raises(RuntimeError, match=r'are \(1, 2, 7, 7\), got \[1, 2, 6, 7\]'):
        ops.patch_hidden(query, key[:, :, 1:], scale, shift, weight, 3)
    with pytest.raises(RuntimeError, match='make 20 patch channels'):
        ops.patch_hidden(query, key, scale[1:], shift, weight, 3)
    with pytest.raises(RuntimeError, match='differ in dtype'):
        ops.patch_hidden(query, key, scale, shift, weight.float(), 3)


@needs_native
def test_san_export_takes_the_pytorch_path():
    """torch.export (under ONNX export too) records SAN's PyTorch path, standard
    operators only."""
    torch.manual_seed(0)
    layer = ours_from_reference(ReferenceSAM(16, 4, 16, 8, 3, True), 16, acmix=True).eval()
    x = torch.randn(1, 36, 16)

    class Tokens(torch.nn.Module):
        def forward(self, tokens):
            return layer(tokens, (6, 6))

    program = torch.export.export(Tokens(), (x, ))
    targets = [str(node.target) for node in program.graph.nodes if node.op == 'call_function']
    assert targets and not any('acmix_mm' in target for target in targets)
    torch.testing.assert_close(program.module()(x), layer(x, (6, 6)), rtol=1e-5, atol=1e-6)


def test_with_native_ops_switches_for_the_call_and_restores():
    seen = []
    step = ops.with_native_ops(lambda value: seen.append(ops.native_enabled()) or value,
                               False)
    before = ops.native_enabled()
    assert step(3) == 3 and seen == [False] and ops.native_enabled() == before


@needs_native
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_batched_transpose_equals_torch(dtype):
    """Whole 16 x 16 blocks (transposed in registers in float32) and the edges beside
    them, both ways; and its registration."""
    x = torch.randn(2, 37, 50, dtype=dtype)
    got = torch.ops.acmix_mm.batched_transpose(x)
    assert got.is_contiguous() and torch.equal(got, x.transpose(1, 2))
    assert torch.equal(torch.ops.acmix_mm.batched_transpose(got), x)
    torch.library.opcheck(torch.ops.acmix_mm.batched_transpose.default, (x, ))


@needs_native
def test_channels_last_copies_equal_torch():
    from acmix_mm.ops.layout import to_channels_first, to_channels_last
    maps = torch.randn(2, 48, 5, 7)
    last = to_channels_last(maps)
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(last, maps)
    first = to_channels_first(last)
    assert first.is_contiguous() and torch.equal(first, maps)
    # other layouts are torch's copy
    assert torch.equal(to_channels_first(maps.transpose(2, 3)), maps.transpose(2, 3))


@needs_native
def test_contiguous_tokens_of_planes_send_their_gradient_as_planes():
    from acmix_mm.ops.layout import contiguous_tokens
    planes = torch.randn(2, 24, 35, dtype=torch.float64, requires_grad=True)
    tokens = contiguous_tokens(planes.transpose(1, 2))
    assert tokens.is_contiguous() and torch.equal(tokens, planes.transpose(1, 2))
    grad = torch.randn_like(tokens)
    (got, ) = torch.autograd.grad(tokens, planes, grad)
    assert got.is_contiguous() and torch.equal(got, grad.transpose(1, 2))
    assert torch.autograd.gradcheck(lambda x: contiguous_tokens(x.transpose(1, 2)), (planes, ))


def tokens_of(layout, batch, tokens, channels, dtype=torch.float64):
    """Random tokens (B, N, C) as contiguous tokens, a view of NCHW planes, or neither
    (every other token of a wider map)."""
    if layout == 'planes':
        return torch.randn(batch, channels, tokens, dtype=dtype).transpose(1, 2)
    if layout == 'strided':
        return torch.randn(batch, 2 * tokens, channels, dtype=dtype)[:, ::2]
    return torch.randn(batch, tokens, channels, dtype=dtype)


@needs_native
@pytest.mark.parametrize('layout', ['planes', 'tokens', 'strided'])
@pytest.mark.parametrize('planes_out', [False, True])
@pytest.mark.parametrize('with_bias', [True, False])
def test_linear_of_maps_equals_linear(layout, planes_out, with_bias):
    """Values and gradients of F.linear in float64 from every input layout, the output
    in the layout asked for and the input's gradient in the input's (or contiguous
    tokens, for an input that is neither); gradcheck and opcheck."""
    from acmix_mm.ops.linear import linear_of_maps, linear_of_maps_usable
    torch.manual_seed(0)
    x = tokens_of(layout, 2, 35, 12).requires_grad_()
    weight = torch.randn(20, 12, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(20, dtype=torch.float64, requires_grad=True) if with_bias else None
    assert linear_of_maps_usable(x, weight)
    got = linear_of_maps(x, weight, bias, planes_out)
    expected = F.linear(x, weight, bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert (got.transpose(1, 2) if planes_out else got).is_contiguous()
    inputs = [t for t in (x, weight, bias) if t is not None]
    grad = torch.randn_like(expected)
    ours = torch.autograd.grad(got, inputs, grad)
    theirs = torch.autograd.grad(expected, inputs, grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert ours[0].stride() == (x.stride() if layout != 'strided' else x.contiguous().stride())
    small = [tokens_of(layout, 2, 6, 3), torch.randn(4, 3, dtype=torch.float64),
             torch.randn(4, dtype=torch.float64) if with_bias else None]
    small = [t if t is None else t.requires_grad_() for t in small]
    assert torch.autograd.gradcheck(lambda *t: linear_of_maps(*t, planes_out), small)
    torch.library.opcheck(torch.ops.acmix_mm.linear_of_maps.default,
                          (*[t if t is None else t.float() for t in small], planes_out))


@needs_native
def test_native_linears_equal_linear_and_keep_the_state(monkeypatch):
    """native_linears makes nn.Linear and mmcv's Linear (the FFN's) NativeLinear in
    place: the same state dict, F.linear's values and gradients for inputs of rank 2 to
    4 through the native op, and F.linear where the op does not fit (empty input)."""
    from mmcv.cnn.bricks.transformer import FFN

    from acmix_mm.layers.linear import NativeLinear, native_linears
    from acmix_mm.ops import linear as linear_ops
    torch.manual_seed(0)
    ffn = FFN(embed_dims=12, feedforward_channels=20).double()
    plain = FFN(embed_dims=12, feedforward_channels=20).double()
    plain.load_state_dict(ffn.state_dict())
    state = {k: v.clone() for k, v in ffn.state_dict().items()}
    assert native_linears(ffn) is ffn
    linears = [m for m in ffn.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and all(type(m) is NativeLinear for m in linears)
    assert all(torch.equal(state[k], v) for k, v in ffn.state_dict().items())
    calls = []
    native_op = linear_ops.linear_of_maps
    monkeypatch.setattr(linear_ops, 'linear_of_maps',
                        lambda *a: calls.append(1) or native_op(*a))
    for shape in [(7, 12), (2, 9, 12), (2, 3, 5, 12)]:
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        got, expected = ffn(x), plain(x)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(got)
        for a, b in zip(torch.autograd.grad(got, [x, *ffn.parameters()], grad),
                        torch.autograd.grad(expected, [x, *plain.parameters()], grad)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert len(calls) == 6
    assert ffn(torch.zeros(0, 12, dtype=torch.float64)).shape == (0, 12)
    assert len(calls) == 6


@needs_native
def test_linear_of_maps_in_float32_and_without_an_input_gradient():
    """float32 through oneDNN within float32's error of float64; with x not requiring a
    gradient only the weight's and bias's are made."""
    from acmix_mm.ops.linear import linear_of_maps
    x = tokens_of('planes', 1, 3000, 64, torch.float32)
    weight = torch.randn(192, 64, requires_grad=True)
    bias = torch.randn(192, requires_grad=True)
    got = linear_of_maps(x, weight, bias, False)
    torch.testing.assert_close(got.double(), F.linear(x.double(), weight.double(),
                                                      bias.double()), rtol=1e-5, atol=1e-4)
    got.sum().backward()
    assert x.grad is None
    torch.testing.assert_close(weight.grad.double(), x.double().sum(1).expand(192, -1),
                               rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(bias.grad, torch.full((192, ), 3000.))


@needs_native
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('size', [(6, 8), (7, 9), (2, 3)])
def test_max_pool2x2_equals_torch(dtype, size):
    """Values and gradients of F.max_pool2d(x, 2, 2), odd sides dropped, with ties (the
    zeros of a ReLU: the first maximum takes the gradient) and NaNs (the last one)."""
    from acmix_mm.ops.max_pool import max_pool2x2
    x = torch.randn(2, 3, *size, dtype=dtype).relu()
    x[0, 0, 0, :2] = float('nan')
    x[1, 2, :2, 1] = float('nan')
    x.requires_grad_()
    got, expected = max_pool2x2(x), torch.nn.functional.max_pool2d(x, 2, 2)
    torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=0)
    grad = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(got, x, grad)[0],
                               torch.autograd.grad(expected, x, grad)[0], rtol=0, atol=0)


@needs_native
def test_max_pool2x2_gradcheck_and_opcheck():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: torch.ops.acmix_mm.max_pool2x2(x)[0], (x, ))
    torch.library.opcheck(torch.ops.acmix_mm.max_pool2x2.default, (x.detach().float(), ))
    out, argmax = torch.ops.acmix_mm.max_pool2x2(x.detach().float())
    torch.library.opcheck(torch.ops.acmix_mm.max_pool2x2_backward.default,
                          (torch.randn_like(out), argmax, 5, 6))


def batch_norm_pair(channels, momentum=0.1, dtype=torch.float64):
    """A NativeBatchNorm2d and an nn.BatchNorm2d with the same random affine parameters
    and running statistics."""
    from acmix_mm.layers import NativeBatchNorm2d
    native = NativeBatchNorm2d(channels, momentum=momentum).to(dtype)
    plain = torch.nn.BatchNorm2d(channels, momentum=momentum).to(dtype)
    with torch.no_grad():
        for norm in (native, plain):
            for name, tensor in (('weight', torch.linspace(0.5, 2, channels)),
                                 ('bias', torch.linspace(-1, 1, channels)),
                                 ('running_mean', torch.linspace(-0.2, 0.3, channels)),
                                 ('running_var', torch.linspace(0.8, 1.5, channels))):
                getattr(norm, name).copy_(tensor)
    return native, plain


@needs_native
@pytest.mark.parametrize('shape', [(2, 3, 7, 9), (1, 4, 70, 131), (3, 2, 1, 2)])
@pytest.mark.parametrize('momentum', [0.1, None])
def test_native_batch_norm_equals_torch_in_float64(shape, momentum):
    """Training mode: output, gradients of the map, weight and bias, and the running
    statistics (momentum and cumulative averages) of nn.BatchNorm2d; planes of whole
    vector blocks and remainders, a plane of two values; an offset mean (the variance is
    taken about it without cancellation). Eval mode is BatchNorm's own."""
    native, plain = batch_norm_pair(shape[1], momentum)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 50).requires_grad_()
    for step in range(2):
        got, expected = native(x), plain(x)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(expected)
        params = [x, native.weight, native.bias]
        for ours, theirs in zip(torch.autograd.grad(got, params, grad),
                                torch.autograd.grad(expected, [x, plain.weight, plain.bias],
                                                    grad)):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
        for name in ('running_mean', 'running_var', 'num_batches_tracked'):
            torch.testing.assert_close(getattr(native, name), getattr(plain, name),
                                       rtol=1e-12, atol=1e-12)
    native.eval(), plain.eval()
    torch.testing.assert_close(native(x), plain(x), rtol=1e-12, atol=1e-12)


@needs_native
def test_native_batch_norm_gradcheck_opcheck_and_float32():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: torch.ops.acmix_mm.batch_norm_nchw(*t, 1e-5)[0], (x, weight, bias))
    singles = [t.detach().float() for t in (x, weight, bias)]
    torch.library.opcheck(torch.ops.acmix_mm.batch_norm_nchw.default, (*singles, 1e-5))
    # float32 sums in vectors, blocks of 4096 added in double: torch's float64 result.
    native, plain = batch_norm_pair(16, dtype=torch.float32)
    big = torch.randn(2, 16, 150, 170) * 2 + 5
    torch.testing.assert_close(native(big).double(),
                               plain.double()(big.double()), rtol=1e-5, atol=1e-5)


def test_native_batch_norm_runs_torch_elsewhere(monkeypatch):
    """Channels-last maps, maps without affine parameters and the fallback setting take
    BatchNorm's own forward; SAN builds its plain BN norms as NativeBatchNorm2d."""
    from acmix_mm.layers import NativeBatchNorm2d
    from acmix_mm.layers.batch_norm import build_norm
    calls = []
    monkeypatch.setattr(torch.ops.acmix_mm, 'batch_norm_nchw',
                        lambda *args: calls.append(args) or 1 / 0, raising=False)
    norm = NativeBatchNorm2d(3)
    norm(torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last))
    NativeBatchNorm2d(3, affine=False)(torch.randn(2, 3, 4, 5))
    with ops.native_ops(False):
        norm(torch.randn(2, 3, 4, 5))
    assert calls == []
    assert type(build_norm(dict(type='BN'), 3)) is NativeBatchNorm2d
    frozen = build_norm(dict(type='BN', requires_grad=False), 3)
    assert not frozen.weight.requires_grad and not frozen.bias.requires_grad
    assert type(build_norm(dict(type='GN', num_groups=1), 3)) is torch.nn.GroupNorm
    assert all(type(m) is not torch.nn.BatchNorm2d for m in SAN(19).modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


@needs_native
def test_san_with_running_statistics_is_the_same_with_native_ops_on_and_off(monkeypatch):
    """Norms in eval mode (tests, and detection training with norm_eval): the native
    patchwise ops take the running statistics' scale and shift; outputs and gradients
    (the norms' weights too) as the PyTorch path, which runs the norm itself."""
    from acmix_mm.layers import patchwise
    calls = []
    native_hidden = patchwise.ops.patch_hidden
    monkeypatch.setattr(patchwise.ops, 'patch_hidden',
                        lambda *args: calls.append(1) or native_hidden(*args))
    torch.manual_seed(0)
    backbone, size, param = small_san()
    backbone.double()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    backbone(x)  # running statistics away from their initial values
    trained = len(calls)
    backbone.eval()
    norm = backbone.stages[1].blocks[0].attn.attn_path.norm_in
    results = []
    for native_on in (True, False):
        with ops.native_ops(native_on):
            outs = backbone(x)
            loss = sum(out.square().mean() for out in outs)
            results.append((outs, torch.autograd.grad(loss, [x, param, norm.weight])))
    (outs_on, grads_on), (outs_off, grads_off) = results
    for on, off in zip(outs_on + grads_on, outs_off + grads_off):
        torch.testing.assert_close(on, off, rtol=1e-9, atol=1e-10)
    # Each patchwise path that ran in the training pass ran natively in eval mode too.
    assert trained > 0 and len(calls) == 2 * trained
