"""Checkpoints load without running pickled code, and are written atomically."""
import os

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

from acmix_mm.checkpoint import CheckpointError, load_checkpoint_file
from acmix_mm.runner import AtomicCheckpointRunner


class Payload:
    """Unpickling this would run code (it appends to a file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'echo ran >> {self.path}', ))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'ran.txt'
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        torch.save({'state_dict': {}, 'x': Payload(str(marker))}, f)
    with pytest.raises(CheckpointError, match='Refused to load'):
        load_checkpoint_file(str(path))
    assert not marker.exists()


def test_runner_state_loads_under_weights_only(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(1.5)
    buffer.update(2.5)
    path = tmp_path / 'state.pth'
    torch.save({'meta': {'hub': {'loss': buffer, 'seed': torch.tensor(3).numpy()}}}, path)
    loaded = load_checkpoint_file(str(path))['meta']['hub']['loss']
    assert loaded.mean() == 2.0 and loaded.current() == 2.5


def test_importing_the_package_leaves_mmengine_and_torch_alone():
    """The allow-list and HistoryBuffer's pickling change where checkpoints are loaded
    and saved (our loader, our runner, the tools), not for every process that imports
    acmix_mm (a config's custom_imports)."""
    import subprocess
    import sys
    code = '\n'.join([
        'import argparse, torch',
        'from mmengine.logging import HistoryBuffer',
        'pickling = HistoryBuffer.__getstate__',
        'import acmix_mm',
        'ours = (HistoryBuffer, argparse.Namespace)',
        'assert not set(ours) & set(torch.serialization.get_safe_globals())',
        'assert HistoryBuffer.__getstate__ is pickling',
        'from acmix_mm.checkpoint import allow_runner_checkpoint_types',
        'allow_runner_checkpoint_types()',
        'assert set(ours) <= set(torch.serialization.get_safe_globals())',
        'assert HistoryBuffer.__getstate__ is not pickling',
    ])
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all'])
def test_truncated_or_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / 'bad.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match='truncated or not a PyTorch checkpoint'):
        load_checkpoint_file(str(path))


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'previous good checkpoint')

    def save_then_crash(self, out_dir, filename, *args, **kwargs):
        with open(os.path.join(out_dir, filename), 'wb') as f:
            f.write(b'half of a checkp')
        raise KeyboardInterrupt  # the job is killed mid-save

    monkeypatch.setattr(Runner, 'save_checkpoint', save_then_crash)
    runner = object.__new__(AtomicCheckpointRunner)
    with pytest.raises(KeyboardInterrupt):
        runner.save_checkpoint(str(tmp_path), 'epoch_1.pth')
    assert target.read_bytes() == b'previous good checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth']

    def save(self, out_dir, filename, *args, **kwargs):
        with open(os.path.join(out_dir, filename), 'wb') as f:
            f.write(b'new checkpoint')

    monkeypatch.setattr(Runner, 'save_checkpoint', save)
    runner.save_checkpoint(str(tmp_path), 'epoch_1.pth')
    assert target.read_bytes() == b'new checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_unreachable_pretrained_url_says_what_to_do():
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file('http://127.0.0.1:9/pvt_tiny.pth')
    message = str(err.value)
    assert message.startswith('Cannot download http://127.0.0.1:9/pvt_tiny.pth')
    assert 'model.backbone.init_cfg.checkpoint=PATH' in message
    assert 'model.backbone.init_cfg=None' in message
