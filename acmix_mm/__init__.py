"""acmix_mm: ACmix backbones for mmdet 3.x, mmsegmentation 1.x and mmpretrain 1.x.

Importing the package registers every backbone in mmdet's, mmseg's and mmpretrain's
``MODELS``; configs reach it with ``custom_imports = dict(imports=['acmix_mm'])``.
"""
from . import backbones, classification, layers, runner  # noqa: F401  (registers them)
from .version import __version__  # noqa: F401
