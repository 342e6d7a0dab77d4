"""The ACmix operator against the paper's identities, checked numerically."""
import pytest
import torch
import torch.nn.functional as F

from acmix_mm.layers import ShiftConvPath, TokenACmix, shift_kernels


def shift(t, dy, dx):
    """Reference tensor shift: out[..., i, j] = t[..., i + dy, j + dx], zero outside."""
    height, width = t.shape[-2:]
    padded = F.pad(t, (1, 1, 1, 1))
    return padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def test_kxk_convolution_is_sum_of_shifted_1x1_convolutions():
    """Eq. 6-8: Stage I 1x1 projections per kernel position, Stage II shift and sum."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    direct = F.conv2d(x, weight, padding=1)
    decomposed = sum(
        shift(F.conv2d(x, weight[:, :, p, q, None, None]), p - 1, q - 1)
        for p in range(3) for q in range(3))
    torch.testing.assert_close(decomposed, direct)


@pytest.mark.parametrize('index', range(9))
def test_shift_kernel_convolution_equals_tensor_shift(index):
    """Eq. 14-17: a depthwise convolution with a shift kernel is a tensor shift."""
    torch.manual_seed(index)
    x = torch.randn(2, 4, 6, 7)
    kernel = shift_kernels(3)[index].repeat(4, 1, 1, 1)
    out = F.conv2d(x, kernel, padding=1, groups=4)
    torch.testing.assert_close(out, shift(x, index // 3 - 1, index % 3 - 1))


def _reference_fc(path, qkv, hw_shape):
    """The fc of the convolution path written out: (B, head_dims, k*k, H, W)."""
    batch, _, channels = qkv.shape
    heads = path.num_heads
    pieces = qkv.transpose(1, 2).reshape(batch, 3 * heads, channels // (3 * heads),
                                         *hw_shape)
    weight = path.fc.weight.view(9, 3 * heads)
    return torch.einsum('ip,bpdhw->bdihw', weight, pieces) + \
        path.fc.bias.view(1, 1, 9, 1, 1)


@pytest.mark.parametrize('embed_dims,num_heads', [(8, 1), (12, 3), (16, 4)])
def test_shift_initialised_group_conv_is_shift_and_sum(embed_dims, num_heads):
    """Fig. 3c: at initialisation the group convolution shifts the k*k maps and sums
    them; every one of the num_heads outputs of a group starts as that sum."""
    torch.manual_seed(0)
    hw_shape = (5, 6)
    path = ShiftConvPath(embed_dims, num_heads).double()
    qkv = torch.randn(2, 30, 3 * embed_dims, dtype=torch.float64)
    maps = _reference_fc(path, qkv, hw_shape)
    summed = sum(shift(maps[:, :, i], i // 3 - 1, i % 3 - 1) for i in range(9))
    expected = summed.repeat_interleave(num_heads, dim=1)  # (B, C, H, W)
    out = path(qkv, hw_shape).transpose(1, 2).reshape(expected.shape)
    torch.testing.assert_close(out, expected)


def test_conv_path_is_a_3x3_convolution_over_the_pieces():
    """Eq. 6-8 applied to the module: with the shift init and no fc bias, the path is
    a 3x3 convolution over the 3*heads pieces whose kernel is the fc weight."""
    torch.manual_seed(0)
    embed_dims, num_heads, hw_shape = 12, 3, (7, 5)
    path = ShiftConvPath(embed_dims, num_heads).double()
    with torch.no_grad():
        path.fc.bias.zero_()
    qkv = torch.randn(2, 35, 3 * embed_dims, dtype=torch.float64)
    head_dims = embed_dims // num_heads
    pieces = qkv.transpose(1, 2).reshape(2, 3 * num_heads, head_dims, *hw_shape)
    kernel = path.fc.weight.view(3, 3, 3 * num_heads).permute(2, 0, 1)[None]
    expected = torch.stack([
        F.conv2d(pieces[:, :, d], kernel, padding=1)[:, 0] for d in range(head_dims)
    ], 1).repeat_interleave(num_heads, dim=1)
    out = path(qkv, hw_shape).transpose(1, 2).reshape(expected.shape)
    torch.testing.assert_close(out, expected)


def _acmix(**kwargs):
    return TokenACmix(16, 2, attn_path=dict(type='SpatialReductionAttentionPath', sr_ratio=2),
                 **kwargs)


def test_rates_start_at_one_half_and_mix_both_paths():
    torch.manual_seed(0)
    op = _acmix().eval()
    assert op.alpha.item() == 0.5 and op.beta.item() == 0.5
    x, hw_shape = torch.randn(2, 48, 16), (6, 8)
    qkv = op.project(x, channel_major=op.attn_path.channel_major)
    f_att = op.attn_path(x, qkv, hw_shape, op.qkv)
    f_conv = op.conv_path(qkv, hw_shape, channel_major=op.attn_path.channel_major)
    torch.testing.assert_close(op(x, hw_shape), 0.5 * f_att + 0.5 * f_conv)
    only_attention = _acmix(rate_init=(1.0, 0.0)).eval()
    only_attention.load_state_dict(
        {k: v for k, v in op.state_dict().items() if k not in ('alpha', 'beta')},
        strict=False)
    torch.testing.assert_close(only_attention(x, hw_shape), f_att)


def test_gradients_reach_rates_and_learnable_shift_kernels():
    torch.manual_seed(0)
    op = _acmix()
    x = torch.randn(2, 48, 16)
    op(x, (6, 8)).square().sum().backward()
    for name in ('alpha', 'beta', 'conv_path.dep_conv.weight', 'conv_path.fc.weight',
                 'qkv.weight', 'attn_path.sr.weight'):
        grad = op.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    before = op.conv_path.dep_conv.weight.detach().clone()
    torch.optim.SGD(op.parameters(), lr=0.1).step()
    assert not torch.equal(before, op.conv_path.dep_conv.weight)


def test_spatial_reduction_path_matches_written_out_attention():
    """Queries from the full-resolution projection; keys and values from the reduced
    tokens projected with the same k, v weights; softmax(q k^T / sqrt(d)) v."""
    torch.manual_seed(0)
    op = _acmix().eval()
    path, dims, heads = op.attn_path, 16, 2
    x, hw_shape = torch.randn(2, 48, dims), (6, 8)
    weight, bias = op.qkv.weight, op.qkv.bias
    q = x @ weight[:dims].T + bias[:dims]
    reduced = path.sr(x.transpose(1, 2).reshape(2, dims, *hw_shape))
    reduced = path.norm(reduced.flatten(2).transpose(1, 2))
    k = reduced @ weight[dims:2 * dims].T + bias[dims:2 * dims]
    v = reduced @ weight[2 * dims:].T + bias[2 * dims:]

    def heads_first(t):
        return t.view(2, -1, heads, dims // heads).transpose(1, 2)

    attn = (heads_first(q) @ heads_first(k).transpose(-2, -1)) * (dims // heads)**-0.5
    out = (attn.softmax(-1) @ heads_first(v)).transpose(1, 2).reshape(2, 48, dims)
    expected = path.proj(out)
    qkv = op.project(x, channel_major=path.channel_major)
    torch.testing.assert_close(path(x, qkv, hw_shape, op.qkv), expected)


@pytest.mark.parametrize('attn_path,num_heads', [
    (dict(type='SpatialReductionAttentionPath', sr_ratio=2), 2),
    (dict(type='ShiftedWindowAttentionPath', window_size=3), 2),
    (dict(type='SlidingWindowAttentionPath', kernel_size=3, block_size=2), 4),
    (dict(type='SlidingWindowAttentionPath', kernel_size=3, block_size=2), 8),
])
def test_rates_folded_into_the_paths_train_as_eq_13(attn_path, num_heads):
    """alpha and beta are folded into each path's last weights; the output and every
    gradient (alpha, beta, the input, the weights) equal Eq. 13 written out, with the
    convolution path fused (heads <= 4) and not (8 heads)."""
    torch.manual_seed(0)
    op = TokenACmix(16, num_heads, attn_path=attn_path, rate_init=(0.7, -1.3)).double()
    op.init_weights()
    x = torch.randn(2, 36, 16, dtype=torch.float64, requires_grad=True)
    hw_shape, kwargs = (6, 6), {}
    if attn_path['type'] == 'ShiftedWindowAttentionPath':
        kwargs = dict(shift_size=1)
    grad_out = torch.randn(2, 36, 16, dtype=torch.float64)

    def gradients(out):
        op.zero_grad(set_to_none=True)
        x.grad = None
        (out * grad_out).sum().backward()
        return [x.grad] + [p.grad for p in op.parameters()]

    folded = op(x, hw_shape, **kwargs)
    folded_grads = gradients(folded)
    channel_major = op.attn_path.channel_major or op.conv_path.reads_channel_major
    qkv = op.project(x, channel_major)
    f_att = op.attn_path(x, qkv, hw_shape, op.qkv, **kwargs)
    f_conv = op.conv_path(qkv, hw_shape, channel_major)
    written_out = op.alpha * f_att + op.beta * f_conv
    torch.testing.assert_close(folded, written_out)
    for got, expected in zip(folded_grads, gradients(written_out)):
        torch.testing.assert_close(got, expected)
    assert op.conv_path.runs_fused == (num_heads <= 4)


@pytest.mark.parametrize('batch,shift_size', [(1, 0), (2, 0), (2, 2)])
def test_window_attention_keeps_the_projection_and_equals_sdpa(batch, shift_size):
    """Training-time window attention (no windowed copy kept for backward) equals
    torch's attention on the windows, with the gradients of the projection and of the
    relative position bias table."""
    from acmix_mm.layers import ShiftedWindowAttentionPath
    torch.manual_seed(0)
    path = ShiftedWindowAttentionPath(16, 2, window_size=4).double()
    with torch.no_grad():
        path.relative_position_bias_table.normal_()
    qkv = torch.randn(batch, 8 * 12, 48, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(batch, 8 * 12, 16, dtype=torch.float64)
    results = []
    for reference in (False, True):
        path.zero_grad(set_to_none=True)
        qkv.grad = None
        path.attn_drop = 1e-300 if reference else 0.  # dropout takes torch's attention
        out = path(None, qkv, (8, 12), None, shift_size=shift_size)
        (out * grad_out).sum().backward()
        results.append((out, qkv.grad, path.relative_position_bias_table.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected)
    # What the training form keeps for backward: the projection (shared with the
    # convolution path), the attention weights, the output projection's input and
    # the parameters; not a windowed copy of the projection.
    from acmix_mm.analysis import saved_bytes
    path.attn_drop = 0.
    kept, _ = saved_bytes(lambda: path(None, qkv, (8, 12), None, shift_size=shift_size))
    itemsize = qkv.element_size()
    weights = batch * 6 * 2 * 16 * 16 * itemsize  # (B * windows, heads, N, N)
    small = sum(t.numel() * t.element_size() for t in (*path.parameters(),
                                                      *path.buffers()))
    expected = qkv.numel() * itemsize + weights + qkv.numel() // 3 * itemsize + small
    assert kept <= expected < kept + qkv.numel() * itemsize // 3


@pytest.mark.parametrize('layout', ['nchw', 'nchw-planes', 'tokens'])
def test_projection_as_convolution_equals_linear(layout):
    """The CPU projection (oneDNN's 1x1 convolution of an NCHW map, copied
    channels-last or read as planes; F.linear for contiguous tokens) gives F.linear's
    tokens and gradients; the input's gradient comes back in the input's layout."""
    from acmix_mm.layers.acmix import linear_of_tokens
    torch.manual_seed(0)
    hw_shape = (6, 10)
    if layout == 'tokens':
        x = torch.randn(2, 60, 16, requires_grad=True)
        tokens = x
    else:
        x = torch.randn(2, 16, *hw_shape, requires_grad=True)
        tokens = x.flatten(2).transpose(1, 2)
    weight = torch.randn(48, 16, requires_grad=True)
    bias = torch.randn(48, requires_grad=True)
    got = linear_of_tokens(tokens, weight, bias, hw_shape, planes=layout == 'nchw-planes')
    expected = F.linear(tokens, weight, bias)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # planes: a view of NCHW planes; else contiguous tokens
    assert got.transpose(1, 2).is_contiguous() == (layout == 'nchw-planes')
    grad = torch.randn_like(expected)
    ours = torch.autograd.grad(got, (x, weight, bias), grad)
    theirs = torch.autograd.grad(expected, (x, weight, bias), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert ours[0].stride() == x.stride()
