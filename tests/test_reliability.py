"""Faults and bad input: killed runs, distributed runs, mixed precision, determinism."""
import os
import os.path as osp
import re
import shutil
import subprocess

import pytest
import torch

import acmix_mm  # noqa: F401
from acmix_mm.backbones import AttNet, PVTACmix, ResNetACmix, SANACmix, SwinACmix

from conftest import ROOT, assert_group_freed_before_exit, distributed_env, load_script, run_tool
from test_tools import DEMO, demo_data_options


def train_args(data_root, work_dir, *extra):
    return [DEMO, '--work-dir', work_dir, '--cfg-options', *demo_data_options(data_root),
            'default_hooks.logger.interval=1', *extra]


def iteration_losses(log):
    return re.findall(r'Epoch\(train\) +\[\d+\]\[\d+/\d+\].*? loss: ([0-9.]+)', log)


def test_two_process_distributed_training(tiny_demo_data, tmp_path):
    work_dir = str(tmp_path / 'dist')
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', DEMO, '2', '--sync-bn', 'torch',
         *train_args(tiny_demo_data, work_dir, 'train_dataloader.batch_size=1',
                     'train_cfg.max_epochs=2', 'train_cfg.val_interval=100')[1:]],
        cwd=ROOT, env=distributed_env(tmp_path), capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    # 2 images, 1 per process: one iteration per epoch, two epochs.
    assert 'Epoch(train) [1][1/1]' in log and 'Epoch(train) [2][1/1]' in log
    assert sorted(os.listdir(work_dir)).count('epoch_2.pth') == 1
    assert not [f for f in os.listdir(work_dir) if f.endswith('.partial')]
    assert_group_freed_before_exit(proc.stderr)


def test_same_seed_deterministic_runs_give_the_same_first_loss(tiny_demo_data, tmp_path):
    losses = []
    for run in range(2):
        proc = run_tool('tools/train.py', *train_args(
            tiny_demo_data, str(tmp_path / str(run)), 'train_dataloader.batch_size=2',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=100',
            'randomness.deterministic=True'))
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses.append(iteration_losses(proc.stdout + proc.stderr)[0])
    assert losses[0] == losses[1]


def test_amp_on_cpu_trains_with_bfloat16(tiny_demo_data, tmp_path):
    proc = run_tool('tools/train.py', *train_args(
        tiny_demo_data, str(tmp_path), 'train_dataloader.batch_size=1',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=100'), '--amp')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "type='CPUAmpOptimWrapper'" in log
    losses = [float(v) for v in iteration_losses(log)]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


BACKBONES = [
    lambda: PVTACmix('tiny'),
    lambda: SwinACmix(dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 4, 4, 8])),
    lambda: ResNetACmix(26, norm_eval=False),
    lambda: SANACmix(10),
    lambda: AttNet('xxs'),
]
BACKBONE_IDS = ['PVTACmix', 'SwinACmix', 'ResNetACmix', 'SANACmix', 'AttNet']
# float16 runs on every device this machine has: the CPU always (torch's CPU autocast
# and GradScaler follow the CUDA recipe, so overflow in our operators shows up here),
# and the GPU where there is one, which is what --amp uses there.
FLOAT16_DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def train_a_few_steps(model, device, dtype, scaler=None, steps=3):
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # Norms run in float32 under autocast; the convolutions and projections must not.
    projection_dtypes, finite = set(), []
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.register_forward_hook(
                lambda module, args, out: projection_dtypes.add(out.dtype))
    for _ in range(steps):
        with torch.autocast(device, dtype=dtype):
            outs = model(torch.randn(2, 3, 128, 128, device=device))
            assert projection_dtypes == {dtype}
            loss = sum(o.float().pow(2).mean() for o in outs)
        optimizer.zero_grad()
        assert torch.isfinite(loss)
        if scaler is None:
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                       if p.grad is not None)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            finite.append(all(torch.isfinite(p.grad).all() for p in model.parameters()
                              if p.grad is not None))
            scaler.step(optimizer)
            scaler.update()
    if scaler is not None:
        # Dynamic loss scaling skips a step with inf/nan gradients and halves the scale.
        # A few times at the start is float16's range, not a fault: SAN-ACmix's 1x1 stem
        # sums its weight gradient over every pixel (2 x 128 x 128), 58k and more at the
        # initial scale 2^16 against float16's 65504, so (depending on the random
        # weights) the scale comes down once or twice. Overflow in an operator would
        # recur at every scale and drive it down step after step.
        assert all(finite[3:]), finite
        assert scaler.get_scale() >= 2.0**14, (scaler.get_scale(), finite)


