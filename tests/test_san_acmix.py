"""Patchwise attention, SAN and SAN-ACmix.

Checked against the straightforward references of acmix_mm.references.san: SAN's
attention module as the official code (hszhao/SAN) computes it (patches unfolded
k*k-fold), with ResNet-ACmix's convolution path for ACmix, and a SAN built from them in
the official key layout, whose state dicts therefore are official-layout checkpoints.
"""
import inspect
import os.path as osp
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmdet.registry import MODELS as DET_MODELS
from mmseg.registry import MODELS as SEG_MODELS

import acmix_mm  # noqa: F401
from acmix_mm import ops
from acmix_mm.analysis import saved_bytes
from acmix_mm.backbones import SAN, SANACmix, san_official_to_acmix
from acmix_mm.checkpoint import CheckpointError, save_atomic
from acmix_mm.errors import ConfigError
from acmix_mm.layers import TokenACmix, fuse_acmix, patchwise
from acmix_mm.references.san import (
    ReferenceSAM,
    ReferenceSAN,
    ours_from_reference,
    randomise_norms,
    tokens_forward,
)

from conftest import ROOT, free_port, run_tool


@pytest.mark.parametrize('native_on', [True, False], ids=['native', 'fallback'])
@pytest.mark.parametrize('acmix', [False, True], ids=['SAN', 'SAN-ACmix'])
@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('kernel_size,size', [(7, (11, 13)), (3, (5, 9))])
def test_layer_equals_the_unfold_formulation(native_on, acmix, mode, kernel_size, size,
                                             monkeypatch):
    """Outputs, input and weight gradients, and BatchNorm running statistics, in float64,
    with the native operators (where built and switched on) and on the PyTorch fallback
    in bands of a few rows (so the band seams are checked)."""
    monkeypatch.setattr(patchwise, 'BAND_ELEMENTS', 3000)
    # Not built, or ACMIX_MM_NATIVE_OPS=0: both cases check the fallback.
    native_on = native_on and ops.native_enabled()
    torch.manual_seed(0)
    reference = ReferenceSAM(32, 8, 32, 8, kernel_size, acmix).double()
    randomise_norms(reference)
    ours = ours_from_reference(reference, 32, acmix)
    getattr(reference, mode)()
    getattr(ours, mode)()
    x = torch.randn(2, 32, *size, dtype=torch.double) * 2 + 1
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    with ops.native_ops(native_on):
        assert patchwise.native_serves(x) == native_on
        out_ours = tokens_forward(ours, x_ours)
    out_ref = reference(x_ref)
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-9, atol=1e-9)
    grad = torch.randn_like(out_ref)
    (out_ref * grad).sum().backward()
    (out_ours * grad).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    path = ours.attn_path
    torch.testing.assert_close(path.fc1.weight.grad, reference.conv_w[2].weight.grad.flatten(1))
    torch.testing.assert_close(path.fc2.weight.grad, reference.conv_w[5].weight.grad.flatten(1))
    torch.testing.assert_close(path.fc2.bias.grad, reference.conv_w[5].bias.grad)
    torch.testing.assert_close(path.norm_in.weight.grad, reference.conv_w[0].weight.grad)
    torch.testing.assert_close(path.norm_in.running_mean, reference.conv_w[0].running_mean)
    torch.testing.assert_close(path.norm_in.running_var, reference.conv_w[0].running_var)
    if acmix:
        torch.testing.assert_close(ours.conv_path.fc.weight.grad, reference.fc.weight.grad)
        torch.testing.assert_close(ours.beta.grad, reference.rate2.grad)


def conv_layouts(monkeypatch):
    """The list of the layouts (channel-major or not) that the convolution path's calls of
    ``conv_of_pieces`` are given from now on."""
    from acmix_mm.layers import acmix as acmix_layer
    layouts = []
    conv_of_pieces = acmix_layer.conv_of_pieces

    def spy(*args, **kwargs):
        bound = inspect.signature(conv_of_pieces).bind(*args, **kwargs)
        layouts.append(bound.arguments.get('channel_major', False))
        return conv_of_pieces(*args, **kwargs)

    monkeypatch.setattr(acmix_layer, 'conv_of_pieces', spy)
    return layouts


