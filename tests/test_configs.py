"""Every config in configs/ parses, has a known scope, and builds its model."""
import glob
import inspect
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)


def test_configs_exist():
    names = {osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS}
    expected = {f'retinanet_pvt{acmix}_{size}_{schedule}.py'
                for acmix in ('', '_acmix') for size in 'tsml' for schedule in ('1x', '3x')
                if schedule == '1x' or size in 'tsl'}
    expected |= {f'sem_fpn_pvt_{size}_40k.py' for size in 'ts'}
    expected |= {f'sem_fpn_pvt_acmix_{size}_{s}.py' for size in 'ts' for s in ('40k', '160k')}
    expected |= {'demo/retinanet_pvt_acmix_t_demo.py', 'demo/sem_fpn_pvt_acmix_t_demo.py'}
    expected |= {'retinanet_r50_1x.py', 'retinanet_r50_acmix_1x.py',
                 'retinanet_r50_acmix_3x.py'}
    expected |= {f'{det}_swin_{variant}.py' for det in ('mask_rcnn', 'cascade_mask_rcnn')
                 for variant in ('t_3x', 'acmix_t_3x', 'acmix_t_1x')}
    expected |= {'mask_rcnn_swin_t_1x.py'}
    expected |= {f'upernet_swin{acmix}_{size}_160k.py' for acmix in ('', '_acmix')
                 for size in 'ts'}
    expected |= {'retinanet_attnet_t1_1x.py', 'retinanet_attnet_t1_3x.py',
                 'sem_fpn_attnet_t1_40k.py', 'mask_rcnn_attnet_t2_3x.py',
                 'upernet_attnet_t2_160k.py', 'demo/retinanet_attnet_t1_demo.py'}
    assert expected <= names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds_model(path):
    from acmix_mm.runner_utils import init_scope
    cfg = Config.fromfile(path)
    init_scope(cfg)
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_acmix_config_differs_from_baseline_only_in_backbone():
    acmix = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_acmix_t_1x.py'))
    base = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_t_1x.py'))
    assert acmix.model.backbone.type == 'PVTACmix'
    assert acmix.custom_imports.imports == ['acmix_mm']
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader'):
        assert acmix[key] == base[key], key
    assert acmix.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    assert acmix.train_cfg.max_epochs == 12
    assert acmix.param_scheduler[1].milestones == [8, 11]
    assert acmix.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    assert acmix.auto_scale_lr.base_batch_size == 16
    assert acmix.train_dataloader.dataset.data_root == 'data/coco/'


def test_paper_pvt_acmix_configs_start_as_the_pretrained_pvt():
    """They load official PVT weights with (alpha, beta) = (1, 0); the demos and the
    ImageNet pretraining train from scratch with the official (0.5, 0.5)."""
    from acmix_mm.backbones import PVTACmix
    default_rates = inspect.signature(PVTACmix).parameters['rate_init'].default
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        if cfg.model.backbone.type != 'PVTACmix':
            continue
        if '/demo/' in path or '/pretrain/' in path:
            assert cfg.model.backbone.get('init_cfg') is None
            rates = cfg.model.backbone.get('rate_init', default_rates)
            assert tuple(rates) == (0.5, 0.5), path
        else:
            assert tuple(cfg.model.backbone.rate_init) == (1.0, 0.0), path
            assert cfg.model.backbone.init_cfg.checkpoint.endswith(
                f'pvt_{cfg.model.backbone.arch}.pth'), path


def test_3x_recipe_is_multi_scale_36_epochs():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_acmix_s_3x.py'))
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.param_scheduler[1].milestones == [27, 33]
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'RandomResize' and resize.scale == [(1333, 640), (1333, 800)]
    assert cfg.model.backbone.arch == 'small'


def test_table5_rows_have_3x_configs():
    """Table 5 (PVT-S 42.2 / ACmix-S 42.0, PVT-L 43.4 / ACmix-L 45.3) is PVT v1's 3x
    multi-scale schedule: the 3x configs are the 1x models with the 3x recipe."""
    for size, arch in (('s', 'small'), ('l', 'large')):
        acmix, base = _differs_from_baseline_only_in_backbone(
            f'retinanet_pvt_acmix_{size}_3x.py', f'retinanet_pvt_{size}_3x.py')
        assert acmix.model.backbone.arch == arch
        assert acmix.train_cfg.max_epochs == 36
        for name, one_x in ((f'retinanet_pvt_{size}_3x.py', f'retinanet_pvt_{size}_1x.py'),
                            (f'retinanet_pvt_acmix_{size}_3x.py',
                             f'retinanet_pvt_acmix_{size}_1x.py')):
            three = Config.fromfile(osp.join(ROOT, 'configs', name))
            one = Config.fromfile(osp.join(ROOT, 'configs', one_x))
            assert three.model == one.model, name
            assert three.optim_wrapper.type == 'OptimWrapper', name  # float32


