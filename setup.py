"""acmix_mm, with its native operators (acmix_mm/ops/csrc) built where possible.

The C++ CPU operators are built with torch's extension builder (ninja, OpenMP) during
``pip install --no-build-isolation -e .``, as mmcv builds its ops. A machine that cannot
build them still gets a working install: the pure-PyTorch paths run instead, and
``acmix_mm.ops.native_status()`` says which ran. ``ACMIX_MM_NATIVE_OPS=0`` at install
time skips the build.
"""
import os
import os.path as osp
import re
import sys

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
OPS_DIR = osp.join('acmix_mm', 'ops', 'csrc')


def version():
    """acmix_mm/version.py's __version__, read without importing the package."""
    text = open(osp.join(ROOT, 'acmix_mm', 'version.py')).read()
    return re.search(r"^__version__ = '([^']+)'", text, re.M).group(1)


# What acmix_mm needs in an environment that already holds torch and mmcv (installed as
# OpenMMLab documents: mmcv's wheel for one's torch and CUDA). Ranges the code works
# with; only the pins of requirements.txt are tested. tools/setup_env.sh installs those
# pins itself and this package with --no-deps, so these ranges never make it fetch
# anything. tests/test_packaging.py checks that the installed versions satisfy them.
INSTALL_REQUIRES = [
    'torch>=2.4',  # torch.serialization.add_safe_globals (weights_only loading)
    'mmengine>=0.7.1,<1.0',
    'mmcv>=2.0.0rc4,<2.2.0',  # mmdet 3.x and mmseg 1.x refuse mmcv 2.2
    'mmdet>=3.0,<3.4',
    'mmsegmentation>=1.0,<1.3',
    'numpy',
]
EXTRAS_REQUIRE = {
    # ImageNet pretraining (configs/pretrain, bash tools/demo.sh cls)
    'pretrain': ['mmpretrain>=1.0,<1.3'],
    # ONNX export and ONNX Runtime (tools/export_onnx.py, tools/test.py FILE.onnx,
    # tools/benchmark.py --backend onnxruntime): torch.onnx's dynamo exporter
    'onnx': ['onnx>=1.16', 'onnxscript>=0.2', 'onnxruntime>=1.18'],
}
EXTRAS_REQUIRE['all'] = sorted({r for reqs in EXTRAS_REQUIRE.values() for r in reqs})


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
        # softmax (results are unchanged); -fno-tree-loop-distribute-patterns keeps the
        # kernels' copy loops as written (GCC made unpack's whole-vector run copies
        # library memcpy calls, whose narrower stores stall the wide loads that follow);
        # OpenMP runs at::parallel_for in torch's pool.
        # The 64-byte vector helpers (vectorize.h) are always inlined, so the ABI note
        # -Wpsabi gives about returning them does not apply.
        extra_compile_args=['-O3', '-fno-trapping-math', '-fno-tree-loop-distribute-patterns',
                            '-fopenmp', '-Wno-psabi'],
        extra_link_args=['-fopenmp'])
    return [extension], {'build_ext': OptionalBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = native_extensions()

setup(
    name='acmix_mm',
    version=version(),
    description='ACmix backbones for mmdet 3.x, mmsegmentation 1.x and mmpretrain 1.x',
    long_description=open(osp.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['acmix_mm', 'acmix_mm.*']),
    python_requires='>=3.9',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
