import os.path as osp
import re

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


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
)