def test_semantic_fpn_recipe():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'sem_fpn_pvt_acmix_s_160k.py'))
    assert cfg.default_scope == 'mmseg'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    assert cfg.param_scheduler[0].type == 'PolyLR' and cfg.param_scheduler[0].end == 160000
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.train_dataloader.dataset.pipeline[1].reduce_zero_label


def _differs_from_baseline_only_in_backbone(acmix_name, base_name):
    acmix = Config.fromfile(osp.join(ROOT, 'configs', acmix_name))
    base = Config.fromfile(osp.join(ROOT, 'configs', base_name))
    for key in set(acmix) | set(base):
        if key != 'model':
            assert acmix.get(key) == base.get(key), key
    for key in set(acmix.model) | set(base.model):
        if key != 'backbone':
            assert acmix.model.get(key) == base.model.get(key), key
    return acmix, base


def test_swin_3x_recipe():
    """Swin's Mask R-CNN 3x recipe; Swin-ACmix changes only the backbone."""
    cfg, base = _differs_from_baseline_only_in_backbone('mask_rcnn_swin_acmix_t_3x.py',
                                                        'mask_rcnn_swin_t_3x.py')
    assert cfg.default_scope == 'mmdet' and cfg.custom_imports.imports == ['acmix_mm']
    assert cfg.model.backbone.type == 'SwinACmix' and cfg.model.backbone.arch == 'tiny'
    assert base.model.backbone.type == 'SwinTransformer'
    assert cfg.model.backbone.drop_path_rate == base.model.backbone.drop_path_rate == 0.2
    assert cfg.model.neck.in_channels == [96, 192, 384, 768]
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == {
        'absolute_pos_embed', 'relative_position_bias_table', 'norm'}
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 1000 and warmup.start_factor == 1e-3
    assert steps.milestones == [27, 33]
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline[1].with_mask
    choice = pipeline[3]
    assert choice.type == 'RandomChoice' and len(choice.transforms) == 2
    assert choice.transforms[0][0].scales[0] == (480, 1333)
    assert choice.transforms[0][0].scales[-1] == (800, 1333)
    assert choice.transforms[1][1].type == 'RandomCrop'
    assert cfg.val_evaluator.metric == ['bbox', 'segm']
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16

    one, _ = _differs_from_baseline_only_in_backbone('mask_rcnn_swin_acmix_t_1x.py',
                                                     'mask_rcnn_swin_t_1x.py')
    assert one.model.backbone == cfg.model.backbone
    assert one.train_cfg.max_epochs == 12 and one.param_scheduler[1].milestones == [8, 11]
    assert one.train_dataloader.dataset.pipeline[2] == dict(
        type='Resize', scale=(1333, 800), keep_ratio=True)
    assert one.optim_wrapper == cfg.optim_wrapper


def _unscoped(tree):
    """A config tree without the ``_scope_`` keys that inheriting a library config
    (``mmdet::...``) adds: the same recipe whether or not it came from there."""
    if isinstance(tree, dict):
        return {k: _unscoped(v) for k, v in tree.items() if k != '_scope_'}
    if isinstance(tree, (list, tuple)):
        return [_unscoped(v) for v in tree]
    return tree


def test_cascade_swin_recipe():
    """Swin's Cascade Mask R-CNN: 4conv1fc GIoU box heads, the Mask R-CNN 3x recipe."""
    import mmdet.models  # noqa: F401 (registers the heads)
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    cfg, base = _differs_from_baseline_only_in_backbone(
        'cascade_mask_rcnn_swin_acmix_t_3x.py', 'cascade_mask_rcnn_swin_t_3x.py')
    assert cfg.model.type == 'CascadeRCNN' and cfg.model.backbone.type == 'SwinACmix'
    heads = cfg.model.roi_head.bbox_head
    assert len(heads) == 3
    for head in heads:
        # Shared4Conv1FCBBoxHead, as mmdet's ConvNeXt cascade config writes it
        with DefaultScope.overwrite_default_scope('mmdet'):
            built = MODELS.build(dict(head, norm_cfg=dict(type='BN')))
        assert (len(built.shared_convs), len(built.shared_fcs)) == (4, 1)
        assert not (built.cls_convs or built.cls_fcs or built.reg_convs or built.reg_fcs)
        assert head.norm_cfg.type == 'SyncBN'
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.reg_decoded_bbox and not head.reg_class_agnostic
    assert [h.bbox_coder.target_stds[0] for h in heads] == [0.1, 0.05, 0.033]
    mask = Config.fromfile(osp.join(ROOT, 'configs', 'mask_rcnn_swin_acmix_t_3x.py'))
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader',
                'val_evaluator'):
        assert _unscoped(cfg[key]) == _unscoped(mask[key]), key
    assert cfg.model.backbone == mask.model.backbone
    mask_base = Config.fromfile(osp.join(ROOT, 'configs', 'mask_rcnn_swin_t_3x.py'))
    assert base.model.backbone == mask_base.model.backbone
    one, mask_one = (Config.fromfile(osp.join(ROOT, 'configs', name))
                     for name in ('cascade_mask_rcnn_swin_acmix_t_1x.py',
                                  'mask_rcnn_swin_acmix_t_1x.py'))
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader'):
        assert _unscoped(one[key]) == _unscoped(mask_one[key]), key


