"""benchmarks/atconv_vs_acmix.py and backbone_speed.py's ATConv pairs: they run, every
mixer maps the same input to its shape, and the two ATConv orders agree."""
import re

import torch

from conftest import load_script, run_tool

bench = load_script('benchmarks/atconv_vs_acmix.py')


def test_every_mixer_keeps_the_input_shape_and_is_counted():
    mixers = bench.build_mixers(32)
    x = torch.randn(2, 32, 15, 22)
    results = bench.measure(mixers, x, repeat=1, device=torch.device('cpu'))
    for (name, module), (params, flops, forward, backward) in zip(mixers, results):
        assert module.eval()(x).shape == x.shape, name
        assert params > 0 and flops > 0 and forward > 0 and backward > 0, name
    # Pooling first saves the kernel projection on every position but the k*k bins
    # (the counter's einsum handle rounds by a few FLOPs).
    saved = 32 * 32 * (15 * 22 - 9) * 2  # two images
    assert abs(results[1][1] - results[0][1] - saved) < 10


def test_operator_benchmark_prints_a_row_per_mixer():
    proc = run_tool('benchmarks/atconv_vs_acmix.py', '--channels', '32', '--size', '16',
                    '24', '--repeat', '1', '--device', 'cpu')
    assert proc.returncode == 0, proc.stderr
    assert 'ATConv: both orders give the same output' in proc.stdout
    rows = re.findall(r'^(ATConv|ACmix).*\( 1\.00\)|^(ATConv|ACmix).*\(\s*[0-9.]+\)$',
                      proc.stdout, re.M)
    assert len(rows) == 5, proc.stdout
    proc = run_tool('benchmarks/atconv_vs_acmix.py', '--channels', '48')
    assert proc.returncode == 2 and 'multiple of 32' in proc.stderr


def test_backbone_benchmark_compares_attnet_with_acmix():
    proc = run_tool('benchmarks/backbone_speed.py', '--pairs', 'attnet-t1', '--size', '64',
                    '64', '--repeat', '1', '--device', 'cpu', '--deploy')
    assert proc.returncode == 0, proc.stderr
    assert re.search(r'AttNet-T1: [0-9.]+ s   PVT-ACmix-T \(fused\): [0-9.]+ s   '
                     r'ratio [0-9.]+', proc.stdout), proc.stdout
