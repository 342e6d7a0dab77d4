"""The PVTACmix backbone contract: registries, shapes, freezing, checkpoints."""
import pytest
import torch

from acmix_mm.backbones import PVTACmix, pvt_official_to_acmix
from acmix_mm.checkpoint import CheckpointError
from acmix_mm.references.pvt import ReferencePVT


@pytest.fixture(scope='module')
def official_tiny(tmp_path_factory):
    torch.manual_seed(0)
    reference = ReferencePVT().eval()
    path = tmp_path_factory.mktemp('ckpt') / 'pvt_tiny.pth'
    torch.save(reference.state_dict(), path)
    return reference, str(path)


def test_registered_in_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for registry in (DET_MODELS, SEG_MODELS):
        model = registry.build(dict(type='PVTACmix', arch='tiny', out_indices=(3, )))
        assert isinstance(model, PVTACmix)


@pytest.mark.parametrize('arch,depths,official', [('tiny', (2, 2, 2, 2), 13_229_288),
                                                  ('small', (3, 4, 6, 3), 24_485_864)])
def test_sizes_are_pvt_plus_the_convolution_paths(arch, depths, official):
    """Exactly PVT v1 (13.2M / 24.5M with the ImageNet classifier, as its paper and our
    transcription of the official code count) without that classifier, plus per block
    the ACmix convolution path: fc (3 heads -> 9 maps, with bias), the shift kernels
    (C x 9 x 3 x 3) and alpha, beta."""
    assert sum(p.numel() for p in ReferencePVT(depths).parameters()) == official
    # final norm, head, class token and the class token's position embedding
    classifier = 2 * 512 + 512 * 1000 + 1000 + 512 + 512
    acmix = sum(depth * (9 * 3 * heads + 9 + dims * 9 * 3 * 3 + 2)
                for depth, heads, dims in zip(depths, (1, 2, 5, 8), (64, 128, 320, 512)))
    assert sum(p.numel() for p in PVTACmix(arch=arch).parameters()) == \
        official - classifier + acmix


def test_odd_input_shapes_and_strides():
    model = PVTACmix(arch='tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 97, 131))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 25, 33), (1, 128, 13, 17),
                                              (1, 320, 7, 9), (1, 512, 4, 5)]


def test_out_indices():
    model = PVTACmix(arch='tiny', out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]
    with pytest.raises(ValueError, match='out_indices'):
        PVTACmix(arch='tiny', out_indices=(4, ))


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="Unknown PVTACmix arch 'huge'"):
        PVTACmix(arch='huge')


def test_frozen_stages_stay_frozen_in_train_mode():
    model = PVTACmix(arch='tiny', frozen_stages=2, drop_path_rate=0.5)
    model.train()
    for i, stage in enumerate(model.stages):
        frozen = i < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(m.training != frozen for m in stage.modules())
    model(torch.randn(1, 3, 64, 64))[-1].sum().backward()
    assert all(p.grad is None for p in model.stages[0].parameters())
    assert model.stages[2].blocks[0].attn.alpha.grad is not None


def test_train_and_eval_modes():
    torch.manual_seed(0)
    model = PVTACmix(arch='tiny', drop_path_rate=0.5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        first, second = model(x)[-1], model(x)[-1]
    torch.testing.assert_close(first, second)  # eval: deterministic
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x)[-1], first)  # stochastic depth is active


