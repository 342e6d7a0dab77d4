"""Nothing lost, nothing silent (issue 26): a diverging run stops, kills never lose the
last good checkpoint, resumed runs continue where they stopped, config mistakes and bad
data are named in one line before they do harm."""
import json
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from acmix_mm.checkpoint import CheckpointError, load_checkpoint_file, save_atomic
from acmix_mm.errors import DataError, UserError
from acmix_mm.runner_utils import check_meta_file, claim_work_dir
from acmix_mm.transforms import CheckedLoadImageFromFile

from conftest import ROOT, load_script, run_in_process, run_tool
from test_tools import DEMO, demo_data_options

SEG_DEMO = 'configs/demo/sem_fpn_pvt_acmix_t_demo.py'


def train_args(data_root, work_dir, *options):
    return [DEMO, '--work-dir', str(work_dir), '--cfg-options',
            *demo_data_options(data_root), 'default_hooks.logger.interval=1', *options]


def one_line_error(proc, message):
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert message in proc.stderr, proc.stderr[-3000:]


def model_checkpoint(config, path):
    """A checkpoint of the config's model, as its training would write (untrained)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from acmix_mm.runner_utils import init_scope
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_scope(cfg)
    with MODELS.switch_scope_and_registry(None) as registry:
        save_atomic({'state_dict': registry.build(cfg.model).state_dict()}, str(path))
    return str(path)


# 1. A non-finite loss stops the run; non-finite weights are refused on load.

def test_a_diverging_run_stops_at_the_first_non_finite_loss(tiny_demo_data, tmp_path):
    proc = run_tool('tools/train.py', *train_args(
        tiny_demo_data, tmp_path, 'train_dataloader.batch_size=1', 'train_cfg.max_epochs=3',
        'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1',
        'optim_wrapper.optimizer.lr=1e12', 'optim_wrapper.clip_grad=None'))
    one_line_error(proc, 'the loss is not finite (loss=')
    stopped = int(re.search(r'error: iteration (\d+):', proc.stderr).group(1))
    assert 'Try a lower learning rate' in proc.stderr and '--auto-scale-lr' in proc.stderr
    # Iterations of one epoch = 2; nothing saved at or after the diverging iteration.
    saved = [f for f in os.listdir(tmp_path) if f.endswith('.pth')]
    assert all(int(re.findall(r'\d+', f)[0]) * 2 < stopped for f in saved), (saved, stopped)
    for name in saved:
        load_checkpoint_file(osp.join(tmp_path, name))  # finite, or it would raise


def test_a_checkpoint_with_nan_weights_is_refused_where_it_is_loaded(tmp_path):
    state = {'backbone.a': torch.ones(3), 'backbone.b': torch.tensor([1.0, float('nan')]),
             'backbone.c': torch.tensor([float('inf')]), 'step': torch.tensor(3)}
    path = str(tmp_path / 'diverged.pth')
    save_atomic({'state_dict': state}, path)
    with pytest.raises(CheckpointError, match=r'2 tensors hold NaN or infinite values '
                       r'\(state_dict.backbone.b, state_dict.backbone.c\)'):
        load_checkpoint_file(path)


def test_tools_refuse_a_diverged_checkpoint_in_one_line(tiny_demo_data, tmp_path):
    path = str(tmp_path / 'diverged.pth')
    save_atomic({'state_dict': {'backbone.x': torch.full((2, ), float('nan'))}}, path)
    status, err = run_in_process('test.py', DEMO, path, '--cfg-options',
                                 *demo_data_options(tiny_demo_data))
    assert status == 1 and 'tensors hold NaN or infinite values (state_dict.backbone.x)' \
        in err


# 2. No kill loses the last good checkpoint; 3. resume continues where it stopped.

# 3 epochs of 2 iterations, a checkpoint after each, one kept
EVERY_ITERATION = ['train_dataloader.batch_size=1', 'train_cfg.max_epochs=3',
                   'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1',
                   'default_hooks.checkpoint.by_epoch=False',
                   'default_hooks.checkpoint.max_keep_ckpts=1']
ITERATION = re.compile(r'Epoch\(train\) +\[(\d)\]\[(\d)/2\]')


def _pointer(work_dir):
    path = osp.join(work_dir, 'last_checkpoint')
    return open(path).read().strip() if osp.isfile(path) else None


def _run_until(tiny_demo_data, work_dir, resume, signum, mid_save, after):
    """Run training (resumed or not) and send ``signum`` during the first save of an
    iteration past ``after`` (``mid_save``), or right after the pointer names one;
    return the exit status and the run's log."""
    log_file = f'{work_dir}.{len(os.listdir(osp.dirname(work_dir)))}.log'
    with open(log_file, 'w') as log:
        proc = subprocess.Popen(
            [sys.executable, 'tools/train.py', *train_args(
                tiny_demo_data, work_dir, *EVERY_ITERATION), *(['--resume'] if resume else [])],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            # as from a terminal: a shell without job control starts background jobs
            # (CI's, say) with Ctrl-C ignored, and the child would inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 600
        while proc.poll() is None and signum is not None:
            assert time.time() < deadline
            names = os.listdir(work_dir) if osp.isdir(work_dir) else []
            steps = [int(m) for n in names
                     for m in re.findall(r'^\.iter_(\d+)\.pth\.partial$', n)]
            pointed = re.findall(r'iter_(\d+)\.pth$', _pointer(work_dir) or '')
            if (mid_save and any(step > after for step in steps)) or (
                    not mid_save and pointed and int(pointed[0]) > after):
                proc.send_signal(signum)
                break
            time.sleep(0.002)
        proc.wait(timeout=600)
    with open(log_file) as f:
        return proc.returncode, f.read()


def test_runs_killed_at_many_moments_lose_nothing_and_resume_to_the_exact_count(
        tiny_demo_data, tmp_path):
    """One schedule of 6 iterations, killed four times (SIGKILL and SIGTERM during a
    save, SIGKILL and Ctrl-C between saves), resumed after each: every kill leaves the
    pointer on a complete checkpoint, every resumed run starts at the iteration after
    it, and the last one ends the schedule with exactly one checkpoint."""
    work_dir = str(tmp_path / 'work')
    kept = 0
    for resume, (signum, mid_save) in enumerate([
            (signal.SIGKILL, True), (signal.SIGTERM, True), (signal.SIGKILL, False),
            (signal.SIGINT, False), (None, None)]):
        status, log = _run_until(tiny_demo_data, work_dir, resume > 0, signum, mid_save,
                                 after=kept + 1 if mid_save else kept)
        trained = [2 * (int(e) - 1) + int(i) for e, i in ITERATION.findall(log)]
        assert trained and trained[0] == kept + 1, (kept, trained, log[-3000:])
        assert trained == list(range(kept + 1, trained[-1] + 1))
        last = _pointer(work_dir)
        assert osp.isfile(last), f'last_checkpoint names a missing file: {last}'
        kept = load_checkpoint_file(last)['meta']['iter']
        if signum in (signal.SIGTERM, signal.SIGINT):  # one line, nothing half-written
            assert status == 128 + signum, log[-3000:]
            assert f'the last good checkpoint is {last} (continue with --resume)' in log
            assert 'Traceback' not in log
            assert not [n for n in os.listdir(work_dir) if n.endswith('.partial')]
    assert status == 0 and kept == 6, log[-3000:]
    assert sorted(f for f in os.listdir(work_dir) if f.endswith('.pth')) == ['iter_6.pth']


def test_removals_a_kill_cut_short_are_made_by_the_resumed_run(tmp_path):
    """Killed after a save but before the removals it made due (max_keep_ckpts), a run
    leaves the old file; the run resuming from the new checkpoint removes it first."""
    import logging
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    from acmix_mm.hooks import SafeCheckpointHook

    def save_checkpoint(out_dir, filename, *args, **kwargs):
        (tmp_path / filename).write_bytes(b'weights')

    runner = SimpleNamespace(work_dir=str(tmp_path), logger=logging.getLogger(__name__),
                             message_hub=MessageHub('removals_test'),
                             save_checkpoint=save_checkpoint)
    hook = SafeCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1)
    hook.before_train(runner)
    hook._save_checkpoint_with_step(runner, 1, {})

    def killed(removals):
        raise KeyboardInterrupt
    hook._remove = killed
    with pytest.raises(KeyboardInterrupt):
        hook._save_checkpoint_with_step(runner, 2, {})
    assert sorted(os.listdir(tmp_path)) == ['iter_1.pth', 'iter_2.pth', 'last_checkpoint']
    # the message hub as iter_2.pth holds it: the removal of iter_1 was due
    resumed = SafeCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1)
    resumed.before_train(runner)
    assert sorted(os.listdir(tmp_path)) == ['iter_2.pth', 'last_checkpoint']
    assert runner.message_hub.get_info(SafeCheckpointHook.PENDING) == []


