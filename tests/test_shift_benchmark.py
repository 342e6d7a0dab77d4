"""benchmarks/shift_operators.py: tensor shifts equal the group conv; the script runs."""
import pytest
import torch

from acmix_mm.layers import ShiftConvPath

from conftest import load_script, run_tool

bench = load_script('benchmarks/shift_operators.py')


@pytest.mark.parametrize('layout', ['channels-last', 'NCHW'])
@pytest.mark.parametrize('embed_dims,num_heads,hw_shape,batch', [
    (12, 3, (7, 9), 2),  # odd H and W
    (8, 1, (5, 6), 1),
    (16, 4, (6, 11), 1),
])
def test_tensor_shift_equals_group_conv(layout, embed_dims, num_heads, hw_shape, batch):
    torch.manual_seed(0)
    path = ShiftConvPath(embed_dims, num_heads)
    height, width = hw_shape
    maps = torch.randn(batch, height * width, embed_dims // num_heads, 9,
                       requires_grad=True)
    grad = torch.randn(batch, height * width, embed_dims)
    ref = bench.group_conv_shift(path, maps, hw_shape)
    ref_grad, = torch.autograd.grad(ref, maps, grad)
    out = bench.tensor_shift(maps, hw_shape, num_heads, layout=layout)
    out_grad, = torch.autograd.grad(out, maps, grad)
    assert out.shape == (batch, height * width, embed_dims)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out_grad, ref_grad)
    # And the benchmark's own check accepts it.
    bench.check_same(path, maps, hw_shape, num_heads)


def test_tensor_shift_is_a_zero_filled_shift():
    # One map per shift, a single 1 in the middle: the output is the sum of the
    # shifts, i.e. ones on the 3x3 neighbourhood (the group conv's receptive field).
    height, width = 5, 7
    maps = torch.zeros(1, height, width, 1, 9)
    maps[0, 2, 3] = 1.
    out = bench.tensor_shift(maps.view(1, height * width, 1, 9), (height, width), 1)
    expected = torch.zeros(height, width)
    expected[1:4, 2:5] = 1.
    torch.testing.assert_close(out.view(height, width), expected)
    # A single shift moves the map by (i - 1, j - 1) with zero filling.
    maps = torch.zeros(1, height * width, 1, 9)
    maps[..., 0] = torch.arange(1., height * width + 1).view(1, -1, 1)
    out = bench.tensor_shift(maps, (height, width), 1).view(height, width)
    grid = torch.arange(1., height * width + 1).view(height, width)
    expected = torch.zeros(height, width)
    expected[1:, 1:] = grid[:-1, :-1]  # out[y, x] = in[y - 1, x - 1]
    torch.testing.assert_close(out, expected)


def test_unknown_layout():
    with pytest.raises(ValueError, match='layout'):
        bench.tensor_shift(torch.zeros(1, 4, 1, 9), (2, 2), 1, layout='NHWC')


def test_script_small_run():
    proc = run_tool('benchmarks/shift_operators.py', '--shapes', '12,3,7,9', '8,2,5,6',
                    '--repeat', '1', '--threads', '1', timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith('ACmix shift and sum') and 'torch' in lines[0]
    assert 'threads' in lines[0] and 'device' in lines[0]
    assert sum('outputs match' in line for line in lines) == 2
    ratios = [line for line in lines if line.split()[1:2] == ['ratio']]
    assert len(ratios) == 4, proc.stdout  # forward and forward+backward per shape
    for line in ratios:
        assert float(line.split()[2]) > 0


def test_script_rejects_bad_shape():
    proc = run_tool('benchmarks/shift_operators.py', '--shapes', '10,3,5,5',
                    timeout=120)
    assert proc.returncode == 2
    assert 'divisible' in proc.stderr