@pytest.mark.parametrize('native_on', [True, False], ids=['native', 'fallback'])
def test_both_paths_read_the_projection_in_one_layout(native_on, monkeypatch):
    """SAN-ACmix projects once, in the layout its convolution path reads (piece-major
    for the native grouped convolution, channel-major for F.conv2d), and the patchwise
    path reads that same tensor: no reordered copy of the projection for either."""
    # Not built, or ACMIX_MM_NATIVE_OPS=0: both cases check the fallback. Six pieces
    # (q, k and 4 heads of v) of 16 channels, four outputs per group.
    native_on = native_on and ops.pieces_conv_usable(
        torch.empty(1, 1, 6 * 16), torch.empty(64, 6, 3, 3), 1)
    layouts = conv_layouts(monkeypatch)
    torch.manual_seed(0)
    layer = TokenACmix(64, 4, dict(type='PatchwiseAttentionPath', kernel_size=7),
                       in_dims=128, qk_dims=16, fc_bias=False)
    x = torch.randn(1, 9 * 10, 128)
    with ops.native_ops(native_on):
        out = layer(x, (9, 10))
        projections = [layer.project(x, channel_major) for channel_major in (False, True)]
    assert layouts == [not native_on]
    # and the path reads either layout alike
    path_outs = [layer.attn_path(x, qkv, (9, 10), layer.qkv, channel_major=channel_major)
                 for qkv, channel_major in zip(projections, (False, True))]
    torch.testing.assert_close(path_outs[0], path_outs[1])
    assert out.shape == (1, 90, 64)


@pytest.mark.parametrize('fc_bias', [False, True], ids=['no-bias', 'bias'])
def test_narrow_groups_run_as_one_dense_convolution(fc_bias, monkeypatch):
    """SAN-ACmix-19's first stage (6 pieces of 4 channels: 4 groups) runs its convolution
    path as one dense conv on the piece-major projection planes, which the patchwise path
    reads too (no copy for either), with the grouped conv's outputs and gradients."""
    from acmix_mm.layers import acmix as acmix_layer
    conv_of_pieces = acmix_layer.conv_of_pieces
    layouts = conv_layouts(monkeypatch)
    copies = []
    contiguous_tokens = acmix_layer.contiguous_tokens
    monkeypatch.setattr(acmix_layer, 'contiguous_tokens',
                        lambda tokens: copies.append(tokens.shape) or contiguous_tokens(tokens))
    torch.manual_seed(0)
    layer = TokenACmix(16, 4, dict(type='PatchwiseAttentionPath', kernel_size=7),
                       in_dims=64, qk_dims=4, fc_bias=fc_bias).double()
    x = torch.randn(2, 9 * 10, 64, dtype=torch.float64)
    path = layer.conv_path
    results = []
    for max_groups in (acmix_layer.DENSE_MAX_GROUPS, 0):  # dense, then grouped
        monkeypatch.setattr(acmix_layer, 'DENSE_MAX_GROUPS', max_groups)
        out = layer(x, (9, 10))
        params = [layer.qkv.weight, path.fc.weight, path.dep_conv.weight] + (
            [path.fc.bias] if fc_bias else [])
        results.append((out, *torch.autograd.grad(out.square().sum(), params)))
    # the dense conv reads the patchwise path's planes as they are: no copy as tokens
    assert path.head_dims == 4 and layouts == [False, True] and copies == []
    for dense, grouped in zip(*results):
        torch.testing.assert_close(dense, grouped, rtol=1e-10, atol=1e-10)
    # and a channel-major projection (as paths that read that layout get) alike
    monkeypatch.setattr(acmix_layer, 'DENSE_MAX_GROUPS', 4)
    weight, bias_kernel, stride = path.grouped_conv(layer.beta)
    qkv = layer.project(x)
    channel_major = qkv.view(2, 90, path.num_pieces, 4).transpose(2, 3).reshape(qkv.shape)
    outs = [conv_of_pieces(tokens, (9, 10), path.num_pieces, weight, bias_kernel, stride,
                           layout) for tokens, layout in ((qkv, False), (channel_major, True))]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
    f_att = layer.attn_path(x, qkv, (9, 10), layer.qkv, out_scale=layer.alpha,
                            channel_major=False)
    torch.testing.assert_close(outs[0], results[1][0] - f_att, rtol=1e-9, atol=1e-9)


