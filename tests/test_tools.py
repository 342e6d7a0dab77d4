"""train.py and test.py end to end on the bundled data, and their error messages."""
import json
import os
import os.path as osp
import re
import subprocess

import pytest

from conftest import (
    ROOT,
    assert_group_freed_before_exit,
    distributed_env,
    run_in_process,
    run_tool,
    scratch_dir,
)

DEMO = 'configs/demo/retinanet_pvt_acmix_t_demo.py'


def demo_data_options(data_root):
    coco = osp.join(data_root, 'coco') + '/'
    ann = coco + 'annotations/instances_val2017.json'
    return [
        f'train_dataloader.dataset.data_root={coco}',
        f'val_dataloader.dataset.data_root={coco}',
        f'test_dataloader.dataset.data_root={coco}', f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}',
        # after one iteration every score is near the focal-loss prior (0.01): keep
        # them so that COCO evaluation has detections to score
        'model.test_cfg.score_thr=0.0'
    ]


@pytest.fixture(scope='module')
def trained(tiny_demo_data, tmp_path_factory):
    """One training iteration (2 images, batch 2) and its end-of-epoch evaluation."""
    with scratch_dir(tmp_path_factory, 'work') as work_dir:
        work_dir = str(work_dir)
        proc = run_tool('tools/train.py', DEMO, '--work-dir', work_dir, '--cfg-options',
                        *demo_data_options(tiny_demo_data), 'train_dataloader.batch_size=2',
                        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                        'default_hooks.checkpoint.interval=1')
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield work_dir, proc.stdout + proc.stderr


def test_train_runs_one_iteration_and_evaluates(trained):
    work_dir, log = trained
    assert 'Epoch(train) [1][1/1]' in log
    assert 'coco/bbox_mAP' in log
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert not [f for f in os.listdir(work_dir) if f.endswith('.partial')]


def test_resume_continues_from_the_last_checkpoint(trained, tiny_demo_data):
    work_dir, _ = trained
    proc = run_tool('tools/train.py', DEMO, '--work-dir', work_dir, '--resume',
                    '--cfg-options', *demo_data_options(tiny_demo_data),
                    'train_dataloader.batch_size=2', 'train_cfg.max_epochs=2',
                    'train_cfg.val_interval=10')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'resumed epoch: 1, iter: 1' in log
    assert 'Epoch(train) [2][1/1]' in log and 'Epoch(train) [1]' not in log


def test_test_reports_coco_map_and_paints_results(trained, tiny_demo_data, tmp_path):
    work_dir, _ = trained
    out = str(tmp_path / 'results.pkl')
    show_dir = str(tmp_path / 'painted')
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_tool('tools/test.py', DEMO, checkpoint, '--work-dir',
                    str(tmp_path), '--out', out, '--show-dir', show_dir, '--cfg-options',
                    *demo_data_options(tiny_demo_data))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'coco/bbox_mAP:' in proc.stdout + proc.stderr
    assert osp.isfile(out)
    metrics = [json.load(open(p)) for p in
               __import__('glob').glob(str(tmp_path / '*' / '*.json'))]
    assert any('coco/bbox_mAP' in m for m in metrics)


@pytest.mark.parametrize('args,message', [
    (['configs/nope.py'], 'Config file not found: configs/nope.py'),
    ([DEMO, '--cfg-options', 'train_dataloader.dataset.data_root=/no/such/dir/'],
     '/no/such/dir/ does not exist'),
    ([DEMO, '--cfg-options', 'trian_cfg.max_epochs=1'], "'trian_cfg.max_epochs'"),
])
def test_train_errors_are_clear(args, message):
    status, err = run_in_process('train.py', *args)
    assert status == 1 and message in err, err


@pytest.mark.parametrize('text,message', [
    ("model = dict(backbone=dict(\n", "SyntaxError: '(' was never closed"),
    ("_base_ = './no_such_base.py'\n", 'FileNotFoundError'),
    (f"_base_ = '{osp.join(ROOT, DEMO)}'\n"
     "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='x.pth')))\n",
     'You may set `_delete_=True`'),
])
def test_broken_config_files_are_clear(tmp_path, text, message):
    config = tmp_path / 'broken.py'
    config.write_text(text)
    status, err = run_in_process('train.py', str(config))
    assert status == 1 and f'Cannot read config {config}' in err and message in err, err


@pytest.mark.parametrize('option,message', [
    ('model.backbone.arch=huge', "Unknown PVTACmix arch 'huge'; choose one of 'tiny', "
     "'small', 'medium', 'large'"),
    ('model.backbone.out_indices=[5]', 'out_indices (5,) must name stages 0..3'),
])
def test_bad_model_arguments_are_clear(tiny_demo_data, tmp_path, option, message):
    status, err = run_in_process('train.py', DEMO, '--work-dir', str(tmp_path),
                                 '--cfg-options', *demo_data_options(tiny_demo_data), option)
    assert status == 1 and message in err, err


def test_test_refuses_a_missing_checkpoint(tiny_demo_data, tmp_path):
    status, err = run_in_process('test.py', DEMO, str(tmp_path / 'none.pth'),
                                 '--cfg-options', *demo_data_options(tiny_demo_data))
    assert status == 1 and 'Checkpoint file not found' in err, err


