"""tools/export_onnx.py: the exported graph is checked and equals PyTorch's outputs
through ONNX Runtime on a real image (static, dynamic and fused forms)."""
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from acmix_mm.backbones import SwinACmix

from conftest import ROOT, run_in_process, run_tool, scratch_dir
from test_compile import BACKBONES
from test_swin_acmix import SMALL_ARCH

# Random heads score every box about alike, and near-ties swap places between any two
# runtimes; larger weights in the last layers spread the scores (0.7-0.95 for the
# Mask R-CNN demo), so that each box finds its twin below.
LAST_LAYERS = ('rpn_cls', 'rpn_reg', 'fc_cls', 'fc_reg', 'conv_logits', 'retina_cls')


def random_checkpoint(config, path, spread=1.0):
    """The config's whole model, initialised as for training (the last layers' weights
    times ``spread``), saved as a checkpoint."""
    from mmengine.registry import MODELS, DefaultScope

    from acmix_mm.runner_utils import init_scope
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_scope(cfg)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    for name in state:
        if name.endswith('.weight') and any(f'.{layer}.' in name for layer in LAST_LAYERS):
            state[name] = state[name] * spread
    torch.save({'state_dict': state, 'meta': {}}, path)
    return str(path)


DET_DEMO = 'configs/demo/retinanet_pvt_acmix_t_demo.py'
SEG_DEMO = 'configs/demo/sem_fpn_pvt_acmix_t_demo.py'
MASK_DEMO = 'configs/demo/mask_rcnn_swin_acmix_t_demo.py'


def data_options(config, data_root):
    if config in (DET_DEMO, MASK_DEMO):
        root = osp.join(data_root, 'coco') + '/'
        ann = root + 'annotations/instances_val2017.json'
        # every score kept, so that the comparison below sees every box
        options = [f'test_dataloader.dataset.data_root={root}',
                   f'test_evaluator.ann_file={ann}']
        if config != MASK_DEMO:
            return options + ['model.test_cfg.score_thr=0.0']
        # One image a batch as ONNX Runtime runs them: the RPN's 1000 best of 16k
        # random scores lie 1e-6 apart, closer than a batched run's rounding.
        return options + ['model.test_cfg.rcnn.score_thr=0.0', 'test_dataloader.batch_size=1']
    root = osp.join(data_root, 'ade', 'ADEChallengeData2016')
    return [f'test_dataloader.dataset.data_root={root}']


# Narrow backbones for quick exports, written as a config file on the demo config.
SMALL_SWIN = (f"model = dict(backbone=dict(arch={dict(SMALL_ARCH, _delete_=True)}),\n"
              "             neck=dict(in_channels=[32, 64, 128, 256]))")
# ResNet-ACmix exports at a fixed size: the demo images (320x320) all test at 256x256.
SMALL_RESNET_ACMIX = ("model = dict(backbone=dict(_delete_=True, type='ResNetACmix', depth=26, "
                      "base_channels=16, init_cfg=None),\n"
                      "             neck=dict(in_channels=[64, 128, 256, 512]))")

# Without layer scales (a fresh AttNet's start at 1e-6, which leaves its features nearly
# the same for every input, and neighbouring anchors' scores tied), at a fixed size, and
# with the paper's 256-channel neck and head: through the demo's 128 channels, scores
# still tie within float rounding and ONNX Runtime and PyTorch keep different boxes at NMS.
SMALL_ATTNET = ("model = dict(backbone=dict(_delete_=True, type='AttNet', arch=dict(\n"
                "    depths=[1, 1, 1, 1], embed_dims=[16, 32, 64, 128], ffn_ratios=[4] * 4,\n"
                "    ffn_norm=True, layer_scale=False), init_cfg=None),\n"
                "    neck=dict(in_channels=[16, 32, 64, 128], out_channels=256),\n"
                "    bbox_head=dict(in_channels=256, feat_channels=256))")

# SAN-ACmix-10 (the smallest) works at full resolution in its first stage: the demo
# images test at 128x128 (its export at 256x256 takes minutes).
SMALL_SAN_ACMIX = (
    "model = dict(backbone=dict(_delete_=True, type='SANACmix', depth=10, init_cfg=None),\n"
    "             neck=dict(in_channels=[256, 512, 1024, 2048]))\n"
    "test_dataloader = dict(dataset=dict(pipeline=[\n"
    "    dict(type='LoadImageFromFile'),\n"
    "    dict(type='Resize', scale=(128, 128), keep_ratio=True),\n"
    "    dict(type='LoadAnnotations', with_bbox=True),\n"
    "    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',\n"
    "                                          'img_shape', 'scale_factor'))]))")