def test_layer_keeps_no_unfolded_patches_for_backward():
    """The unfold formulation keeps k*k-fold copies of k and v (and of the attention
    weights); ours keeps the inputs, q, k, v, the hidden maps and the bands' outputs
    (k=7, 64 channels, as SAN-ACmix's first 7x7 stage)."""
    torch.manual_seed(0)
    reference = ReferenceSAM(64, 16, 64, 8, 7, acmix=True)
    ours = ours_from_reference(reference, 64, acmix=True)
    x = torch.randn(1, 64, 40, 48, requires_grad=True)
    ref_bytes, _ = saved_bytes(lambda: reference(x))
    ours_bytes, _ = saved_bytes(lambda: tokens_forward(ours, x))
    map_bytes = x.numel() * x.element_size()
    assert ref_bytes > 49 * map_bytes  # 49 unfolded copies of v alone
    # Input and output of the projection (1 + 1.5), q, k, v and their padded copies
    # (2.6), hidden maps (0.4), output tokens (2); the convolution path's pieces and
    # maps (3.75).
    assert ours_bytes < 12 * map_bytes


def test_sync_batchnorm_statistics_without_a_process_group_are_the_local_ones():
    torch.manual_seed(0)
    reference = ReferenceSAM(16, 4, 16, 8, 3).double()
    ours = ours_from_reference(reference, 16, acmix=False).train()
    path = ours.attn_path
    sync = nn.SyncBatchNorm(path.norm_in.num_features).double()
    sync.load_state_dict(path.norm_in.state_dict())
    x = torch.randn(2, 16, 6, 7, dtype=torch.double)
    expected = tokens_forward(ours, x)
    path.norm_in = sync
    path.norm_in.running_mean.zero_()
    torch.testing.assert_close(tokens_forward(ours, x), expected)


def test_too_small_map_is_a_clear_error():
    layer = TokenACmix(32, 4, dict(type='PatchwiseAttentionPath', kernel_size=7),
                       qk_dims=8)
    with pytest.raises(ConfigError, match='larger than 3 pixels'):
        layer(torch.randn(1, 9, 32), (3, 3))


@pytest.fixture(scope='module')
def official_san10(tmp_path_factory):
    """A random SAN-10 (patchwise) in the official layout, saved as its train.py does."""
    torch.manual_seed(0)
    model = ReferenceSAN((2, 1, 2, 4, 1)).eval()
    randomise_norms(model)
    path = tmp_path_factory.mktemp('san') / 'san10_patchwise.pth'
    state_dict = {f'module.{k}': v for k, v in model.state_dict().items()}
    save_atomic(dict(epoch=100, state_dict=state_dict, top1_val=0.771), str(path))
    return model, str(path)


@pytest.mark.parametrize('depth,official_params', [
    (10, 11_841_124), (15, 16_181_310), (19, 20_518_470)])
