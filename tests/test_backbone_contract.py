"""What every backbone promises as a PyTorch module and an mmdet backbone: train() and
eval() return the module, and ``frozen_stages`` has one meaning everywhere (-1
nothing, 0 the stem, i the stem and the first i stages), with frozen parts kept in eval
mode through train(), and each converts its family's official checkpoints through the
layout registered for it (the one ``tools/convert_ckpt.py`` reads)."""
import pytest
import torch

from acmix_mm.backbones import (
    OFFICIAL_LAYOUTS,
    SAN,
    AttNet,
    PVTACmix,
    ResNetACmix,
    SANACmix,
    SwinACmix,
)

SMALL_SWIN = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 4, 4, 8])

# name: (builder, input side, parts frozen_stages=0 freezes, parts stage 0 adds)
BACKBONES = {
    'PVTACmix': (lambda **kw: PVTACmix('tiny', drop_path_rate=0.5, **kw), 64,
                 ['stages.0.patch_embed', 'stages.0.pos_embed', 'stages.0.pos_drop'],
                 ['stages.0']),
    'SwinACmix': (lambda **kw: SwinACmix(SMALL_SWIN, drop_path_rate=0.5, **kw), 64,
                  ['patch_embed', 'drop_after_pos'], ['stages.0', 'norm0']),
    'ResNetACmix': (lambda **kw: ResNetACmix(26, **kw), 64, ['conv1', 'bn1'],
                    ['layer1']),
    'SANACmix': (lambda **kw: SANACmix(10, **kw), 128, ['conv_in', 'norm_in', 'stages.0'],
                 ['stages.1']),
    'AttNet': (lambda **kw: AttNet('xxs', drop_path_rate=0.5, **kw), 64,
               ['stages.0.downsample'], ['stages.0']),
}


def under(name, prefixes):
    return any(name == p or name.startswith(p + '.') for p in prefixes)


@pytest.mark.parametrize('name', list(BACKBONES))
def test_train_and_eval_return_the_module(name):
    model = BACKBONES[name][0]()
    assert model.eval() is model and not model.training
    assert model.train() is model and model.training


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1])
@pytest.mark.parametrize('name', list(BACKBONES))
def test_frozen_stages_mean_the_same_everywhere(name, frozen_stages):
    build, side, stem, stage0 = BACKBONES[name]
    model = build(frozen_stages=frozen_stages, norm_eval=False).train()
    frozen = (stem if frozen_stages >= 0 else []) + (stage0 if frozen_stages >= 1 else [])
    for param_name, param in model.named_parameters():
        assert param.requires_grad != under(param_name, frozen), param_name
    for module_name, module in model.named_modules():
        if module_name:
            assert module.training != under(module_name, frozen), module_name
    if frozen_stages == 1:
        # No dropout or drop path in a frozen stage: its output repeats in train mode.
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            torch.testing.assert_close(model(x)[0], model(x)[0])


def test_every_backbone_names_a_registered_official_layout():
    backbones = [SAN(10)] + [builder() for builder, *_ in BACKBONES.values()]
    for backbone in backbones:
        layout = OFFICIAL_LAYOUTS[backbone.official_layout]
        assert type(backbone).__name__ in layout.backbone
        # Our own layout is never taken for the official one.
        assert not layout.detect(backbone.state_dict())
    assert len({layout.convert for layout in OFFICIAL_LAYOUTS.values()}) == 5