def test_upernet_swin_recipe():
    for size, depth in (('t', 6), ('s', 18)):
        cfg, base = _differs_from_baseline_only_in_backbone(
            f'upernet_swin_acmix_{size}_160k.py', f'upernet_swin_{size}_160k.py')
        assert cfg.default_scope == 'mmseg'
        assert cfg.model.backbone.type == 'SwinACmix'
        assert base.model.backbone.depths[2] == depth
        assert cfg.model.backbone.drop_path_rate == 0.3
        assert base.model.backbone.drop_path_rate == 0.3
        assert cfg.optim_wrapper.optimizer == dict(
            type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
        assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == {
            'absolute_pos_embed', 'relative_position_bias_table', 'norm'}
        warmup, poly = cfg.param_scheduler
        assert warmup.type == 'LinearLR' and warmup.end == 1500
        assert poly.type == 'PolyLR' and (poly.begin, poly.end) == (1500, 160000)
        assert poly.power == 1.0 and poly.eta_min == 0.0
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.train_cfg.val_interval == cfg.default_hooks.checkpoint.interval == 16000
        assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
        assert cfg.model.decode_head.type == 'UPerHead'
        assert cfg.model.decode_head.in_channels == [96, 192, 384, 768]
        assert cfg.model.decode_head.channels == 512
        assert cfg.model.auxiliary_head.in_channels == 384
        assert cfg.model.decode_head.num_classes == 150
        assert cfg.model.auxiliary_head.num_classes == 150


def test_retinanet_r50_recipe():
    cfg, base = _differs_from_baseline_only_in_backbone('retinanet_r50_acmix_1x.py',
                                                        'retinanet_r50_1x.py')
    assert base.model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    assert cfg.model.backbone.type == 'ResNetACmix' and cfg.model.backbone.depth == 50
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert cfg.train_cfg.max_epochs == 12
    three = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_r50_acmix_3x.py'))
    assert three.optim_wrapper == cfg.optim_wrapper
    assert three.train_cfg.max_epochs == 36
    assert three.param_scheduler[1].milestones == [27, 33]
    assert three.train_dataloader.dataset.pipeline[2].scale == [(1333, 640), (1333, 800)]


def test_retinanet_san19_recipe():
    cfg, base = _differs_from_baseline_only_in_backbone('retinanet_san19_acmix_1x.py',
                                                        'retinanet_san19_1x.py')
    assert (base.model.backbone.type, cfg.model.backbone.type) == ('SAN', 'SANACmix')
    assert base.model.backbone.depth == cfg.model.backbone.depth == 19
    # Both start from the official SAN-19 weights; SAN-ACmix as exactly that SAN.
    assert cfg.model.backbone.init_cfg == base.model.backbone.init_cfg
    assert cfg.model.backbone.rate_init == (1.0, 0.0)
    r50 = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_r50_1x.py'))
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader'):
        assert cfg[key] == r50[key], key
    assert cfg.model.neck == r50.model.neck


# Each AttNet config and the ACmix config it sits beside.
ATTNET_BESIDE_ACMIX = {
    'retinanet_attnet_t1_1x.py': 'retinanet_pvt_acmix_t_1x.py',
    'retinanet_attnet_t1_3x.py': 'retinanet_pvt_acmix_t_3x.py',
    'sem_fpn_attnet_t1_40k.py': 'sem_fpn_pvt_acmix_t_40k.py',
    'mask_rcnn_attnet_t2_3x.py': 'mask_rcnn_swin_acmix_t_3x.py',
    'upernet_attnet_t2_160k.py': 'upernet_swin_acmix_t_160k.py',
}


@pytest.mark.parametrize('attnet_name', list(ATTNET_BESIDE_ACMIX))
def test_attnet_configs_differ_from_the_acmix_ones_only_in_the_backbone(attnet_name):
    """Same recipe (data, schedule, optimizer, heads); the backbone, the input channels
    of neck / heads, and no weight decay on AttNet's layer scales and inhibitions."""
    from acmix_mm import backbones
    from acmix_mm.backbones import AttNet
    attnet = Config.fromfile(osp.join(ROOT, 'configs', attnet_name))
    acmix = Config.fromfile(osp.join(ROOT, 'configs', ATTNET_BESIDE_ACMIX[attnet_name]))
    backbone = attnet.model.backbone
    arch = 't1' if '_t1_' in attnet_name else 't2'
    assert backbone.type == 'AttNet' and backbone.arch == arch
    assert backbone.init_cfg.checkpoint == f'checkpoints/AttNet_{arch.upper()}.pth'
    acmix_backbone = getattr(backbones, acmix.model.backbone.type)
    default_rate = inspect.signature(acmix_backbone).parameters['drop_path_rate'].default
    assert backbone.drop_path_rate == acmix.model.backbone.get('drop_path_rate',
                                                                default_rate)
    assert backbone.norm_eval
    channels = AttNet(arch).num_features
    if 'neck' in attnet.model:
        assert attnet.model.neck.in_channels == channels
    else:
        assert attnet.model.decode_head.in_channels == channels
        assert attnet.model.auxiliary_head.in_channels == channels[2]
    for key in ('train_cfg', 'param_scheduler', 'train_dataloader', 'val_dataloader',
                'val_evaluator', 'default_scope', 'custom_imports', 'auto_scale_lr'):
        assert attnet.get(key) == acmix.get(key), key
    assert attnet.optim_wrapper.optimizer == acmix.optim_wrapper.optimizer
    for key in set(attnet.model) | set(acmix.model):
        if key not in ('backbone', 'neck', 'decode_head', 'auxiliary_head'):
            assert attnet.model.get(key) == acmix.model.get(key), key
    for key in ('neck', 'decode_head', 'auxiliary_head'):
        if key in acmix.model:
            ours, theirs = dict(attnet.model[key]), dict(acmix.model[key])
            ours.pop('in_channels'), theirs.pop('in_channels')
            assert ours == theirs, key
    custom_keys = attnet.optim_wrapper.get('paramwise_cfg', {}).get('custom_keys', {})
    if 'paramwise_cfg' in acmix.optim_wrapper:  # Swin's recipe: weight decay 0.05
        assert custom_keys['layer_scale'] == custom_keys['inhibition_logit'] == dict(
            decay_mult=0.)


def test_attnet_demo_differs_from_the_pvt_acmix_demo_only_in_the_backbone():
    """Side by side on the bundled data: same data, schedule, optimizer and seed."""
    from acmix_mm.backbones import AttNet
    attnet = Config.fromfile(osp.join(ROOT, 'configs', 'demo', 'retinanet_attnet_t1_demo.py'))
    acmix = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                     'retinanet_pvt_acmix_t_demo.py'))
    for key in set(attnet) | set(acmix):
        if key != 'model':
            assert attnet.get(key) == acmix.get(key), key
    for key in set(attnet.model) | set(acmix.model):
        if key not in ('backbone', 'neck'):
            assert attnet.model.get(key) == acmix.model.get(key), key
    ours, theirs = dict(attnet.model.neck), dict(acmix.model.neck)
    assert ours.pop('in_channels') == AttNet('t1').num_features
    theirs.pop('in_channels')
    assert ours == theirs
    backbone = attnet.model.backbone
    assert (backbone.type, backbone.arch, backbone.init_cfg) == ('AttNet', 't1', None)
    assert not backbone.get('norm_eval', False)  # from scratch: its BatchNorms train


