from setuptools import find_packages, setup

setup(
    name='acmix_mm',
    version='0.1.0',
    description='ACmix backbones for mmdet 3.x and mmsegmentation 1.x',
    packages=find_packages(include=['acmix_mm', 'acmix_mm.*']),
    python_requires='>=3.9',
    # Pinned versions and the install order (mmcv is built from source) live in
    # requirements.txt and tools/setup_env.sh.
    install_requires=[],
)