def test_sizes(depth, official_params):
    """SAN equals the official network (11.8 / 16.2 / 20.5 M, hszhao/SAN's README) minus
    its classifier; SAN-ACmix adds per block the convolution path of Appendix C: fc (6
    pieces of C/4 -> 9 maps), the 3x3 shift group conv (C outputs from 9 maps each) and
    the two rates."""
    classifier = 2048 * 1000 + 1000
    san = SAN(depth)
    assert sum(p.numel() for p in san.parameters()) == official_params - classifier
    reference = ReferenceSAN(SAN.arch_settings[depth])
    assert sum(p.numel() for p in reference.parameters()) == official_params
    acmix = SANACmix(depth)
    extra = sum(num_blocks * ((channels // 4) * 81 + 6 * 9 + 2) for channels, num_blocks in
                zip(SANACmix.stage_channels, SANACmix.arch_settings[depth]))
    assert sum(p.numel() for p in acmix.parameters()) == official_params - classifier + extra


def test_official_checkpoint_loads_and_gives_the_same_features(official_san10):
    reference, path = official_san10
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = reference.stages(x)
    san = SAN(10, init_cfg=dict(type='Pretrained', checkpoint=path))
    san.init_weights()
    # SAN-ACmix from SAN's weights with (alpha, beta) = (1, 0) is SAN at the start.
    acmix = SANACmix(10, rate_init=(1.0, 0.0), init_cfg=dict(type='Pretrained',
                                                             checkpoint=path))
    acmix.init_weights()
    for model in (san, acmix):
        with torch.no_grad():
            outs = model.eval()(x)
        assert [o.shape[1:] for o in outs] == [e.shape[1:] for e in expected]
        for ours, ref in zip(outs, expected):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_convert_ckpt_tool_writes_a_loadable_checkpoint(official_san10, tmp_path):
    reference, path = official_san10
    out = str(tmp_path / 'san10.pth')
    proc = run_tool('tools/convert_ckpt.py', path, out)
    assert proc.returncode == 0, proc.stderr
    assert 'official SAN (patchwise)' in proc.stdout and 'fc.weight' in proc.stdout
    san = SAN(10, init_cfg=dict(type='Pretrained', checkpoint=out))
    san.init_weights()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for ours, ref in zip(san.eval()(x), reference.stages(x)):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_checkpoints_with_numbered_stages_still_load(tmp_path):
    """Our SAN checkpoints of before ``stages`` (``stage0`` .. ``stage4``) load as they
    were: as a pretrained backbone, and inside a whole detector's state dict."""
    torch.manual_seed(0)
    model = SANACmix(10).eval()
    old_layout = OrderedDict((re.sub(r'^stages\.(\d)\.', r'stage\1.', k), v)
                             for k, v in model.state_dict().items())
    assert sum(k.startswith('stage4.') for k in old_layout) > 0
    path = str(tmp_path / 'old_san10_acmix.pth')
    torch.save({'state_dict': old_layout}, path)
    x = torch.randn(1, 3, 128, 128)
    pretrained = SANACmix(10, init_cfg=dict(type='Pretrained', checkpoint=path))
    pretrained.init_weights()
    whole = nn.ModuleDict(dict(backbone=SANACmix(10)))
    whole.load_state_dict({f'backbone.{k}': v for k, v in old_layout.items()}, strict=True)
    with torch.no_grad():
        for ours in (pretrained, whole.backbone):
            for a, b in zip(ours.eval()(x), model(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_converter_places_every_official_key(official_san10):
    reference, _ = official_san10
    converted, discarded = san_official_to_acmix(reference.state_dict())
    assert discarded == ['fc.weight: ImageNet classifier, not part of a backbone',
                         'fc.bias: ImageNet classifier, not part of a backbone']
    SAN(10).load_state_dict(converted, strict=True)
    acmix = ReferenceSAN((2, 1, 2, 4, 1), acmix=True)
    converted, _ = san_official_to_acmix(acmix.state_dict())
    SANACmix(10).load_state_dict(converted, strict=True)


def test_acmix_in_the_official_style_gives_the_same_features():
    torch.manual_seed(0)
    reference = ReferenceSAN((2, 1, 2, 4, 1), acmix=True).eval()
    randomise_norms(reference)
    converted, _ = san_official_to_acmix(reference.state_dict())
    ours = SANACmix(10).eval()
    ours.load_state_dict(converted)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for mine, ref in zip(ours(x), reference.stages(x)):
            torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4)
        fused_expected = ours(x)
        assert fuse_acmix(ours) == 10  # one per block: 6 pieces fuse into fewer MACs
        for mine, ref in zip(ours(x), fused_expected):
            torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4)


def test_misfit_and_pairwise_checkpoints_are_clear(official_san10, tmp_path):
    _, path = official_san10
    with pytest.raises(CheckpointError, match='shape mismatches|does not have'):
        SAN(15, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    pairwise = {'layer0.0.sam.conv_p.weight': torch.zeros(2, 2, 1, 1)}
    with pytest.raises(ConfigError, match='pairwise'):
        san_official_to_acmix(pairwise)
    with pytest.raises(ConfigError, match="depth 12.*10, 15, 19"):
        SANACmix(12)
    with pytest.raises(ConfigError, match='out_indices'):
        SANACmix(10, out_indices=(4, ))
    with pytest.raises(ConfigError, match='convert_weights'):
        SAN(10, convert_weights=False,
            init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()


def test_backbone_conventions():
    for registry in (DET_MODELS, SEG_MODELS):
        assert registry.get('SANACmix') is SANACmix and registry.get('SAN') is SAN
    model = SANACmix(10, out_indices=(1, 3), frozen_stages=1, norm_eval=True)
    model.init_weights()
    model.train()
    outs = model(torch.randn(1, 3, 128, 160))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 16, 20), (1, 2048, 4, 5)]
    frozen = [model.conv_in, model.norm_in, model.stages[0], model.stages[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # The init keeps the shift kernels.
    conv_path = model.stages[2].blocks[0].attn.conv_path
    assert conv_path.dep_conv.weight.sum() == conv_path.dep_conv.weight.shape[0] * 9


def test_fresh_network_is_stable_in_eval_mode():
    """Patchwise products are not normalised (no softmax): with running statistics not
    yet learnt, an init that amplifies (Kaiming fan_out on the narrowing projections)
    makes them grow block by block to inf; the official SAN's default init does not."""
    torch.manual_seed(0)
    model = SANACmix(19)
    model.init_weights()
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 128, 128))
    assert all(o.abs().max() < 100 for o in outs)


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = SANACmix(10, out_indices=(0, ))
    checkpointed = SANACmix(10, out_indices=(0, ), with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        model(x)[0].square().mean().backward()
        grads.append(model.stages[1].blocks[0].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_paper_config_trains_and_tests_on_the_bundled_data(tiny_demo_data, tmp_path):
    """retinanet_san19_acmix_1x.py itself, with the demo data, classes and image size (a
    config inheriting from it, as a user would write) and no ImageNet weights."""
    coco = osp.join(tiny_demo_data, 'coco') + '/'
    loader = ("dict(batch_size=2, num_workers=0, persistent_workers=False, "
              "dataset=dict(data_root='{root}', metainfo=dict(classes={classes}), "
              "pipeline={pipeline}))")
    classes = "('circle', 'square', 'triangle')"
    train = ("[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),"
             " dict(type='Resize', scale=(256, 256), keep_ratio=True), "
             "dict(type='PackDetInputs')]")
    test = ("[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(256, 256), "
            "keep_ratio=True), dict(type='LoadAnnotations', with_bbox=True), "
            "dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', "
            "'img_shape', 'scale_factor'))]")
    config = tmp_path / 'san_demo.py'
    config.write_text('\n'.join([
        f"_base_ = '{osp.join(ROOT, 'configs', 'retinanet_san19_acmix_1x.py')}'",
        "model = dict(backbone=dict(init_cfg=None, frozen_stages=-1, norm_eval=False),",
        "             bbox_head=dict(num_classes=3), test_cfg=dict(score_thr=0.0))",
        'train_dataloader = ' + loader.format(root=coco, classes=classes, pipeline=train),
        'val_dataloader = ' + loader.format(root=coco, classes=classes, pipeline=test),
        'test_dataloader = val_dataloader',
        f"val_evaluator = dict(ann_file='{coco}annotations/instances_val2017.json')",
        'test_evaluator = val_evaluator',
        'train_cfg = dict(max_epochs=1)',
        'randomness = dict(seed=0)',
    ]))
    work_dir = str(tmp_path / 'work')
    proc = run_tool('tools/train.py', str(config), '--work-dir', work_dir)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "type='SANACmix'" in log and 'Epoch(train) [1][1/1]' in log
    assert re.search(r'loss: [0-9.]+', log)
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_tool('tools/test.py', str(config), checkpoint, '--work-dir', work_dir)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(r'coco/bbox_mAP: [0-9.]+', log)


def _sync_bn_worker(rank, world_size, port, norm_state, tensors, queue):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world_size)
    try:
        query, key, fc1_weight, grad = (t.chunk(world_size)[rank] if t.dim() == 4 else t
                                        for t in tensors)
        query, key = query.clone().requires_grad_(), key.clone().requires_grad_()
        norm = nn.SyncBatchNorm(norm_state['weight'].numel()).double()
        norm.load_state_dict(norm_state)
        hidden = patchwise.patch_hidden(query, key, norm.train(), fc1_weight, 3)
        (hidden * grad).sum().backward()
        # numpy arrays travel by value (tensors would be shared with this process,
        # which exits).
        queue.put((rank, ) + tuple(
            t.detach().numpy() for t in (hidden, query.grad, key.grad, norm.running_mean,
                                         norm.running_var, norm.weight.grad)))
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_statistics_span_the_processes():
    """Two processes with half a batch each and a SyncBatchNorm give the hidden map,
    input gradients and running statistics of one process with the whole batch and a
    BatchNorm (torch's SyncBatchNorm itself runs on GPUs only; ours computes the
    statistics itself, so this runs on CPU)."""
    import torch.multiprocessing as mp
    torch.manual_seed(0)
    r, k, groups = 4, 3, 2
    norm = nn.BatchNorm2d(r * (k * k + 1)).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    norm_state = {name: t.clone() for name, t in norm.state_dict().items()}
    query = (torch.randn(4, r, 6, 7, dtype=torch.double) * 2 + 1).requires_grad_()
    key = (torch.randn(4, r, 6, 7, dtype=torch.double) - 1).requires_grad_()
    fc1_weight = torch.randn(groups, r * (k * k + 1), dtype=torch.double)
    hidden = patchwise.patch_hidden(query, key, norm.train(), fc1_weight, k)
    grad = torch.randn_like(hidden)
    (hidden * grad).sum().backward()
    port = free_port()
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    tensors = (query.detach(), key.detach(), fc1_weight, grad)
    procs = [ctx.Process(target=_sync_bn_worker,
                         args=(rank, 2, port, norm_state, tensors, queue))
             for rank in range(2)]
    for proc in procs:
        proc.start()
    try:
        results = sorted((queue.get(timeout=120) for _ in procs), key=lambda t: t[0])
        results = [[torch.from_numpy(a) for a in res[1:]] for res in results]
    finally:
        for proc in procs:
            proc.join(timeout=30)
    torch.testing.assert_close(torch.cat([res[0] for res in results]), hidden.detach())
    torch.testing.assert_close(torch.cat([res[1] for res in results]), query.grad)
    torch.testing.assert_close(torch.cat([res[2] for res in results]), key.grad)
    for res in results:
        torch.testing.assert_close(res[3], norm.running_mean)
        torch.testing.assert_close(res[4], norm.running_var)
    # Each process holds the gradient of its half; DDP sums them.
    torch.testing.assert_close(results[0][5] + results[1][5], norm.weight.grad)


def test_export_form_of_the_patches(monkeypatch):
    """In exports the patches are k*k shifted slices of the padded map, stacked (F.unfold
    exports as a Gather through an index map, which took more than half of SAN-ACmix-19's
    time in ONNX Runtime), the same as F.unfold's, and the rows one band (each band's
    slices would be nodes of the graph)."""
    padded = torch.randn(2, 3, 11, 14, dtype=torch.float64)
    expected = patchwise.unfold_band(padded, 1, 4, 5)
    assert len(patchwise.row_bands(400, 400, 3 * 49)) > 1
    monkeypatch.setattr(patchwise, 'exporting', lambda: True)
    assert torch.equal(patchwise.unfold_band(padded, 1, 4, 5), expected)
    assert patchwise.row_bands(400, 400, 3 * 49) == [(0, 400)]


def test_stage_relu_after_the_pool_equals_relu_before():
    """The stem's ReLU runs after stage 0's max pool: the same output and gradients
    as before it (max and ReLU commute), on a quarter of the pixels."""
    from acmix_mm.backbones.san_acmix import SANStage
    torch.manual_seed(0)
    stage = SANStage(8, 32, 1, with_conv_path=False).double()
    x = torch.randn(2, 8, 16, 18, dtype=torch.float64, requires_grad=True)
    got = stage(x, relu_input=True)
    expected = stage(torch.relu(x))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grad = torch.randn_like(got)
    torch.testing.assert_close(torch.autograd.grad(got, x, grad)[0],
                               torch.autograd.grad(expected, x, grad)[0], rtol=0, atol=0)