def test_a_stale_pointer_resumes_from_the_newest_complete_checkpoint(tmp_path):
    from acmix_mm.runner import resumable_checkpoint
    save_atomic({'meta': {}}, str(tmp_path / 'iter_3.pth'))
    (tmp_path / 'iter_4.pth').write_bytes(b'')  # cut short by a kill
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_5.pth'))
    assert resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_3.pth')


# 4. Config mistakes are caught before training starts.

@pytest.mark.parametrize('config,option,message', [
    (DEMO, 'default_hooks.checkpoint.intervl=1',
     "'default_hooks.checkpoint.intervl': CheckpointHook has no argument 'intervl' (did "
     "you mean interval"),
    (DEMO, 'train_cfg.max_epoch=1',
     "EpochBasedTrainLoop has no argument 'max_epoch' (did you mean max_epochs"),
    (DEMO, 'model.backbone.archh=x', "PVTACmix has no argument 'archh' (did you mean arch"),
    (DEMO, 'param_scheduler.1.eta_mn=0',
     "CosineAnnealingLR has no argument 'eta_mn' (did you mean eta_min"),
    (DEMO, 'train_cfg.max_epochs=abc',
     "train_cfg.max_epochs='abc': train_cfg.max_epochs expects an integer (the config "
     'has 6)'),
    (DEMO, 'optim_wrapper.optimizer.lr=fast', 'expects a number'),
    (DEMO, 'default_hooks.checkpoint.max_keep_ckpts=two', 'expects an integer'),
    ('configs/pretrain/pvt_acmix_t_in1k.py', 'train_cfg.max_epochs=1',
     'param_scheduler.1 (CosineAnnealingLR) begins at epoch 5, but the run ends at '
     'train_cfg.max_epochs=1: the phases before it (param_scheduler.0 ends at epoch 5) '
     'are longer than the run; shorten both, e.g. --cfg-options param_scheduler.0.end=1 '
     'param_scheduler.1.begin=1'),
])
def test_config_mistakes_are_refused_before_training(config, option, message):
    train = load_script('tools/train.py')
    with pytest.raises(UserError) as err:
        train.build_cfg(train.parse_args([osp.join(ROOT, config), '--cfg-options', option]))
    assert message in str(err.value)


