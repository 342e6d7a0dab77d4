"""glibc's allocator for CPU runs: large freed blocks kept for reuse.

A training step allocates the same large tensors in every iteration. glibc's malloc
serves blocks above its mmap threshold (at most 32 MiB, however it adapts) with fresh
pages from the kernel and unmaps them when they are freed, so every step faults them in
again and the kernel zeroes them: SAN-19's step at 512x640 faulted 290-660 MiB this
way, 11-15% of its time on a 2-core AMD EPYC, where mmdet's ResNet-50, whose maps stay
below the threshold, faults none. PyTorch has no caching allocator for CPU tensors (its
performance guide suggests preloading jemalloc or tcmalloc for this reason);
:func:`reuse_freed_memory` gets the same from glibc with two ``mallopt`` settings. The
process then keeps its peak of freed memory instead of returning it to the system.

``tools/train.py`` and ``tools/test.py`` call it when no GPU is at hand; the CPU
benchmarks call it too, so that their ratios are those of a run of the tools.
``ACMIX_MM_REUSE_FREED_MEMORY=0`` turns it off; glibc's own settings
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) and a
preloaded allocator win over it.
"""
import ctypes
import os
import platform

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks below 1 GiB come from the heap, and up to 2 GiB of free heap top is kept.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2 << 30

REUSE_MESSAGE = ('CPU run: glibc malloc keeps large freed blocks for reuse (acmix_mm.cpu_memory; '
                 'ACMIX_MM_REUSE_FREED_MEMORY=0 turns it off)')
_USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'GLIBC_TUNABLES')
_applied = False


def reuse_freed_memory():
    """Keep large freed blocks in glibc's heap for reuse (see the module's docstring).

    Returns:
        bool: Whether the process now runs with these settings: False off glibc, with
        ``ACMIX_MM_REUSE_FREED_MEMORY=0``, or where the user set the allocator up.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get('ACMIX_MM_REUSE_FREED_MEMORY', '1') == '0':
        return False
    if (any(os.environ.get(name) for name in _USER_SETTINGS)
            or 'malloc' in os.environ.get('LD_PRELOAD', '')):  # jemalloc, tcmalloc, ...
        return False
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    libc = ctypes.CDLL(None)
    # The mmap threshold first: a trim threshold alone also freezes the mmap threshold
    # at its 128 KiB default, and then every block above that is mapped afresh.
    if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    _applied = True
    return True


def reuses_freed_memory():
    """Whether :func:`reuse_freed_memory` has set this process's allocator up."""
    return _applied


def allocator_note():
    """The benchmarks' header-line note on the setting: empty where it is off."""
    return '; glibc malloc: freed blocks reused' if _applied else ''
