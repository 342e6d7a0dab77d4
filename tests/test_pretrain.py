"""ImageNet pretraining through mmpretrain (configs/pretrain): the paper's recipes, one
config per family trained and evaluated by the tools on ImageNet-layout data, and the
checkpoint it writes feeding the downstream paper config of its family."""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT, run_in_process, run_tool, scratch_dir

PRETRAIN = osp.join(ROOT, 'configs', 'pretrain')
NAMES = ('resnet26_acmix', 'resnet38_acmix', 'resnet50_acmix', 'san10_acmix', 'san15_acmix',
         'san19_acmix', 'pvt_acmix_t', 'pvt_acmix_s', 'swin_acmix_t', 'swin_acmix_s',
         'resnet50', 'san19', 'pvt_t', 'swin_t')


def pretrain_config(name):
    return Config.fromfile(osp.join(PRETRAIN, f'{name}_in1k.py'))


def test_every_family_and_baseline_has_a_config():
    for name in NAMES:
        cfg = pretrain_config(name)
        assert cfg.default_scope == 'mmpretrain', name
        assert cfg.train_dataloader.dataset.data_root == 'data/imagenet', name
        assert (cfg.val_evaluator.type, cfg.val_evaluator.topk) == ('Accuracy', (1, 5))


@pytest.mark.parametrize('name', ['resnet50', 'resnet50_acmix', 'san19', 'san10_acmix'])
def test_resnet_and_san_follow_appendix_b(name):
    """SGD, batch 256 (8 x 32), lr 0.1, cosine over 100 epochs, label smoothing 0.1,
    random resized crop and flip."""
    cfg = pretrain_config(name)
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == 0.1
    assert cfg.train_dataloader.batch_size * 8 == 256 == cfg.auto_scale_lr.base_batch_size
    assert cfg.train_cfg.max_epochs == 100
    assert cfg.param_scheduler.type == 'CosineAnnealingLR'
    assert cfg.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                                       loss_weight=1.0)
    assert [t['type'] for t in cfg.train_pipeline] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']


@pytest.mark.parametrize('name, warmup, clip, drop_path', [
    ('swin_t', 20, 5.0, 0.2), ('swin_acmix_t', 20, 5.0, 0.2), ('swin_acmix_s', 20, 5.0, 0.3),
    ('pvt_t', 5, None, 0.1), ('pvt_acmix_t', 5, None, 0.1), ('pvt_acmix_s', 5, None, 0.1)])
def test_transformers_follow_their_papers(name, warmup, clip, drop_path):
    """AdamW at lr 1e-3 for batch 1024, 300 epochs, DeiT's augmentation; Swin warms up
    for 20 epochs and clips gradients at 5, PVT warms up for 5 and does not clip."""
    cfg = pretrain_config(name)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-3, 0.05)
    assert cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.train_dataloader.batch_size * (16 if 'swin' in name else 8) == 1024
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.param_scheduler[0].end == warmup == cfg.param_scheduler[1].begin
    assert (cfg.optim_wrapper.get('clip_grad') or {}).get('max_norm') == clip
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert [a['type'] for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
    assert cfg.model.head.loss.label_smooth_val == 0.1
    assert {'RandAugment', 'RandomErasing'} <= {t['type'] for t in cfg.train_pipeline}


@pytest.mark.parametrize('acmix, baseline', [
    ('resnet50_acmix', 'resnet50'), ('san19_acmix', 'san19'), ('pvt_acmix_t', 'pvt_t'),
    ('swin_acmix_t', 'swin_t')])
def test_acmix_config_differs_from_its_baseline_only_in_the_model(acmix, baseline):
    acmix_cfg, base_cfg = pretrain_config(acmix), pretrain_config(baseline)
    assert acmix_cfg.custom_imports.imports == ['acmix_mm']
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader',
                'val_dataloader', 'auto_scale_lr'):
        assert acmix_cfg[key] == base_cfg[key], key
    assert acmix_cfg.model.head == base_cfg.model.head


