"""The files the official ImageNet training scripts write load as they are, through
``init_cfg`` and ``tools/convert_ckpt.py``, under ``weights_only=True``.

Each writer below saves what that script saves, in its order and with its types
(optimizer and scheduler state, accuracies, the config or args object); the weights
are a random model of the official code in its key layout (the references of the
family's own tests).
"""
import argparse
import contextlib
import sys
import types
from collections import OrderedDict

import pytest
import torch

from acmix_mm.backbones import SAN, AttNet, PVTACmix, ResNetACmix, SwinACmix
from acmix_mm.checkpoint import CheckpointError, load_checkpoint_file
from acmix_mm.references.attnet import ReferenceAttNet
from acmix_mm.references.pvt import ReferencePVT
from acmix_mm.references.resnet_acmix import ReferenceResNetACmix
from acmix_mm.references.san import ReferenceSAN
from acmix_mm.references.swin import ReferenceSwinACmix

from conftest import load_script
from test_checkpoint_safety import Payload
from test_swin_acmix import SMALL_ARCH


class YacsCfgNode(dict):
    """What ``yacs.config.CfgNode`` (yacs 0.1.8) is to pickle: a dict subclass whose
    ``__dict__`` holds its flags, nested nodes for nested dicts, no reduce hooks."""

    def __init__(self, init_dict=None, new_allowed=False):
        init_dict = {k: YacsCfgNode(v) if isinstance(v, dict) else v
                     for k, v in (init_dict or {}).items()}
        super().__init__(init_dict)
        self.__dict__['__immutable__'] = False
        self.__dict__['__deprecated_keys__'] = set()
        self.__dict__['__renamed_keys__'] = {}
        self.__dict__['__new_allowed__'] = new_allowed

    def __getattr__(self, name):
        if name in self:
            return self[name]
        raise AttributeError(name)

    def freeze(self):
        self.__dict__['__immutable__'] = True
        for value in self.values():
            if isinstance(value, YacsCfgNode):
                value.freeze()


@contextlib.contextmanager
def yacs_importable():
    """``yacs.config.CfgNode`` as pickle finds it while saving; gone afterwards, so
    loading cannot use yacs."""
    package, module = types.ModuleType('yacs'), types.ModuleType('yacs.config')
    YacsCfgNode.__module__, YacsCfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    module.CfgNode, package.config = YacsCfgNode, module
    saved = {name: sys.modules.get(name) for name in ('yacs', 'yacs.config')}
    sys.modules.update({'yacs': package, 'yacs.config': module})
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def swin_config():
    """The official Swin-ACmix config's shape (Swin-Transformer/config.py), frozen."""
    node = YacsCfgNode(dict(
        BASE=[''],
        DATA=dict(BATCH_SIZE=128, DATA_PATH='imagenet', DATASET='imagenet', IMG_SIZE=224,
                  INTERPOLATION='bicubic', ZIP_MODE=False, CACHE_MODE='part',
                  PIN_MEMORY=True, NUM_WORKERS=8),
        MODEL=dict(TYPE='swin', NAME='acmix_swin_tiny_patch4_window7_224', RESUME='',
                   NUM_CLASSES=1000, DROP_RATE=0.0, DROP_PATH_RATE=0.2,
                   LABEL_SMOOTHING=0.1,
                   SWIN=dict(PATCH_SIZE=4, IN_CHANS=3, EMBED_DIM=96,
                             DEPTHS=[2, 2, 6, 2], NUM_HEADS=[3, 6, 12, 24],
                             WINDOW_SIZE=7, MLP_RATIO=4., QKV_BIAS=True, QK_SCALE=None,
                             APE=False, PATCH_NORM=True)),
        TRAIN=dict(START_EPOCH=0, EPOCHS=300, WARMUP_EPOCHS=20, WEIGHT_DECAY=0.05,
                   BASE_LR=5e-4, WARMUP_LR=5e-7, MIN_LR=5e-6, CLIP_GRAD=5.0,
                   AUTO_RESUME=True, ACCUMULATION_STEPS=0, USE_CHECKPOINT=False,
                   LR_SCHEDULER=dict(NAME='cosine', DECAY_EPOCHS=30, DECAY_RATE=0.1),
                   OPTIMIZER=dict(NAME='adamw', EPS=1e-8, BETAS=(0.9, 0.999),
                                  MOMENTUM=0.9)),
        AUG=dict(COLOR_JITTER=0.4, AUTO_AUGMENT='rand-m9-mstd0.5-inc1', REPROB=0.25,
                 REMODE='pixel', RECOUNT=1, MIXUP=0.8, CUTMIX=1.0, CUTMIX_MINMAX=None,
                 MIXUP_PROB=1.0, MIXUP_SWITCH_PROB=0.5, MIXUP_MODE='batch'),
        TEST=dict(CROP=True),
        AMP_OPT_LEVEL='O1', OUTPUT='output/acmix_swin_tiny', TAG='default', SAVE_FREQ=1,
        PRINT_FREQ=10, SEED=0, EVAL_MODE=False, THROUGHPUT_MODE=False, LOCAL_RANK=0))
    node.freeze()
    return node


