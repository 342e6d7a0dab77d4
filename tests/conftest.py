import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_tool(*args, timeout=900):
    """Run ``python tools/<args>`` from the repository root; return the finished process."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope='session')
def tiny_demo_data(tmp_path_factory):
    """The bundled data, made by its generator at a size for tests (2 train, 2 val)."""
    out = tmp_path_factory.mktemp('demo_data')
    proc = run_tool('tools/make_demo_data.py', '--out', str(out), '--num-train', '2',
                    '--num-val', '2')
    assert proc.returncode == 0, proc.stderr
    return str(out)