def build_backbone(name):
    from mmengine.registry import MODELS

    from acmix_mm.runner_utils import init_scope
    cfg = pretrain_config(name)
    init_scope(cfg)
    with MODELS.switch_scope_and_registry(None) as registry:
        backbone = registry.build(cfg.model.backbone)
    backbone.init_weights()
    return backbone


def norm_training(backbone):
    """Whether the norms use batch statistics in training, and how many of them start
    with zero weights (a residual block's last one, zero_init_residual)."""
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    backbone.train()
    return all(m.training for m in norms), sum(float(m.weight.abs().sum()) == 0 for m in norms)


@pytest.mark.parametrize('acmix, baseline', [
    ('resnet26_acmix', 'resnet50'), ('resnet50_acmix', 'resnet50'), ('san19_acmix', 'san19')])
def test_acmix_norms_train_as_their_baselines(acmix, baseline):
    """Issue 26: ResNet-ACmix pretrained with mmdet's norm_eval=True (its norms frozen at
    their initial statistics) and diverged where ResNet-50 did not."""
    ours, theirs = norm_training(build_backbone(acmix)), norm_training(build_backbone(baseline))
    blocks = {'resnet26_acmix': 8, 'resnet50_acmix': 16, 'san19_acmix': 0}[acmix]
    assert ours == (theirs[0], blocks) and ours[0]


