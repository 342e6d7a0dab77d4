"""acmix_mm, with its native operators (acmix_mm/ops/csrc) built where possible.

The C++ CPU operators are built with torch's extension builder (ninja, OpenMP) during
``pip install --no-build-isolation -e .``, as mmcv builds its ops. A machine that cannot
build them still gets a working install: the pure-PyTorch paths run instead, and
``acmix_mm.ops.native_status()`` says which ran. ``ACMIX_MM_NATIVE_OPS=0`` at install
time skips the build.
"""
import os
import sys

from setuptools import find_packages, setup

OPS_DIR = os.path.join('acmix_mm', 'ops', 'csrc')


def native_extensions():
    """The extension and its build command, or none where torch is not importable
    (an isolated build) or the build is switched off."""
    if os.environ.get('ACMIX_MM_NATIVE_OPS', '1') == '0':
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print('acmix_mm: torch is not importable here; native ops not built '
              '(install with --no-build-isolation to build them)', file=sys.stderr)
        return [], {}

    class OptionalBuildExtension(BuildExtension):
        """Builds the ops, but a failed build leaves the PyTorch fallback, not a failed
        install."""

        def run(self):
            try:
                super().run()
            except Exception as err:  # noqa: BLE001  (any compiler or toolchain failure)
                print(f'acmix_mm: native ops not built ({type(err).__name__}: {err}); '
                      'the PyTorch paths will run', file=sys.stderr)

    sources = sorted(
        os.path.join(OPS_DIR, name) for name in os.listdir(OPS_DIR) if name.endswith('.cpp'))
    extension = CppExtension(
        'acmix_mm.ops._C',
        sources,
        # -fno-trapping-math lets the vectoriser if-convert the comparisons of the
        # softmax (results are unchanged); OpenMP runs at::parallel_for in torch's pool.
        extra_compile_args=['-O3', '-fno-trapping-math', '-fopenmp'],
        extra_link_args=['-fopenmp'])
    return [extension], {'build_ext': OptionalBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = native_extensions()

setup(
    name='acmix_mm',
    version='0.1.0',
    description='ACmix backbones for mmdet 3.x and mmsegmentation 1.x',
    packages=find_packages(include=['acmix_mm', 'acmix_mm.*']),
    python_requires='>=3.9',
    # Pinned versions and the install order (mmcv is built from source) live in
    # requirements.txt and tools/setup_env.sh.
    install_requires=[],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
