"""One decorator that puts a model class into every OpenMMLab registry we serve.

mmdet, mmseg and mmpretrain each keep their own ``MODELS`` registry (children of
mmengine's root registry). A config with ``default_scope='mmdet'`` looks names up in
mmdet's, one with ``default_scope='mmseg'`` in mmseg's, one with
``default_scope='mmpretrain'`` (ImageNet pretraining) in mmpretrain's, so each backbone
is registered in all three.
"""
from mmengine.registry import Registry


def _downstream_registries():
    registries = []
    for module in ('mmdet.registry', 'mmseg.registry', 'mmpretrain.registry'):
        try:
            registries.append(__import__(module, fromlist=['MODELS']).MODELS)
        except ImportError:  # a user may install only some of them
            pass
    if not registries:
        raise ImportError('acmix_mm needs mmdet or mmsegmentation; run the set-up in '
                          'README.md (bash tools/setup_env.sh) to install them.')
    return registries


MODEL_REGISTRIES = _downstream_registries()

# Attention modes that plug into the ACmix operator (see layers/acmix.py).
ATTENTION_PATHS = Registry('ACmix attention path')


def register_model(cls):
    """Register ``cls`` in mmdet's, mmseg's and mmpretrain's ``MODELS`` (whichever are
    installed)."""
    for registry in MODEL_REGISTRIES:
        registry.register_module(module=cls)
    return cls