@pytest.mark.parametrize('option', [
    'default_hooks.checkpoint.max_keep_ckpts=2',  # an argument the config leaves out
    'default_hooks.checkpoint.save_best=auto',
    'model.backbone.init_cfg.checkpoint=x.pth',  # init_cfg=None takes a dict
    'train_dataloader.dataset.metainfo.classes=[a,b]',  # a plain dict takes new keys
    'optim_wrapper.optimizer.lr=1',  # an integer where the config has a float
    'randomness.seed=1', 'truncated_images=warn',
])
def test_valid_options_pass_the_checks(option):
    train = load_script('tools/train.py')
    train.build_cfg(train.parse_args([osp.join(ROOT, DEMO), '--cfg-options', option]))


def test_a_phase_with_its_own_end_past_a_short_run_is_a_warning(capsys):
    """mmengine runs it (the phase never starts): a smoke run of a 160k config."""
    from mmengine.config import Config

    from acmix_mm.config_checks import check_schedule
    check_schedule(Config(dict(
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=1),
        param_scheduler=[dict(type='LinearLR', by_epoch=False, begin=0, end=1500),
                         dict(type='PolyLR', by_epoch=False, begin=1500, end=160000)])))
    err = capsys.readouterr().err
    assert 'param_scheduler.1 (PolyLR) begins at iteration 1500, after the run ' \
        '(train_cfg.max_iters=1): it never runs' in err
    assert 'param_scheduler.0 (LinearLR) ends at iteration 1500, after the run' in err


def test_a_work_dir_in_use_is_refused_and_a_stale_lock_taken(tmp_path):
    owner = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (tmp_path / '.train.lock').write_text(f'{owner.pid} {os.uname().nodename}\n')
        with pytest.raises(UserError, match=f'in use by a running training \\(pid '
                           f'{owner.pid}'):
            with claim_work_dir(str(tmp_path)):
                pass
    finally:
        owner.kill()
        owner.wait()
    (tmp_path / '.iter_3.pth.partial').write_bytes(b'half')
    with claim_work_dir(str(tmp_path)):  # the owner is gone: its lock is stale
        assert (tmp_path / '.train.lock').read_text().split()[0] == str(os.getpid())
        assert not (tmp_path / '.iter_3.pth.partial').exists()
    assert not (tmp_path / '.train.lock').exists()