def test_resnet50_acmix_recipe_stays_finite_at_a_small_batch():
    """The issue's case: lr 0.1 at batch 4 went NaN in 4 iterations (mmpretrain's
    ResNet-50 stayed finite). The config's classifier, its optimizer, eight steps."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS
    from mmpretrain.structures import DataSample

    from acmix_mm.runner_utils import init_scope
    cfg = pretrain_config('resnet50_acmix')
    init_scope(cfg)
    torch.manual_seed(0)
    with MODELS.switch_scope_and_registry(None) as registry:
        model = registry.build(cfg.model)
    model.init_weights()
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    losses = []
    for _ in range(8):
        images = torch.randn(4, 3, 128, 128)
        samples = [DataSample().set_gt_label(int(i)) for i in torch.randint(0, 1000, (4, ))]
        loss = model(images, samples, mode='loss')['loss']
        optim.update_params(loss)
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and max(losses) < 100, losses


def without_scope(node):
    """A config tree without the ``_scope_`` keys mmengine adds to inherited parts."""
    if isinstance(node, dict):
        return {k: without_scope(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(without_scope(v) for v in node)
    return node


def test_swin_baseline_is_mmpretrains_own_config():
    from mmengine.hub import get_config
    ours = pretrain_config('swin_t').to_dict()
    theirs = get_config('mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py').to_dict()
    # what configs/_base_/acmix_runtime.py adds: our backbones and the atomic runner
    assert ours.pop('custom_imports')['imports'] == ['acmix_mm']
    assert ours.pop('runner_type') == 'AtomicCheckpointRunner'
    assert without_scope(ours) == without_scope(theirs)


def data_options(data_root):
    """Point a pretraining config at the tiny ImageNet-layout set (3 classes)."""
    root = osp.join(data_root, 'imagenet')
    options = [f'{loader}.dataset.data_root={root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += [f'{loader}.{key}={value}'
                for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
                for key, value in (('batch_size', 2), ('num_workers', 0))]
    return options + ['model.head.num_classes=3', 'data_preprocessor.num_classes=3',
                      'val_evaluator.topk=1', 'test_evaluator.topk=1']


# One config per family: the smallest ACmix model of each, with its real pipelines.
FAMILIES = {
    'resnet26_acmix': ('retinanet_r50_acmix_1x.py', ['model.backbone.depth=26']),
    'san10_acmix': ('retinanet_san19_acmix_1x.py', ['model.backbone.depth=10']),
    'pvt_acmix_t': ('retinanet_pvt_acmix_t_1x.py', []),
    'swin_acmix_t': ('mask_rcnn_swin_acmix_t_1x.py', []),
}


@pytest.fixture(scope='module', params=sorted(FAMILIES))
def pretrained(request, tiny_demo_data, tmp_path_factory):
    """One pretraining iteration (2 images) and the end-of-epoch evaluation."""
    name = request.param
    # One epoch: the transformer recipes' warm-up (epochs 0-5 or 0-20) then ends there.
    schedule = ['param_scheduler.0.end=1', 'param_scheduler.1.begin=0'] if isinstance(
        pretrain_config(name).param_scheduler, list) else []
    with scratch_dir(tmp_path_factory, name) as work_dir:
        proc = run_tool('tools/train.py', f'configs/pretrain/{name}_in1k.py', '--work-dir',
                        str(work_dir), '--cfg-options', *data_options(tiny_demo_data),
                        'train_cfg.max_epochs=1', *schedule)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-3000:]
        yield name, str(work_dir / 'epoch_1.pth'), log


def test_pretraining_trains_and_reports_top1(pretrained):
    name, checkpoint, log = pretrained
    assert 'Epoch(train) [1][1/1]' in log
    assert re.search(r'accuracy/top1: [0-9.]+', log)
    assert osp.isfile(checkpoint)


def test_pretrained_checkpoint_feeds_the_downstream_paper_config(pretrained):
    """Every backbone tensor of the downstream model comes from the checkpoint, apart
    from what the classifier has no counterpart for (Swin's norms of stages 0-2); the
    classifier and the classification-only final norm are left out."""
    from mmengine.registry import MODELS, DefaultScope

    from acmix_mm.runner_utils import init_scope, load_config
    name, checkpoint, _ = pretrained
    config, options = FAMILIES[name]
    options = dict(o.split('=') for o in options)  # as --cfg-options parses them:
    options = {k: int(v) if v.isdigit() else v for k, v in options.items()}
    cfg = load_config(osp.join(ROOT, 'configs', config), dict(
        options, **{'model.backbone.init_cfg.checkpoint': checkpoint}))
    init_scope(cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    weights = torch.load(checkpoint, map_location='cpu')['state_dict']
    own = backbone.state_dict()
    fresh = [k for k in own if f'backbone.{k}' not in weights]
    assert all(re.fullmatch(r'norm[012]\..*', k) for k in fresh), fresh
    for key, value in own.items():
        if key not in fresh:
            assert torch.equal(value, weights[f'backbone.{key}']), key
    left_out = {k for k in weights if k.startswith('backbone.')} - {
        f'backbone.{k}' for k in own}
    assert left_out <= {'backbone.norm.weight', 'backbone.norm.bias'}
    # Pretrained as ACmix: the rates are the checkpoint's, not the config's rate_init.
    rates = [k for k in own if k.endswith(('.alpha', '.beta'))]
    assert rates and all(torch.equal(own[k], weights[f'backbone.{k}']) for k in rates)


def test_test_tool_reports_top1_and_dumps_predictions(tiny_demo_data, tmp_path):
    work_dir = str(tmp_path / 'work')
    config = 'configs/demo/pvt_acmix_t_in1k_demo.py'
    root = osp.join(tiny_demo_data, 'imagenet')
    options = [f'{d}.dataset.data_root={root}'
               for d in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    proc = run_tool('tools/train.py', config, '--work-dir', work_dir, '--cfg-options',
                    *options, 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
                    'default_hooks.checkpoint.interval=1')
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    out = str(tmp_path / 'predictions.pkl')
    proc = run_tool('tools/test.py', config, checkpoint, '--work-dir', work_dir, '--out',
                    out, '--cfg-options', *options)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(r'accuracy/top1: [0-9.]+', log)
    import pickle
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 2
    image = osp.join(root, 'val', 'circle', 'val_000000.jpg')
    painted = str(tmp_path / 'painted.jpg')
    proc = run_tool('tools/image_demo.py', config, checkpoint, image, '--out-file', painted)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert re.search(r'predicted class: (circle|square|triangle) \(0\.\d+\)', proc.stdout)
    assert osp.isfile(painted)
    # The checkpoint feeds the detection demo through --cfg-options alone.
    det_work_dir = str(tmp_path / 'det')
    coco = osp.join(tiny_demo_data, 'coco') + '/'
    proc = run_tool(
        'tools/train.py', 'configs/demo/retinanet_pvt_acmix_t_demo.py', '--work-dir',
        det_work_dir, '--cfg-options', f'train_dataloader.dataset.data_root={coco}',
        f'val_dataloader.dataset.data_root={coco}',
        f'val_evaluator.ann_file={coco}annotations/instances_val2017.json',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=10', 'train_dataloader.batch_size=2',
        'model.backbone.init_cfg.type=Pretrained',
        f'model.backbone.init_cfg.checkpoint={checkpoint}')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # Every tensor of the backbone (none keeps its initialisation); the final norm is
    # left out, as the backbone of a detector has none.
    assert f'Loaded 180 tensors from {checkpoint} into PVTACmix\n' in log
    assert f'Not used from {checkpoint} (2 tensors)' in log


def test_missing_imagenet_names_the_layout(tmp_path):
    status, err = run_in_process('train.py', 'configs/pretrain/pvt_acmix_t_in1k.py',
                                 '--work-dir', str(tmp_path), '--cfg-options',
                                 f'train_dataloader.dataset.data_root={tmp_path}/imagenet')
    assert status == 1 and f'{tmp_path}/imagenet does not exist' in err, err
    assert 'meta/train.txt' in err and 'train/<class>/' in err


# Parameters with a 1000-class head and GFLOPs at 224x224, as tools/get_flops.py counts
# them, beside the official sizes: ResNet-ACmix 10.49 / 14.41 / 18.33 M (the official
# model code) and 2.3 / 2.9 / 3.6 G, SAN-ACmix 1.9 / 2.7 / 3.4 G (the official README,
# by a counter it does not name), Swin-ACmix-T 28.65 M and 4.6 G (paper Table 6), -S
# 50.35 M and 9.0 G. PVT-ACmix-T: the README's 13 M and 2.0 G are not compared, as its
# code was never released: our shared projection gives k and v at full resolution for
# the convolution path (+0.18 G over PVT-T's q and reduced k, v), the path itself adds
# 0.08 G; PVT-T itself counts 13.23 M and 1.94 G here (PVT paper: 13.2 M, 1.9 G).
SIZES = [
    # name, params, our GFLOPs, official GFLOPs
    ('resnet26_acmix', 10_487_352, 2.23, 2.3),
    ('resnet38_acmix', 14_410_192, 2.88, 2.9),
    ('resnet50_acmix', 18_333_032, 3.52, 3.6),
    ('san10_acmix', 11_994_612, 1.93, 1.9),
    ('san15_acmix', 16_414_134, 2.69, 2.7),
    ('san19_acmix', 20_829_278, 3.39, 3.4),
    ('swin_acmix_t', 28_649_908, 4.66, 4.6),
    ('swin_acmix_s', 50_345_080, 9.02, 9.0),
    ('pvt_acmix_t', 13_395_104, 2.20, None),
    ('pvt_t', 13_228_264, 1.94, 1.9),
]


@pytest.mark.parametrize('name, params, flops, official', SIZES)
def test_complexity_matches_the_official_sizes(name, params, flops, official):
    from acmix_mm.analysis import count_config
    counted_flops, counted_params, shape = count_config(pretrain_config(name))
    assert shape == (224, 224)
    assert counted_params == params
    assert round(float(counted_flops) / 1e9, 2) == flops
    if official is not None:
        assert abs(flops - official) / official < 0.05