# PVT-ACmix (RetinaNet, fused Semantic FPN) at free sizes; Swin-ACmix (Mask R-CNN),
# ResNet-ACmix, SAN-ACmix and AttNet (RetinaNet) at fixed ones (Swin-ACmix's free sizes
# are checked on the backbone alone, below: the whole Mask R-CNN took about two minutes).
# The last element: the last layers' spread (SAN-10's fresh features give RetinaNet
# class logits of std 7e-4, all scores 0.0100 without it).
@pytest.fixture(scope='module', params=[(DET_DEMO, ['--dynamic'], None, 1.0),
                                        (SEG_DEMO, ['--deploy', '--dynamic'], None, 1.0),
                                        (MASK_DEMO, ['--shape', '320', '320'], SMALL_SWIN, 3.0),
                                        (DET_DEMO, [], SMALL_RESNET_ACMIX, 1.0),
                                        (DET_DEMO, [], SMALL_ATTNET, 1.0),
                                        (DET_DEMO, ['--shape', '128', '128'],
                                         SMALL_SAN_ACMIX, 1000.0)],
                ids=['retinanet', 'sem_fpn-fused', 'mask_rcnn', 'retinanet-resnet_acmix',
                     'retinanet-attnet', 'retinanet-san_acmix'])
def exported(request, tiny_demo_data, tmp_path_factory):
    """A checkpoint of the config's model (as initialised for training), exported: the
    config, the file the tools read it from, the flags, the checkpoint, the ONNX file
    and the export's process."""
    config, flags, override, spread = request.param
    with scratch_dir(tmp_path_factory, 'onnx') as tmp_path:
        yield export(config, flags, override, spread, tmp_path, tiny_demo_data)


def export(config, flags, override, spread, tmp_path, tiny_demo_data):
    """The ``exported`` fixture's work, in ``tmp_path``."""
    path = config
    if override:  # a narrow backbone, as a config file
        path = str(tmp_path / 'small_backbone.py')
        with open(path, 'w') as f:
            f.write(f"_base_ = '{osp.join(ROOT, config)}'\n{override}\n")
    checkpoint = random_checkpoint(path, tmp_path / 'model.pth', spread)
    out = tmp_path / 'model.onnx'
    proc = run_tool('tools/export_onnx.py', path, checkpoint, '--out', str(out),
                    '--shape', '256', '256', *flags, '--cfg-options',
                    *data_options(config, tiny_demo_data))
    return config, path, flags, checkpoint, str(out), proc


def test_export_checks_parity_on_a_real_image(exported):
    config, _, flags, _, out, proc = exported
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    differences = [float(d) for d in re.findall(r'largest relative difference ([0-9.e+-]+)',
                                                log)]
    assert len(differences) == (2 if '--dynamic' in flags else 1), log[-2000:]
    assert all(d < 1e-4 for d in differences)
    assert 'a drawn image' not in log  # the test set's first image
    if '--deploy' in flags:
        assert re.search(r'fused the convolution path of \d+ ACmix layers', log)
    assert osp.isfile(out)


def metrics(log):
    """The metrics tools/test.py prints, by name."""
    line = [ln for ln in log.splitlines() if '(test)' in ln][-1]
    return {k: float(v) for k, v in re.findall(r'(\S+): (-?[0-9.]+)', line.split(']', 1)[1])
            if not k.endswith('time')}