def optimizer_state(model, kind='adamw', **groups):
    """The state dict of the optimizer the script uses, after one step."""
    params = list(model.parameters())
    decay, no_decay = params[::2], params[1::2]
    group_list = [dict(params=decay), dict(params=no_decay, weight_decay=0.)]
    if kind == 'adamw':
        optimizer = torch.optim.AdamW(group_list, lr=1e-3, betas=(0.9, 0.999), **groups)
    else:
        optimizer = torch.optim.SGD(group_list, lr=0.1, momentum=0.9, **groups)
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    for param in params:
        param.grad = None
    for group in optimizer.param_groups:
        group['initial_lr'] = group['lr']
    return optimizer.state_dict()


def timm_cosine_state(**overrides):
    """``timm.scheduler.CosineLRScheduler.state_dict()``: its ``__dict__`` but the
    optimizer (timm 0.3.2 attribute order)."""
    state = OrderedDict(
        param_group_field='lr', _initial_param_group_field='initial_lr',
        base_values=[5e-4, 5e-4], metric=None, noise_range_t=None, noise_pct=0.67,
        noise_type='normal', noise_std=1.0, noise_seed=42, t_initial=375300, t_mul=1.0,
        lr_min=5e-6, decay_rate=1.0, cycle_limit=1, warmup_t=25020, warmup_lr_init=5e-7,
        warmup_prefix=False, t_in_epochs=False, warmup_steps=[1.9e-8, 1.9e-8])
    state.update(overrides)
    return dict(state)


GRAD_SCALER = dict(scale=65536.0, growth_factor=2.0, backoff_factor=0.5,
                   growth_interval=2000, _growth_tracker=117)


def write_swin_acmix(reference, path):
    """LeapLabTHU/ACmix Swin-Transformer/utils.py save_checkpoint (AMP level O1)."""
    with yacs_importable():
        torch.save({
            'model': reference.state_dict(),
            'optimizer': optimizer_state(reference),
            'lr_scheduler': timm_cosine_state(),
            'max_accuracy': 81.3,
            'epoch': 299,
            'config': swin_config(),
            'amp': OrderedDict(loss_scaler0={'loss_scale': 65536.0, 'unskipped': 80}),
        }, path)


def write_resnet_acmix(reference, path):
    """LeapLabTHU/ACmix ResNet/main.py save_checkpoint, as the script means it (its
    committed form stops at an undefined scheduler): DataParallel keys, best_acc1 a
    tensor, SGD state, a StepLR state."""
    torch.save({
        'epoch': 100,
        'arch': 'acmix_resnet26',
        'state_dict': OrderedDict((f'module.{k}', v)
                                  for k, v in reference.state_dict().items()),
        'best_acc1': torch.tensor(76.1),
        'optimizer': optimizer_state(reference, 'sgd', weight_decay=1e-4),
        'scheduler': dict(step_size=30, gamma=0.1, base_lrs=[0.1, 0.1], last_epoch=100,
                          _step_count=101, verbose=False,
                          _get_lr_called_within_step=False, _last_lr=[1e-4, 1e-4]),
    }, path)


def write_pvt(reference, path):
    """whai362/PVT classification/main.py (DeiT style): weights, AdamW, timm cosine,
    epoch, the AMP scaler and the argparse namespace."""
    args = argparse.Namespace(
        fp32_resume=False, batch_size=128, epochs=300, config='configs/pvt/pvt_tiny.py',
        model='pvt_tiny', input_size=224, drop=0.0, drop_path=0.1, model_ema=False,
        opt='adamw', opt_eps=1e-8, opt_betas=None, clip_grad=None, momentum=0.9,
        weight_decay=0.05, sched='cosine', lr=0.001, lr_noise=None, decay_epochs=30,
        warmup_lr=1e-6, min_lr=1e-5, color_jitter=0.4, aa='rand-m9-mstd0.5-inc1',
        smoothing=0.1, reprob=0.25, mixup=0.8, cutmix=1.0, cutmix_minmax=None,
        data_path='/dataset/imagenet/', data_set='IMNET', output_dir='checkpoints/pvt',
        device='cuda', seed=0, resume='', start_epoch=0, eval=False, dist_eval=True,
        num_workers=10, pin_mem=True, world_size=8, dist_url='env://', rank=0, gpu=0,
        distributed=True, dist_backend='nccl', nb_classes=1000)
    torch.save({
        'model': reference.state_dict(),
        'optimizer': optimizer_state(reference),
        'lr_scheduler': timm_cosine_state(t_initial=300, lr_min=1e-5, decay_rate=0.1,
                                          warmup_t=5, warmup_lr_init=1e-6,
                                          t_in_epochs=True, noise_seed=0),
        'epoch': 299,
        'scaler': dict(GRAD_SCALER),
        'args': args,
    }, path)