# Each baseline that inherits a library config: that config and the leaves it overrides
# (with their subtrees), beside what every baseline adds (OUR_RUNTIME).
LIBRARY_BASELINES = {
    **{f'retinanet_pvt_{size}_1x.py': (f'mmdet::pvt/retinanet_pvt-{size}_fpn_1x_coco.py', ())
       for size in 'tsm'},
    'retinanet_pvt_l_1x.py': ('mmdet::pvt/retinanet_pvt-l_fpn_1x_coco.py',
                              ('optim_wrapper.type', )),
    'retinanet_r50_1x.py': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', ()),
    'mask_rcnn_swin_t_3x.py': ('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', ()),
    'mask_rcnn_swin_t_1x.py': ('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', ()),
    'cascade_mask_rcnn_swin_t_3x.py': (
        'mmdet::convnext/'
        'cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',
        ('model.backbone', 'optim_wrapper', 'checkpoint_file')),
    **{f'upernet_swin_{size}_160k.py': (
        f'mmseg::swin/swin-{name}-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
        ('auto_scale_lr', )) for size, name in (('t', 'tiny'), ('s', 'small'))},
}
OUR_RUNTIME = ('custom_imports', 'runner_type', 'default_hooks.checkpoint.max_keep_ckpts')


def _leaves(tree, prefix=''):
    """``{dotted path: value}`` of every leaf of a config tree (lists by index)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    leaves = {}
    for key, value in items:
        leaves.update(_leaves(value, f'{prefix}.{key}' if prefix else str(key)))
    return leaves or {prefix: tree}


@pytest.mark.parametrize('name', list(LIBRARY_BASELINES))
def test_baseline_is_the_library_config(name, tmp_path):
    """Leaf for leaf the library's own config, apart from the overrides it states."""
    library, overrides = LIBRARY_BASELINES[name]
    (tmp_path / 'library.py').write_text(f"_base_ = '{library}'\n")
    theirs = _leaves(Config.fromfile(str(tmp_path / 'library.py'),
                                     import_custom_modules=False).to_dict())
    ours = _leaves(Config.fromfile(osp.join(ROOT, 'configs', name)).to_dict())
    allowed = OUR_RUNTIME + overrides
    differ = {key for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key)}
    unexplained = {key for key in differ
                   if not any(key == a or key.startswith(a + '.') for a in allowed)}
    assert not unexplained, sorted(unexplained)
    for override in overrides:  # each stated override is one
        assert any(key == override or key.startswith(override + '.') for key in differ)


