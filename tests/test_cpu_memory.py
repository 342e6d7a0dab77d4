"""acmix_mm/cpu_memory.py: large freed blocks kept for reuse on CPU runs (each check in
a fresh interpreter, as the settings are the process's)."""
import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != 'glibc',
                                reason='the settings are glibc mallopt calls')

# Page faults of the last three of six steps, each allocating and filling 48 MiB (a
# block above glibc's largest adaptive mmap threshold, 32 MiB), and the outcome.
FAULTS = '''
import ctypes, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location('cpu_memory', 'acmix_mm/cpu_memory.py')
cpu_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_memory)
applied = cpu_memory.reuse_freed_memory() if sys.argv[1] == 'reuse' else False
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(48 << 20)
    ctypes.memset(block, 1, 48 << 20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(faults_each=faults, applied=applied,
                      reuses=cpu_memory.reuses_freed_memory(), faults=sum(faults[3:]))))
'''


def run(mode, **env):
    out = subprocess.run([sys.executable, '-c', FAULTS, mode], cwd=ROOT, check=True,
                         capture_output=True, text=True,
                         env=dict(os.environ, **env)).stdout
    return json.loads(out.splitlines()[-1])


def clean_env(**env):
    base = {k: '' for k in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
                            'GLIBC_TUNABLES', 'LD_PRELOAD', 'ACMIX_MM_REUSE_FREED_MEMORY')}
    return dict(base, **env)


def test_freed_blocks_are_reused_without_page_faults():
    pages = 3 * (48 << 20) // 4096
    default = run('default', **clean_env())
    assert not default['reuses']
    assert default['faults'] >= pages  # mapped afresh, every page faulted in, each step
    reused = run('reuse', **clean_env())
    assert reused['applied'] and reused['reuses']
    assert reused['faults'] < pages // 100, reused['faults_each']


@pytest.mark.parametrize('env', [dict(ACMIX_MM_REUSE_FREED_MEMORY='0'),
                                 dict(MALLOC_MMAP_THRESHOLD_='65536'),
                                 dict(LD_PRELOAD='libjemalloc.so.2')],
                         ids=['turned-off', 'user-threshold', 'preloaded-allocator'])
def test_the_users_settings_win(env):
    # LD_PRELOAD names a library that is not there: the loader warns and goes on.
    result = run('reuse', **clean_env(**env))
    assert not result['applied'] and not result['reuses']


def test_records_say_so():
    code = ('import json; from acmix_mm import records; '
            'from acmix_mm.cpu_memory import reuse_freed_memory; '
            'a = records.make("f", 1, "x", "l"); reuse_freed_memory(); '
            'b = records.make("f", 1, "x", "l"); '
            'print(json.dumps([a.get("allocator"), b.get("allocator")]))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                         capture_output=True, text=True, env=dict(os.environ, **clean_env()))
    assert json.loads(out.stdout.splitlines()[-1]) == [None, 'freed blocks reused (glibc)']
