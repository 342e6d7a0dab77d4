"""tools/benchmark.py end to end at a small size (timings are not asserted)."""
import re

import pytest

from conftest import run_tool

ACMIX = 'configs/retinanet_pvt_acmix_t_1x.py'
BASELINE = 'configs/retinanet_pvt_t_1x.py'
RATE = r': (\d+\.\d+) img/s \(median \d+\.\d+ s/iter, batch 1, 128x128, {} iters after 1 ' \
    r'warm-up\)'


def test_benchmark_vs_baseline_prints_both_rates_and_ratio():
    proc = run_tool('tools/benchmark.py', ACMIX, '--shape', '128', '128', '--iters', '2',
                    '--warmup', '1', '--vs', BASELINE)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r'^torch \S+, \d+ threads, device \S', proc.stdout, re.M)
    for name in ('retinanet_pvt_acmix_t_1x', 'retinanet_pvt_t_1x'):
        match = re.search('^' + name + RATE.format(2), proc.stdout, re.M)
        assert match and float(match.group(1)) > 0, proc.stdout
    ratio = re.search(r'^ratio retinanet_pvt_acmix_t_1x / retinanet_pvt_t_1x: '
                      r'(\d+\.\d+)x images/s$', proc.stdout, re.M)
    assert ratio and float(ratio.group(1)) > 0, proc.stdout


def test_benchmark_segmentation_config():
    proc = run_tool('tools/benchmark.py', 'configs/sem_fpn_pvt_acmix_t_40k.py', '--shape',
                    '128', '128', '--iters', '1', '--warmup', '1')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search('^sem_fpn_pvt_acmix_t_40k' + RATE.format(1), proc.stdout, re.M)
    assert match and float(match.group(1)) > 0, proc.stdout
    assert 'ratio' not in proc.stdout


def test_benchmark_missing_config_is_a_clear_error():
    proc = run_tool('tools/benchmark.py', 'configs/no_such_config.py')
    assert proc.returncode == 1
    assert 'Config file not found' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_demo_step_benchmark_records_its_ratio(tmp_path, monkeypatch):
    """benchmarks/demo_step.py builds the demo detector and its paper-width twin, runs
    their steps and records the ratio (at a small size: timings are not asserted)."""
    import torch

    from acmix_mm import records

    from conftest import load_script
    monkeypatch.setenv('ACMIX_MM_RECORDS', str(tmp_path))
    bench = load_script('benchmarks/demo_step.py')
    demo, paper = bench.build()[0], bench.build(bench.PAPER_CHANNELS)[0]
    assert demo.neck.fpn_convs[0].conv.out_channels == 128
    assert paper.bbox_head.retina_cls.in_channels == bench.PAPER_CHANNELS
    assert sum(p.numel() for p in paper.parameters()) > sum(p.numel() for p in demo.parameters())
    # the same backbone, as initialised from the same seed
    torch.testing.assert_close(next(paper.backbone.parameters()),
                               next(demo.backbone.parameters()))
    assert bench.main(['--repeat', '1', '--batch', '1', '--size', '96']) == 0
    rec, = records.read()
    assert rec['figure'] == 'demo.det.step_vs_paper_head.b1_96' and rec['value'] > 0


def test_onnxruntime_backend_times_eager_with_and_without_native_operators(tmp_path,
                                                                          monkeypatch):
    """ResNet-ACmix through ONNX Runtime beside eager with its native operators and with
    the PyTorch fallback they replaced: three rates, two ratios, two records."""
    from acmix_mm import records
    config = 'configs/retinanet_r50_acmix_1x.py'
    monkeypatch.setenv('ACMIX_MM_RECORDS', str(tmp_path))
    proc = run_tool('tools/benchmark.py', config, '--shape', '128', '128', '--iters', '1',
                    '--warmup', '1', '--backend', 'onnxruntime', '--cfg-options',
                    'model.backbone.depth=26', 'model.backbone.init_cfg=None')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'sliding-window attention: native (C++ CPU kernels)' in proc.stdout
    name = 'retinanet_r50_acmix_1x'
    for run in ('onnxruntime', 'eager', 'eager, PyTorch fallback'):
        match = re.search(f'^{name} \\({run}\\)' + RATE.format(1), proc.stdout, re.M)
        assert match and float(match.group(1)) > 0, proc.stdout
    for other in ('eager', 'eager, PyTorch fallback'):
        assert re.search(rf'^ratio {name} \(onnxruntime\) / {name} \({other}\): '
                         r'\d+\.\d+x images/s$', proc.stdout, re.M), proc.stdout
    written = {r['figure']: r for r in records.read(str(tmp_path))}
    figure = f'benchmark.{name}.128x128.onnxruntime'
    assert set(written) == {figure, figure + '.vs_fallback'}
    rates = written[figure]['details']['images_per_s']
    # The record's ratio is of the unrounded rates, the details' rates are rounded to
    # 3 decimals: the two ratios agree within those roundings (about 1e-3 at ratios near 2).
    assert written[figure + '.vs_fallback']['value'] == pytest.approx(
        rates[f'{name} (onnxruntime)'] / rates[f'{name} (eager, PyTorch fallback)'], abs=1.5e-3)
