import atexit
import contextlib
import importlib.util
import io
import os
import os.path as osp
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The benchmarks and tools the tests run write their measurement records here (and
# the tools they start inherit it), never into benchmarks/results/ (acmix_mm.records).
os.environ['ACMIX_MM_RECORDS'] = tempfile.mkdtemp(prefix='acmix_mm_records_')
atexit.register(shutil.rmtree, os.environ['ACMIX_MM_RECORDS'], ignore_errors=True)


def run_tool(*args, timeout=900):
    """Run ``python tools/<args>`` from the repository root; return the finished process."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def run_in_process(tool, *argv):
    """``tools/<tool>``'s main() in this process: (exit status, stderr). For runs that
    end in an error before training: they skip the ~7 s of imports of a new process
    (the entry point itself is run as a process by the end-to-end tests)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = load_script(f'tools/{tool}').main(list(argv))
    return status, err.getvalue()


@contextlib.contextmanager
def scratch_dir(tmp_path_factory, name):
    """A directory for a module-scoped fixture, removed at its teardown (pytest removes
    only function-scoped ``tmp_path`` directories of passed tests, and a run's
    checkpoints would otherwise fill a CI disk)."""
    path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (for process groups)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# Imported first by each process of a distributed run (sitecustomize), so its exit
# handler runs last: it names the threads still running. gloo's threads that end in
# the interpreter's teardown abort a run now and then (exit status -6).
_THREADS_AT_EXIT = """import atexit, os
def report():
    names = [open(f'/proc/self/task/{t}/comm').read().strip()
             for t in os.listdir('/proc/self/task')]
    line = f'threads at exit of rank {os.environ.get("RANK")} {sorted(names)}\\n'
    os.write(2, line.encode())  # one write: the ranks' lines do not interleave
atexit.register(report)
"""


def distributed_env(tmp_path):
    """The environment for tools/dist_*.sh: this Python, a free port, and the report
    of the threads each process leaves at exit (see :func:`threads_left_at_exit`)."""
    site = osp.join(str(tmp_path), 'site')
    os.makedirs(site, exist_ok=True)
    with open(osp.join(site, 'sitecustomize.py'), 'w') as f:
        f.write(_THREADS_AT_EXIT)
    path = os.pathsep.join(filter(None, [site, os.environ.get('PYTHONPATH')]))
    return dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), PYTHONPATH=path)


def threads_left_at_exit(stderr):
    """{rank: names of its threads at exit} from a run started with distributed_env."""
    return dict(re.findall(r'threads at exit of rank (\d+) (\[[^]]*\])', stderr))


def assert_group_freed_before_exit(stderr, world_size=2):
    """Every process reported its threads at exit, and no gloo thread was left."""
    threads = threads_left_at_exit(stderr)
    assert sorted(threads) == [str(rank) for rank in range(world_size)], stderr[-3000:]
    assert not {rank: names for rank, names in threads.items() if 'gloo' in names}, threads


def load_script(relative_path):
    """A script of the repository (tools/, benchmarks/: not packages) as a module."""
    name = osp.splitext(osp.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_visualizer_left_behind():
    """Forget the visualizers a test's in-process Runner made: mmengine keeps them by
    name across Runners, and the next Runner would write into this test's tmp_path,
    removed when it passes (pytest.ini)."""
    yield
    if 'mmengine.visualization' in sys.modules:
        from mmengine.visualization import Visualizer
        classes = [Visualizer]
        while classes:
            cls = classes.pop()
            cls._instance_dict.clear()
            classes += cls.__subclasses__()


@pytest.fixture(scope='session')
def tiny_demo_data(tmp_path_factory):
    """The bundled data, made by its generator at a size for tests (2 train, 2 val)."""
    out = tmp_path_factory.mktemp('demo_data')
    proc = run_tool('tools/make_demo_data.py', '--out', str(out), '--num-train', '2',
                    '--num-val', '2')
    assert proc.returncode == 0, proc.stderr
    return str(out)