def test_test_tool_evaluates_the_onnx_file_as_the_checkpoint(exported, tiny_demo_data,
                                                              tmp_path):
    """Through ONNX Runtime, with the config's pipeline, post-processing and evaluator:
    the same predictions and the same metrics as the checkpoint in PyTorch."""
    config, path, _, checkpoint, onnx_file, proc = exported
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = {}
    for name, model in (('torch', checkpoint), ('onnx', onnx_file)):
        out = str(tmp_path / (name if config == SEG_DEMO else f'{name}.pkl'))
        proc = run_tool('tools/test.py', path, model, '--work-dir', str(tmp_path),
                        '--out', out, '--cfg-options', *data_options(config, tiny_demo_data))
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-3000:]
        results[name] = (metrics(log), out)
    (torch_metrics, torch_out), (onnx_metrics, onnx_out) = results['torch'], results['onnx']
    assert torch_metrics.keys() == onnx_metrics.keys() and torch_metrics
    tolerance = 1.0 if config == SEG_DEMO else 0.01  # mIoU in percent; mAP
    for key, value in torch_metrics.items():
        assert abs(onnx_metrics[key] - value) <= tolerance, (key, value, onnx_metrics[key])
    if config != SEG_DEMO:
        import pickle
        with open(torch_out, 'rb') as f_torch, open(onnx_out, 'rb') as f_onnx:
            for ours, theirs in zip(pickle.load(f_torch), pickle.load(f_onnx)):
                assert_same_instances(ours['pred_instances'], theirs['pred_instances'])
    else:
        import cv2
        names = sorted(os.listdir(torch_out))
        assert names and names == sorted(os.listdir(onnx_out))
        for name in names:
            a = cv2.imread(osp.join(torch_out, name), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(osp.join(onnx_out, name), cv2.IMREAD_UNCHANGED)
            assert (a == b).mean() > 0.999


def assert_same_instances(a, b):
    """Equal detections (and masks), up to the order of near-equal scores."""
    assert len(a['scores']) == len(b['scores']) > 0
    torch.testing.assert_close(b['scores'], a['scores'], rtol=1e-3, atol=1e-4)
    # Near-equal scores may swap places: each box has its twin (same label, score and
    # corners) among the other's boxes.
    same = (b['labels'][:, None] == a['labels'][None]) & (
        (b['scores'][:, None] - a['scores'][None]).abs() < 1e-4)
    corners = (b['bboxes'][:, None] - a['bboxes'][None]).abs().amax(-1)
    corners = corners.masked_fill(~same, float('inf'))
    assert corners.amin(1).max() < 1e-2
    if 'masks' not in a:
        return
    twins = corners.argmin(1).tolist()
    masks_a, masks_b = a['masks'], b['masks']
    if not isinstance(masks_a, torch.Tensor):  # COCO run-length encodings (--out)
        from pycocotools import mask as mask_utils
        masks_a = torch.from_numpy(mask_utils.decode(list(masks_a))).permute(2, 0, 1)
        masks_b = torch.from_numpy(mask_utils.decode(list(masks_b))).permute(2, 0, 1)
    # each mask equals its twin's but for a pixel or so (empty masks alike)
    assert (masks_a[twins] != masks_b).float().mean() < 1e-3


# One exported file will do (the module-scoped export is reused).
@pytest.mark.parametrize('exported', [(DET_DEMO, ['--dynamic'], None, 1.0)], indirect=True,
                         ids=['retinanet'])
def test_test_tool_refuses_foreign_onnx_files(exported, tiny_demo_data, tmp_path):
    config, _, _, _, onnx_file, _ = exported
    other = DET_DEMO if config == SEG_DEMO else SEG_DEMO
    status, err = run_in_process('test.py', other, onnx_file, '--work-dir', str(tmp_path),
                                 '--cfg-options', *data_options(other, tiny_demo_data))
    assert status == 1 and f'holds another model than {other}' in err, err
    assert f'exported from {config}' in err
    not_onnx = tmp_path / 'broken.onnx'
    not_onnx.write_bytes(b'not a model')
    status, err = run_in_process('test.py', config, str(not_onnx), '--work-dir',
                                 str(tmp_path), '--cfg-options',
                                 *data_options(config, tiny_demo_data))
    assert status == 1 and f'Cannot read {not_onnx} as an ONNX model' in err, err


def test_unsupported_models_and_sizes_are_clear(tmp_path):
    checkpoint, out = str(tmp_path / 'x.pth'), str(tmp_path / 'x.onnx')
    status, err = run_in_process('export_onnx.py', 'configs/pretrain/pvt_t_in1k.py',
                                 checkpoint, '--out', out)
    assert status == 1 and 'exports detectors (mmdet) and segmentors' in err, err
    # Swin's last stage shifts only maps larger than a window: free sizes from 225 up.
    status, err = run_in_process('export_onnx.py', 'configs/mask_rcnn_swin_acmix_t_3x.py',
                                 checkpoint, '--out', out, '--shape', '224', '224',
                                 '--dynamic')
    assert status == 1 and 'SwinACmix exports free sizes from 225 pixels a side up' in err
    # graphs that depend on the input size: each size its own file
    for config, part in (
            ('configs/retinanet_r50_acmix_1x.py', 'ResNetACmix exports at fixed sizes only'),
            ('configs/upernet_swin_acmix_t_160k.py',
             'decode_head.psp_modules.1.0 pools to a fixed 2 grid')):
        status, err = run_in_process('export_onnx.py', config, checkpoint, '--out', out,
                                     '--shape', '256', '256', '--dynamic')
        assert status == 1 and part in err and '--shape H W instead of --dynamic' in err, err
    status, err = run_in_process('export_onnx.py', 'configs/retinanet_pvt_acmix_t_1x.py',
                                 checkpoint, '--out', out, '--shape', '300', '300')
    assert status == 1 and 'multiples of 32' in err, err


def shrink_cascade(model_cfg, channels=64):
    """The paper's Cascade Mask R-CNN with a small Swin-ACmix and narrow heads (the
    same parts and stages, a quick export)."""
    model_cfg.backbone.update(init_cfg=None, arch=SMALL_ARCH)
    model_cfg.neck.update(in_channels=[32, 64, 128, 256], out_channels=channels)
    model_cfg.rpn_head.update(in_channels=channels, feat_channels=channels)
    roi_head = model_cfg.roi_head
    roi_head.bbox_roi_extractor.out_channels = channels
    roi_head.mask_roi_extractor.out_channels = channels
    for head in roi_head.bbox_head:
        head.update(in_channels=channels, fc_out_channels=2 * channels)
    roi_head.mask_head.update(in_channels=channels, conv_out_channels=channels)


def test_cascade_mask_rcnn_runs_in_parts_as_in_pytorch(tmp_path):
    """Each stage's box head and mask head run in ONNX Runtime between mmdet's own
    proposals, RoI Align and refinements: the same boxes, scores and masks."""
    import copy

    import onnxruntime as ort
    from mmdet.structures import DetDataSample
    from mmengine.registry import MODELS, DefaultScope

    from acmix_mm.deploy import OnnxRuntimeModel, export_network
    from acmix_mm.runner_utils import init_scope

    from conftest import load_script
    cfg = Config.fromfile(osp.join(ROOT, 'configs/cascade_mask_rcnn_swin_acmix_t_1x.py'))
    init_scope(cfg)
    shrink_cascade(cfg.model)
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    for name, param in model.named_parameters():
        if name.endswith('.weight') and any(f'.{layer}.' in name for layer in LAST_LAYERS):
            param.data *= 3.0
    model.eval()
    network = export_network(model)
    assert len(network.bbox_heads) == len(network.mask_heads) == 3
    image = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0)) - 0.5
    path = str(tmp_path / 'cascade.onnx')
    load_script('tools/export_onnx.py').export(network, network.example_inputs(image), path,
                                               None, {})
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [out.name for out in session.get_outputs()]
    assert [n for n in names if not n.startswith(('feat', 'rpn_'))] == [
        f'{kind}{stage}' for stage in range(3) for kind in ('cls_score', 'bbox_pred')
    ] + [f'mask_pred{stage}' for stage in range(3)]

    sample = DetDataSample(metainfo=dict(img_shape=(256, 320), ori_shape=(256, 320),
                                         scale_factor=(1., 1.)))
    with torch.no_grad():
        expected = model.predict(image, [copy.deepcopy(sample)])[0].pred_instances
        in_parts = OnnxRuntimeModel(copy.deepcopy(model), session, path)
        got = in_parts.model.predict(image, [copy.deepcopy(sample)])[0].pred_instances
    # the model in parts has no weights of its own in use: zeroed, it gives the same
    for param in in_parts.model.parameters():
        param.data.zero_()
    with torch.no_grad():
        again = in_parts.model.predict(image, [copy.deepcopy(sample)])[0].pred_instances
    assert_same_instances(expected, got)
    assert_same_instances(expected, again)