@pytest.mark.parametrize('backbone', BACKBONES, ids=BACKBONE_IDS)
def test_each_backbone_trains_under_bfloat16_autocast(backbone):
    torch.manual_seed(0)
    model = backbone()
    model.init_weights()
    train_a_few_steps(model, 'cpu', torch.bfloat16)


@pytest.mark.parametrize('device', FLOAT16_DEVICES)
@pytest.mark.parametrize('backbone', BACKBONES, ids=BACKBONE_IDS)
def test_each_backbone_trains_under_float16_with_loss_scaling(backbone, device):
    torch.manual_seed(0)
    model = backbone()
    model.init_weights()
    train_a_few_steps(model, device, torch.float16, torch.amp.GradScaler(device), steps=4)


@pytest.mark.parametrize('has_gpu, wrapper', [(True, 'AmpOptimWrapper'),
                                              (False, 'CPUAmpOptimWrapper')])
def test_amp_flag_picks_float16_loss_scaling_on_gpu_and_bfloat16_on_cpu(
        monkeypatch, has_gpu, wrapper):
    train = load_script('tools/train.py')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: has_gpu)
    cfg = train.build_cfg(train.parse_args([osp.join(ROOT, DEMO), '--amp']))
    assert cfg.optim_wrapper.type == wrapper
    if has_gpu:
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
    else:
        assert 'loss_scale' not in cfg.optim_wrapper


def test_unreadable_image_is_named(tiny_demo_data, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(tiny_demo_data, data)
    image = sorted((data / 'coco' / 'train2017').iterdir())[0]
    image.write_bytes(b'not an image')
    proc = run_tool('tools/train.py', *train_args(
        str(data), str(tmp_path / 'work'), 'train_dataloader.batch_size=2',
        'train_cfg.max_epochs=1'))
    assert proc.returncode == 1
    assert f'error: Cannot read image {image}: it is truncated or not an image' in \
        proc.stderr
    assert 'Traceback' not in proc.stderr


def test_classes_missing_from_the_annotations_are_named(tiny_demo_data, tmp_path):
    """The demo annotations hold none of COCO's 80 classes: the paper config's classes."""
    proc = run_tool('tools/train.py', *train_args(
        tiny_demo_data, str(tmp_path / 'work'),
        "train_dataloader.dataset.metainfo.classes=[person,car]"))
    assert proc.returncode == 1
    assert 'instances_train2017.json has no images left: none of its annotations is ' \
        "of the config's classes (2: person, car)" in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_slurm_script_runs_train_with_the_slurm_launcher(tmp_path):
    """A stand-in srun records its arguments (no cluster here)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    record = tmp_path / 'srun_args'
    (bin_dir / 'srun').write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    (bin_dir / 'srun').chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', GPUS='16')
    proc = subprocess.run(['bash', 'tools/slurm_train.sh', 'gpu', 'acmix', DEMO, 'wd',
                           '--amp'], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().split()
    assert args[:2] == ['-p', 'gpu'] and '--ntasks=16' in args
    assert args[-5:] == ['tools/train.py', DEMO, '--work-dir=wd', '--launcher=slurm', '--amp']