def test_test_refuses_a_checkpoint_of_another_model(trained, tiny_demo_data, tmp_path):
    """mmengine would log the mismatch and evaluate random weights; we stop."""
    work_dir, _ = trained
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_tool('tools/test.py', DEMO, checkpoint, '--work-dir', str(tmp_path),
                    '--cfg-options', *demo_data_options(tiny_demo_data),
                    'model.bbox_head.num_classes=5')
    assert proc.returncode == 1
    assert 'does not fit the RetinaNet of this config' in proc.stderr
    assert 'shape mismatches (2)' in proc.stderr
    assert 'bbox_head.retina_cls.weight: checkpoint (27, 128, 3, 3) vs model (45, 128, 3, 3)' \
        in proc.stderr
    assert 'Traceback' not in proc.stderr and 'coco/bbox_mAP' not in proc.stdout


def run_dist_test(checkpoint, tiny_demo_data, work_dir, *options):
    return subprocess.run(
        ['bash', 'tools/dist_test.sh', DEMO, checkpoint, '2', '--work-dir', work_dir,
         '--cfg-options', *demo_data_options(tiny_demo_data), *options],
        cwd=ROOT, env=distributed_env(work_dir), capture_output=True, text=True, timeout=900)


def test_dist_test_evaluates_over_two_processes(trained, tiny_demo_data, tmp_path):
    work_dir, _ = trained
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_dist_test(checkpoint, tiny_demo_data, str(tmp_path))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log and 'GPU number: 2' in log
    assert re.search(r'Epoch\(test\) \[1/1\] +coco/bbox_mAP: [0-9.]+', log)
    assert_group_freed_before_exit(proc.stderr)


def test_a_failed_distributed_run_ends_without_a_launcher_traceback(
        trained, tiny_demo_data, tmp_path):
    """Each worker prints its error; torchrun's own traceback is left out."""
    work_dir, _ = trained
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_dist_test(checkpoint, tiny_demo_data, str(tmp_path),
                         'model.bbox_head.num_classes=5')
    assert proc.returncode == 1
    assert 'error: Checkpoint' in proc.stderr and 'shape mismatches (2)' in proc.stderr
    assert 'tools/test.py failed in 2 of the processes' in proc.stderr
    assert 'Traceback' not in proc.stderr


SEG_DEMO = 'configs/demo/sem_fpn_pvt_acmix_t_demo.py'


def seg_data_options(data_root):
    ade = osp.join(data_root, 'ade', 'ADEChallengeData2016')
    return [f'{loader}.dataset.data_root={ade}' for loader in
            ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def test_segmentation_trains_one_iteration_and_reports_miou(tiny_demo_data, tmp_path):
    work_dir = str(tmp_path / 'seg')
    proc = run_tool('tools/train.py', SEG_DEMO, '--work-dir', work_dir, '--cfg-options',
                    *seg_data_options(tiny_demo_data), 'train_dataloader.batch_size=2',
                    'train_cfg.max_iters=1', 'train_cfg.val_interval=1',
                    'default_hooks.checkpoint.interval=1')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Iter(train) [1/1]' in log and 'mIoU:' in log
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_tool('tools/test.py', SEG_DEMO, checkpoint, '--work-dir', work_dir,
                    '--show-dir', str(tmp_path / 'painted'), '--cfg-options',
                    *seg_data_options(tiny_demo_data))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'mIoU:' in log
    assert os.listdir(tmp_path / 'painted')


MASK_DEMO = 'configs/demo/mask_rcnn_swin_acmix_t_demo.py'


def test_mask_rcnn_swin_acmix_trains_and_reports_bbox_and_segm_map(tiny_demo_data,
                                                                   tmp_path):
    work_dir = str(tmp_path / 'mask')
    options = demo_data_options(tiny_demo_data)[:-1] + ['model.test_cfg.rcnn.score_thr=0.0']
    proc = run_tool('tools/train.py', MASK_DEMO, '--work-dir', work_dir, '--cfg-options',
                    *options, 'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
                    'default_hooks.checkpoint.interval=1')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Epoch(train) [1][1/1]' in log
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_tool('tools/test.py', MASK_DEMO, checkpoint, '--work-dir', work_dir,
                    '--cfg-options', *options)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(r'coco/bbox_mAP: [0-9.]+', log)
    assert re.search(r'coco/segm_mAP: [0-9.]+', log)


def test_test_deploy_fuses_acmix_and_evaluates(trained, tiny_demo_data, tmp_path):
    work_dir, _ = trained
    # The latest checkpoint: the resume test may have replaced epoch_1.pth.
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    proc = run_tool('tools/test.py', DEMO, checkpoint, '--work-dir', str(tmp_path),
                    '--deploy', '--cfg-options', *demo_data_options(tiny_demo_data))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Fused the convolution path of 4 ACmix layers' in log  # PVT-T, heads 1 and 2
    assert re.search(r'coco/bbox_mAP: [0-9.]+', log)


def test_demo_data_has_an_imagenet_layout(tiny_demo_data):
    """imagenet/{train,val}/<class>/*.jpg with meta/{train,val}.txt lines
    '<class>/<name>.jpg <label>', every listed file present and a readable image."""
    import cv2
    root = osp.join(tiny_demo_data, 'imagenet')
    classes = ('circle', 'square', 'triangle')
    for split in ('train', 'val'):
        lines = open(osp.join(root, 'meta', f'{split}.txt')).read().splitlines()
        assert len(lines) == 2
        for line in lines:
            name, label = line.split()
            assert name.split('/')[0] == classes[int(label)]
            image = cv2.imread(osp.join(root, split, name))
            assert image is not None and image.shape == (128, 128, 3)