class BackboneOutputs(torch.nn.Module):
    """A backbone's outputs as a tuple, with the names tools/export_onnx.py gives."""
    input_names = ['input']

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, inputs):
        return tuple(self.backbone(inputs))

    def output_names(self, outputs):
        return [f'output{i}' for i in range(len(outputs))]


# The whole detectors above cover PVT-ACmix (plain and fused), Swin-ACmix, ResNet-ACmix,
# SAN-ACmix and AttNet with narrow or small backbones; here the backbones whose graphs
# depend most on their layout (ResNet-ACmix-26's block gathers at full width, Swin-ACmix's
# windows, plain and fused), and Swin-ACmix at free sizes, checked at other sizes: two
# stages (a free-size export of four takes a minute), which shift from 57 pixels a side
# up as four do from 225 (its ``min_free_side``).
def two_stage_swin_acmix():
    return SwinACmix(dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]), out_indices=(0, 1))


BACKBONES_TO_EXPORT = dict(BACKBONES, FreeSwinACmix=two_stage_swin_acmix)


@pytest.mark.parametrize('name,fused,sizes', [
    ('ResNetACmix', False, [(128, 160)]),
    ('FreeSwinACmix', False, [(64, 96), (96, 64), (160, 224)]),
    ('SwinACmix', True, [(128, 160)])],
    ids=['ResNetACmix', 'SwinACmix-free', 'SwinACmix-fused'])