# Top-level keys that the runners and tools read, or that the libraries' own configs
# define as shared pieces (mmseg: norm_cfg, optimizer, data_preprocessor).
RUNTIME_KEYS = {
    'model', 'data_preprocessor', 'train_dataloader', 'val_dataloader', 'test_dataloader',
    'val_evaluator', 'test_evaluator', 'optim_wrapper', 'param_scheduler', 'train_cfg',
    'val_cfg', 'test_cfg', 'default_scope', 'default_hooks', 'custom_hooks', 'env_cfg',
    'vis_backends', 'visualizer', 'log_processor', 'log_level', 'load_from', 'resume',
    'custom_imports', 'auto_scale_lr', 'randomness', 'runner_type', 'dataset_type',
    'data_root', 'backend_args', 'metainfo', 'train_pipeline', 'test_pipeline',
    'tta_pipeline', 'tta_model'
}
LIBRARY_PIECES = {'norm_cfg', 'backbone_norm_cfg', 'optimizer'}


def _is_plain(value):
    """A scalar or a (nested) sequence of scalars: a size, a scale list, a path."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return not isinstance(value, dict)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_dumped_config_has_no_stray_fragments(path):
    """No top-level backbone or other config fragment beside the runtime's keys: a
    backbone base (configs/_base_/backbones) is popped where it is swapped in."""
    cfg = Config.fromfile(path).to_dict()
    stray = sorted(key for key, value in cfg.items()
                   if key not in RUNTIME_KEYS | LIBRARY_PIECES and not _is_plain(value))
    assert not stray, stray


BACKBONE_BASES = sorted(glob.glob(osp.join(ROOT, 'configs', '_base_', 'backbones', '*.py')))


@pytest.mark.parametrize('path', BACKBONE_BASES, ids=osp.basename)
def test_backbone_base_is_one_backbone_that_configs_swap_in(path):
    """Each backbone base defines the backbone alone, and the configs that list it build
    that backbone (its every setting, but for what a config overrides)."""
    backbone = Config.fromfile(path).to_dict()
    assert list(backbone) == ['backbone']
    backbone = backbone['backbone']
    name = '_base_/backbones/' + osp.basename(path)
    users = [c for c in CONFIGS if name in open(c).read()]
    assert users, f'no config lists {name}'
    for user in users:
        built = Config.fromfile(user).model.backbone.to_dict()
        # a config may override a setting (UperNet's drop path), not the model or weights
        assert _contains(built, {k: v for k, v in backbone.items()
                                 if k in ('type', 'arch', 'init_cfg', 'num_layers')}), user


def _contains(outer, inner):
    """Every leaf of ``inner`` is in ``outer`` with the same value."""
    return all(_contains(outer.get(k, {}), v) if isinstance(v, dict) else
               outer.get(k) == v for k, v in inner.items())