def test_an_unwritable_work_dir_is_named(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(UserError, match=f'Cannot write to the work dir {blocker}/w'):
        with claim_work_dir(str(blocker / 'w')):
            pass


def test_a_full_disk_is_named_before_training_and_while_saving(monkeypatch, tmp_path):
    import errno
    from types import SimpleNamespace

    from acmix_mm.runner import AtomicCheckpointRunner
    from acmix_mm.runner_utils import check_free_space
    runner = SimpleNamespace(model=torch.nn.Linear(1000, 1000), work_dir=str(tmp_path))
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: SimpleNamespace(free=2**20))
    with pytest.raises(UserError, match='has 1 MB free; a checkpoint of this model needs '
                       'up to 11 MB'):
        check_free_space(runner)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr('mmengine.runner.Runner.save_checkpoint', full)
    bare = AtomicCheckpointRunner.__new__(AtomicCheckpointRunner)  # no model needed
    bare._work_dir = str(tmp_path)
    with pytest.raises(UserError, match=r'No space left on device \(errno 28\); the last '
                       r'good checkpoint is none'):
        bare.save_checkpoint(str(tmp_path), 'iter_1.pth')
    assert os.listdir(tmp_path) == []


# 5. Bad data is named, never used silently.

def _copy_data(tiny_demo_data, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(tiny_demo_data, data)
    return data


def test_a_truncated_jpeg_stops_training_or_is_counted_by_the_switch(tiny_demo_data,
                                                                      tmp_path):
    data = _copy_data(tiny_demo_data, tmp_path)
    image = sorted((data / 'coco' / 'train2017').iterdir())[0]
    content = image.read_bytes()
    image.write_bytes(content[:len(content) // 3])
    assert cv2.imread(str(image)) is not None  # OpenCV would decode it, bottom black
    options = ['train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=100']
    proc = run_tool('tools/train.py', *train_args(str(data), tmp_path / 'a', *options))
    one_line_error(proc, f'Image {image} is truncated (it lacks its end marker ff d9)')
    proc = run_tool('tools/train.py', *train_args(str(data), tmp_path / 'b', *options,
                                                  'truncated_images=warn'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert f'Image {image} is truncated; used as decoded (truncated images so far in ' \
        'this process: 1)' in log


@pytest.mark.parametrize('content,message', [(None, 'Image not found: '),
                                             (b'', 'is empty (0 bytes)')])
def test_missing_and_empty_images_are_named(tmp_path, content, message):
    path = tmp_path / 'a.jpg'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)):
        CheckedLoadImageFromFile().transform(dict(img_path=str(path)))


def test_a_missing_test_image_is_named_by_the_tool(tiny_demo_data, tmp_path):
    data = _copy_data(tiny_demo_data, tmp_path)
    image = sorted((data / 'coco' / 'val2017').iterdir())[0]
    image.unlink()
    state = model_checkpoint(DEMO, tmp_path / 'model.pth')
    proc = run_tool('tools/test.py', DEMO, state, '--cfg-options',
                    *demo_data_options(str(data)), 'test_dataloader.num_workers=2',
                    'test_dataloader.persistent_workers=True')
    one_line_error(proc, f'Image not found: {image}.')  # raised in a loader worker


def _seg_args(data, work_dir, *options):
    ade = osp.join(data, 'ade', 'ADEChallengeData2016') + '/'
    return [SEG_DEMO, '--work-dir', str(work_dir), '--cfg-options',
            f'train_dataloader.dataset.data_root={ade}',
            f'val_dataloader.dataset.data_root={ade}',
            f'test_dataloader.dataset.data_root={ade}', *options]


def test_a_16_bit_label_map_is_read_as_it_is_and_refused_out_of_range(tiny_demo_data,
                                                                      tmp_path):
    data = _copy_data(tiny_demo_data, tmp_path)
    labels = data / 'ade' / 'ADEChallengeData2016' / 'annotations' / 'training'
    label = sorted(labels.iterdir())[0]
    seg = cv2.imread(str(label), cv2.IMREAD_UNCHANGED).astype(np.uint16)
    seg[0, 0] = 300  # 8 bits would read 44
    cv2.imwrite(str(label), seg)
    proc = run_tool('tools/train.py', *_seg_args(
        str(data), tmp_path / 'w', 'train_dataloader.batch_size=2', 'train_cfg.max_iters=1',
        'train_cfg.val_interval=100'))
    one_line_error(proc, f'Label map {label} holds labels outside the')
    assert 'values in the file: 300' in proc.stderr


def test_labels_past_the_classes_in_the_val_set_are_named_by_test(tiny_demo_data,
                                                                  tmp_path):
    data = _copy_data(tiny_demo_data, tmp_path)
    labels = data / 'ade' / 'ADEChallengeData2016' / 'annotations' / 'validation'
    label = sorted(labels.iterdir())[0]
    seg = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    seg[0, 0] = 200
    cv2.imwrite(str(label), seg)
    state = model_checkpoint(SEG_DEMO, tmp_path / 'model.pth')
    status, err = run_in_process('test.py', *_seg_args(str(data), tmp_path / 'w')[:1], state,
                                 *_seg_args(str(data), tmp_path / 'w')[1:])
    assert status == 1 and f'Label map {label} holds labels outside the' in err, err


@pytest.mark.parametrize('text,message', [
    ('{"images": [', 'is not valid JSON (Expecting value at line 1, column 13)'),
    ('not json', 'is not valid JSON'),
    ('{"annotations": [], "categories": []}', "has no 'images', no 'annotations', no "
     "'categories' list"),
])
def test_broken_annotation_files_are_named(tiny_demo_data, tmp_path, text, message):
    data = _copy_data(tiny_demo_data, tmp_path)
    ann = data / 'coco' / 'annotations' / 'instances_train2017.json'
    ann.write_text(text)
    status, err = run_in_process('train.py', *train_args(str(data), tmp_path / 'w'))
    assert status == 1 and str(ann) in err and message in err, err


@pytest.mark.parametrize('line,problem', [
    ('cat/a.jpg', 'has no label'),
    ('cat/a.jpg seven', "has the label 'seven', not an integer"),
    ('cat/a.jpg 1000', 'has the label 1000, outside the 1000 classes (0..999)'),
])
def test_bad_imagenet_meta_lines_are_named(tmp_path, line, problem):
    meta = tmp_path / 'train.txt'
    meta.write_text(f'dog/b.jpg 3\n{line}\n')
    with pytest.raises(UserError, match=re.escape(f'{meta} line 2 ({line!r}) {problem}')):
        check_meta_file(str(meta), 1000)


# 6. Every tool's bad arguments end in one line.

@pytest.mark.parametrize('tool,args,message', [
    ('get_flops.py', [DEMO, '--shape', '0', '0'], '--shape 0 0: every backbone downsamples '
     'by 32'),
    ('benchmark.py', [DEMO, '--shape', '1', '1', '--iters', '1', '--warmup', '0'],
     '--shape 1 1: every backbone'),
    ('make_demo_data.py', ['--out', '/tmp/unused', '--num-train', '0'],
     '--num-train 0 --num-val 60: each split needs at least one image'),
    ('make_demo_data.py', ['--out', '/proc/acmix_mm_demo'], 'error: /proc/acmix_mm_demo: '),
    ('train.py', [DEMO, '--launcher', 'pytorch'],
     '--launcher pytorch: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set; start the '
     'processes with torchrun'),
])
def test_bad_tool_arguments_end_in_one_line(monkeypatch, tool, args, message):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    status, err = run_in_process(tool, *args)
    assert status == 1 and message in err, err


@pytest.mark.parametrize('content,message', [
    (None, 'Checkpoint file not found'), (b'', 'truncated or not a PyTorch checkpoint'),
    (b'PK\x03\x04cut', 'Cannot read checkpoint'),
])
def test_resume_from_a_bad_file_ends_in_one_line(tiny_demo_data, tmp_path, content, message):
    path = tmp_path / 'bad.pth'
    if content is not None:
        path.write_bytes(content)
    status, err = run_in_process('train.py', *train_args(tiny_demo_data, tmp_path / 'w'),
                                 '--resume', str(path))
    assert status == 1 and message in err, err


def test_image_demo_names_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / 'notes.png'
    path.write_text('not an image')
    state = str(tmp_path / 'any.pth')
    save_atomic({'state_dict': {}}, state)
    status, err = run_in_process('image_demo.py', DEMO, state, str(path), '--out-file',
                                 str(tmp_path / 'o.jpg'))
    assert status == 1 and f'Cannot read image {path}: it is not an image file' in err, err


def test_faq_lists_every_message_of_this_issue():
    faq = open(osp.join(ROOT, 'docs', 'faq.md')).read()
    for phrase in ('the loss is not finite', 'tensors hold NaN or infinite values',
                   'has no argument', 'expects an integer', 'begins at epoch',
                   'is in use by a running training', 'Cannot write to the work dir',
                   'is truncated (it lacks its end marker', 'holds labels outside the',
                   'is not valid JSON', 'line 2', 'every backbone downsamples by 32',
                   'training stopped by SIGTERM', 'not set; start the processes with'):
        assert phrase in faq, phrase
    json.dumps(faq)  # plain text