def write_san(reference, path):
    """hszhao/SAN tool/train.py under its torch 1.4 (the legacy, non-zip format):
    DataParallel keys, SGD, a cosine scheduler, float accuracies."""
    torch.save({
        'epoch': 100,
        'state_dict': OrderedDict((f'module.{k}', v)
                                  for k, v in reference.state_dict().items()),
        'optimizer': optimizer_state(reference, 'sgd', weight_decay=1e-4),
        'scheduler': dict(T_max=100, eta_min=0, base_lrs=[0.1, 0.1], last_epoch=100,
                          _step_count=101, _get_lr_called_within_step=False,
                          _last_lr=[0.0, 0.0]),
        'top1_val': 0.7468,
        'top5_val': 0.9201,
    }, path, _use_new_zipfile_serialization=False)


def write_attnet(reference, path):
    """price112/Attentive-Convolution train.py (DeiT style, timm 1.0): weights, AdamW,
    timm cosine, epoch, the EMA weights, the AMP scaler and the argparse namespace."""
    args = argparse.Namespace(
        batch_size=128, epochs=300, model='AttNet_XXS', input_size=224, drop=0.0,
        drop_path_rate=0, model_ema=True, model_ema_decay=0.99996, opt='adamw',
        clip_grad=None, weight_decay=0.05, sched='cosine', lr=0.004, warmup_epochs=5,
        color_jitter=0, aa=None, smoothing=0.1, reprob=0, mixup=0, cutmix=0,
        data_path='/data/imagenet', output_dir='output', log_freq=[250, 280],
        resume=None, distributed=True, nb_classes=1000)
    state_dict = reference.state_dict()
    torch.save({
        'model': state_dict,
        'optimizer': optimizer_state(reference),
        'lr_scheduler': timm_cosine_state(t_initial=300, cycle_mul=1.0, cycle_decay=0.1,
                                          k_decay=1.0, t_in_epochs=True, noise_seed=0),
        'epoch': 299,
        'model_ema': OrderedDict((k, v.clone()) for k, v in state_dict.items()),
        'scaler': dict(GRAD_SCALER),
        'args': args,
    }, path)


# family: (official model, writer, our backbone)
FAMILIES = {
    'swin_acmix': (ReferenceSwinACmix, write_swin_acmix, lambda: SwinACmix(SMALL_ARCH)),
    'resnet_acmix': (lambda: ReferenceResNetACmix((1, 2, 4, 1)), write_resnet_acmix,
                     lambda: ResNetACmix(26)),
    'pvt': (ReferencePVT, write_pvt, lambda: PVTACmix('tiny', rate_init=(1.0, 0.0))),
    'san': (lambda: ReferenceSAN((2, 1, 2, 4, 1)), write_san, lambda: SAN(10)),
    'attnet': (lambda: ReferenceAttNet('xxs'), write_attnet, lambda: AttNet('xxs')),
}


def loaded_backbone(build, checkpoint):
    backbone = build()
    backbone.init_cfg = dict(type='Pretrained', checkpoint=str(checkpoint))
    backbone.init_weights()
    return backbone.state_dict()


@pytest.mark.parametrize('family', list(FAMILIES))
def test_training_checkpoint_loads_as_the_bare_weights_do(family, tmp_path):
    make_reference, write, build = FAMILIES[family]
    torch.manual_seed(0)
    reference = make_reference().eval()
    training_file, bare_file = tmp_path / 'training.pth', tmp_path / 'bare.pth'
    write(reference, str(training_file))
    torch.save(reference.state_dict(), bare_file)
    assert 'yacs' not in sys.modules or not hasattr(sys.modules['yacs'], 'config')
    torch.manual_seed(1)
    expected = loaded_backbone(build, bare_file)
    torch.manual_seed(1)  # the same initialisation for what no checkpoint holds
    through_init_cfg = loaded_backbone(build, training_file)
    assert list(through_init_cfg) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(through_init_cfg[key], value, msg=key)
    converted = tmp_path / 'converted.pth'
    convert_ckpt = load_script('tools/convert_ckpt.py')
    assert convert_ckpt.main([str(training_file), str(converted)]) == 0
    torch.manual_seed(1)
    through_tool = loaded_backbone(build, converted)
    for key, value in expected.items():
        torch.testing.assert_close(through_tool[key], value, msg=key)


def test_the_swin_config_loads_as_a_plain_mapping(tmp_path):
    path = tmp_path / 'ckpt_epoch_299.pth'
    write_swin_acmix(ReferenceSwinACmix(), str(path))
    config = load_checkpoint_file(str(path))['config']
    assert type(config) is OrderedDict and type(config['MODEL']['SWIN']) is OrderedDict
    assert config['MODEL']['SWIN']['DEPTHS'] == [2, 2, 6, 2]
    assert config['TRAIN']['OPTIMIZER']['BETAS'] == (0.9, 0.999)


def test_a_payload_planted_in_the_config_never_runs(tmp_path):
    marker = tmp_path / 'ran.txt'
    path = tmp_path / 'planted.pth'
    with yacs_importable():
        config = swin_config()
        config['MODEL'].__dict__['__immutable__'] = False
        dict.__setitem__(config['MODEL'], 'NAME', Payload(str(marker)))
        torch.save({'model': {}, 'config': config}, path)
    with pytest.raises(CheckpointError, match=r'Refused to load .*\(posix.system\)'):
        load_checkpoint_file(str(path))
    assert not marker.exists()