def test_with_cp_gives_equal_outputs_and_gradients():
    torch.manual_seed(0)
    plain = PVTACmix(arch='tiny')
    checkpointed = PVTACmix(arch='tiny', with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        model.eval()
        out = model(x)
        sum(o.square().sum() for o in out).backward()
        grads.append(model.stages[0].blocks[0].attn.qkv.weight.grad.clone())
        assert any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(plain(x)[-1], checkpointed(x)[-1])


def test_official_checkpoint_converts_and_matches_pvt(official_tiny):
    """With (alpha, beta) = (1, 0) the model loaded from an official PVT v1 checkpoint
    computes exactly that PVT, in float64, at a size that resizes the position
    embeddings; the convolution path keeps its shift initialisation. The spatial
    reduction's norm at the block norms' eps (1e-6 instead of PVT's 1e-5) would fail."""
    reference, path = official_tiny
    model = PVTACmix(
        arch='tiny',
        rate_init=(1.0, 0.0),
        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval().double()
    x = torch.randn(2, 3, 256, 320, dtype=torch.double)
    with torch.no_grad():
        expected = reference.double()(x)
        for ours, theirs in zip(model(x), expected):
            torch.testing.assert_close(ours, theirs)
        for name, module in model.named_modules():
            if name.endswith('attn_path.norm'):
                assert module.eps == 1e-5
                module.eps = 1e-6
        assert not torch.allclose(model(x)[0], expected[0], rtol=1e-4, atol=1e-4)
    reference.float()
    path_conv = model.stages[0].blocks[0].attn.conv_path.dep_conv.weight
    assert path_conv[:, 4, 1, 1].eq(1).all()  # the centre shift kernel, untouched


def test_official_checkpoint_matches_mmdet_pvt(official_tiny):
    """mmdet's PVT, loading the same file through its own converter, agrees."""
    from mmdet.models.backbones import PyramidVisionTransformer
    from mmengine.config import ConfigDict
    reference, path = official_tiny
    mmdet_pvt = PyramidVisionTransformer(
        num_layers=[2, 2, 2, 2],
        init_cfg=ConfigDict(type='Pretrained', checkpoint=path))
    mmdet_pvt.init_weights()
    model = PVTACmix(arch='tiny', rate_init=(1.0, 0.0),
                     init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for ours, theirs in zip(model.eval()(x), mmdet_pvt.eval()(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3)


def test_converter_places_every_official_key(official_tiny):
    reference, _ = official_tiny
    official = reference.state_dict()
    converted, discarded = pvt_official_to_acmix(official)
    own = PVTACmix(arch='tiny').state_dict()
    # Every official tensor is either placed or listed with its reason.
    placed = {k.split(':')[0] for k in discarded}
    assert placed == {k for k in official if k.startswith(('head.', 'norm.'))} | (
        {'cls_token'} & set(official))
    assert set(converted) <= set(own)
    assert all(converted[k].shape == own[k].shape for k in converted)
    left = set(own) - set(converted)
    assert left and all(('conv_path' in k or k.endswith(('alpha', 'beta'))) for k in left)


def test_checkpoint_of_another_arch_is_refused_with_the_keys(official_tiny, tmp_path):
    _, path = official_tiny
    model = PVTACmix(arch='small', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match='model weights the checkpoint does not '
                       'have') as err:
        model.init_weights()
    assert 'stages.0.blocks.2' in str(err.value)
    missing = PVTACmix(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'x.pth')))
    with pytest.raises(CheckpointError, match='not found'):
        missing.init_weights()


def test_fresh_init_keeps_shift_kernels():
    model = PVTACmix(arch='tiny')
    model.init_weights()
    attn = model.stages[1].blocks[1].attn
    assert attn.alpha.item() == 0.5 and attn.beta.item() == 0.5
    kernels = attn.conv_path.dep_conv.weight
    assert kernels.sum().item() == kernels.shape[0] * 9 and kernels.max().item() == 1


def test_final_norm_of_the_classification_form_is_left_out_downstream(tmp_path):
    """PVTACmix(final_norm=True) (ImageNet classification, as PVT v1's classifier)
    normalises the last stage's tokens; its checkpoint loads into the detection
    backbone (no final norm) with every other tensor taken and the norm reported."""
    torch.manual_seed(0)
    classifier = PVTACmix(arch='tiny', final_norm=True).eval()
    with torch.no_grad():
        classifier.norm.weight.uniform_(0.5, 1.5)
    path = tmp_path / 'epoch_300.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               classifier.state_dict().items()},
                'meta': {}}, path)
    backbone = PVTACmix(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    backbone.eval()
    own = backbone.state_dict()
    assert set(classifier.state_dict()) - set(own) == {'norm.weight', 'norm.bias'}
    for key, value in own.items():
        torch.testing.assert_close(value, classifier.state_dict()[key], msg=key)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        last = backbone(x)[-1]
        tokens = classifier.norm(last.flatten(2).transpose(1, 2))
        torch.testing.assert_close(classifier(x)[-1],
                                   tokens.transpose(1, 2).reshape(last.shape))
    # A backbone that has the norm takes it.
    again = PVTACmix(arch='tiny', final_norm=True,
                     init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    again.init_weights()
    torch.testing.assert_close(again.norm.weight, classifier.norm.weight)


def test_checkpoint_of_another_pretraining_size_resizes_the_position_embeddings(tmp_path):
    """Weights trained at 224 loaded into a model built for 448: its embeddings are
    the 224 ones resized as the forward pass resizes them, so both give one output."""
    torch.manual_seed(0)
    small = PVTACmix(arch='tiny').eval()
    for stage in small.stages:
        torch.nn.init.normal_(stage.pos_embed, std=0.5)
    path = tmp_path / 'pvt_acmix_224.pth'
    torch.save({'state_dict': small.state_dict()}, path)
    large = PVTACmix(arch='tiny', pretrain_img_size=448,
                     init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    large.init_weights()
    assert large.stages[0].pos_embed.shape == (1, 112 * 112, 64)
    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        for ours, theirs in zip(large.eval()(x), small(x)):
            torch.testing.assert_close(ours, theirs)