def test_backbones_export_with_parity(name, fused, sizes, tmp_path):
    """The graph in ONNX Runtime equals PyTorch at the exported size (and at the other
    sizes where they are free), and eager calls after the export still give plain tensors
    (no tracer tensors cached)."""
    import onnxruntime as ort

    from acmix_mm.layers import fuse_acmix

    from conftest import load_script
    torch.manual_seed(0)
    backbone = BACKBONES_TO_EXPORT[name]()
    backbone.init_weights()
    backbone.eval()
    if fused:
        assert fuse_acmix(backbone, only_cheaper=False) > 0
    network = BackboneOutputs(backbone)
    images = [torch.randn(1, 3, *size) for size in sizes]
    path = str(tmp_path / 'backbone.onnx')
    min_side = backbone.min_free_side if len(sizes) > 1 else None
    load_script('tools/export_onnx.py').export(network, (images[0], ), path, min_side, {})
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for image in images:
        got = session.run(None, {'input': image.numpy()})
        with torch.no_grad():
            expected = network(image)
        assert len(got) == len(expected) == len(backbone.out_indices)
        for ours, theirs in zip(got, expected):
            assert type(theirs) is torch.Tensor
            theirs = theirs.numpy()
            assert ours.shape == theirs.shape
            assert abs(ours - theirs).max() <= 1e-4 * abs(theirs).max()


@pytest.mark.parametrize('stride,fused', [(1, False), (2, False), (1, True), (2, True)])
def test_acmix_export_form_equals_the_layer(stride, fused):
    """ACmix's export form (the projection made twice, each path's in its own layout)
    computes the layer, with the convolution path trained (beta applied) or fused for
    deployment (beta folded in), in float64."""
    from acmix_mm.layers import ACmix, fuse_acmix
    torch.manual_seed(0)
    layer = ACmix(16, 32, stride=stride).double().eval()
    with torch.no_grad():
        layer.alpha.fill_(0.7)
        layer.beta.fill_(1.3)
        for param in layer.parameters():
            param.add_(0.01 * torch.randn_like(param))  # no exact shift kernels
    if fused:
        fuse_acmix(layer, only_cheaper=False)
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer.exported_forward(x), layer(x), rtol=1e-12,
                                   atol=1e-12)


def test_acmix_export_transposes_no_projection():
    """In the exported ACmix layer no Transpose reorders the 3C-wide projection between
    the two paths' layouts (ONNX Runtime's transposes of it took about 40% of
    ResNet-ACmix-50's time there): only the tokens and the attention's blocks are
    transposed."""
    from acmix_mm.layers import ACmix
    torch.manual_seed(0)
    channels = 16
    program = torch.onnx.export(ACmix(channels, channels).eval(),
                                (torch.randn(1, channels, 12, 10), ), dynamo=True,
                                verbose=False)
    shapes = [list(node.inputs[0].shape) for node in program.model.graph
              if node.op_type == 'Transpose']
    assert shapes and all(3 * channels not in shape for shape in shapes), shapes


def test_export_leaves_out_only_the_pairwise_slice_rewrite():
    """onnxscript's SlicesSplit rule is quadratic in the graph's size (ResNet- and
    SAN-ACmix export k*k Slices a window) and never applies to overlapping shifts: the
    export runs every other rule, and the optimizer's rules are whole again after it."""
    from onnxscript import rewriter

    from acmix_mm.deploy import without_pairwise_slice_rewrite
    rules = rewriter._DEFAULT_REWRITE_RULES
    names = [rule.name for rule in rules]
    assert 'SlicesSplit' in names  # this onnxscript has the rule
    with without_pairwise_slice_rewrite():
        assert [rule.name for rule in rewriter._DEFAULT_REWRITE_RULES] == [
            name for name in names if name != 'SlicesSplit']
    assert rewriter._DEFAULT_REWRITE_RULES is rules
