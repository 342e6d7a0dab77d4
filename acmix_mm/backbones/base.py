"""What the ACmix backbones share.

Every backbone: ``init_cfg=Pretrained`` loading that accepts the official checkpoint
layout of its family (converted on load) or ours (:class:`OfficialCheckpointMixin`), and
frozen stages with norms kept in eval mode (:class:`FrozenStagesMixin`). The transformer
ones (PVT-ACmix, Swin-ACmix) also share the block (norm, ACmix, norm, FFN), arch lookup
with clear errors, ``out_indices`` checking and initialisation from scratch that keeps
ACmix's own initialisation.
"""
import re
from collections import OrderedDict
from typing import Callable, NamedTuple

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.drop import build_dropout
from mmcv.cnn.bricks.transformer import FFN
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch.nn.modules.batchnorm import _BatchNorm

from ..checkpoint import load_pretrained
from ..errors import ConfigError
from ..layers import TokenACmix
from ..layers.linear import native_linears


class OfficialLayout(NamedTuple):
    """The checkpoint layout of an official code base, which a backbone converts on
    load and ``tools/convert_ckpt.py`` converts into a file.

    Attributes:
        name (str): Its name in messages, e.g. ``'official PVT v1'``.
        backbone (str): Our backbone type(s) its weights are for.
        detect (Callable): ``detect(state_dict)``: whether a state dict is in it.
        convert (Callable): ``convert(state_dict, **options)``: ``(state_dict,
            discarded)`` in our layout, every official tensor converted or listed
            with the reason it is left out.
    """
    name: str
    backbone: str
    detect: Callable
    convert: Callable


# Every official layout, by name, registered beside its backbone's converter.
OFFICIAL_LAYOUTS = {}


def register_official_layout(name, backbone, detect, convert):
    """Add an :class:`OfficialLayout` to ``OFFICIAL_LAYOUTS`` and return it."""
    OFFICIAL_LAYOUTS[name] = OfficialLayout(name, backbone, detect, convert)
    return OFFICIAL_LAYOUTS[name]


class OfficialCheckpointMixin:
    """``init_cfg=dict(type='Pretrained', checkpoint=...)`` in our or the official layout.

    Backbones set ``official_layout`` (the name of their :class:`OfficialLayout`) and
    ``convert_weights``; :meth:`official_convert_options` passes options of the
    backbone's own build to the converter.
    """
    official_layout = ''
    # Weights a checkpoint of the plain (non-ACmix) family cannot hold: they keep their
    # initialisation when such a checkpoint is loaded.
    acmix_only_keys = (r'\.conv_path\.', r'\.alpha$', r'\.beta$')
    # Weights of our ImageNet classification form of the backbone (configs/pretrain)
    # that a downstream backbone built without them leaves out (a final norm).
    classification_only_keys = ()

    def load_pretrained_init_cfg(self):
        """Load the checkpoint ``init_cfg`` names, if it names one; return whether."""
        init_cfg = self.init_cfg
        if not (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'):
            return False
        load_pretrained(
            self,
            init_cfg['checkpoint'],
            converter=self.convert_pretrained,
            new_keys=self.pretrained_new_keys(),
            logger=MMLogger.get_current_instance())
        return True

    def pretrained_new_keys(self):
        """Our weights that a pretrained checkpoint may lack (regular expressions)."""
        return self.acmix_only_keys

    def convert_pretrained(self, state_dict):
        """Convert an official-layout state dict on load; ours passes, less the parts
        only our classification form has (when this backbone lacks them)."""
        layout = OFFICIAL_LAYOUTS[self.official_layout]
        if not layout.detect(state_dict):
            own, kept, discarded = self.state_dict(), OrderedDict(), []
            for key, value in state_dict.items():
                if key not in own and any(
                        re.search(p, key) for p in self.classification_only_keys):
                    discarded.append(f'{key}: ImageNet classification only, not used '
                                     'by this backbone')
                else:
                    kept[key] = value
            return kept, discarded
        if not self.convert_weights:
            raise ConfigError(f'The checkpoint is in the {self.official_layout} layout; set '
                             'convert_weights=True to convert it on load.')
        return layout.convert(state_dict, **self.official_convert_options())

    def official_convert_options(self):
        """Keyword arguments of the official layout's converter for this backbone."""
        return {}


class FrozenStagesMixin:
    """``frozen_stages`` and ``norm_eval`` with one meaning in every backbone (mmdet's
    ResNet and Swin convention): -1 freezes nothing, 0 the stem (what comes before the
    first stage's blocks: patch embedding, position embedding, stem convolutions), and
    i > 0 the stem and the first i stages. Frozen parts have no gradients and stay in
    eval mode (no dropout, no drop path, fixed norm statistics) through ``train()``;
    with ``norm_eval`` every BatchNorm does too. ``train()`` returns the module.

    Backbones name their parts in :meth:`stem_parts` and :meth:`stage_parts`.
    """
    norm_eval = False

    def stem_parts(self):
        """Modules (or parameters) that ``frozen_stages=0`` freezes."""
        return [self.stages[0].patch_embed]

    def stage_parts(self, index):
        """Modules (or parameters) of stage ``index`` (0-based) that freezing it
        freezes."""
        return [self.stages[index]]

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        parts = list(self.stem_parts())
        for index in range(self.frozen_stages):
            parts += self.stage_parts(index)
        for part in parts:
            if isinstance(part, nn.Parameter):
                part.requires_grad = False
                continue
            part.eval()
            for param in part.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


class ArchMixin:
    """Arch lookup by name or custom dict, and ``out_indices`` checking, with clear errors.

    Subclasses set ``arch_zoo`` (names -> arch dicts) and ``arch_keys`` (keys of a
    custom arch dict).
    """
    arch_zoo = {}
    arch_keys = ()

    def resolve_arch(self, arch):
        """The arch dict for a name of ``arch_zoo`` or a custom dict."""
        name = type(self).__name__
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                choices = ', '.join(repr(k) for k in self.arch_choices())
                raise ConfigError(f'Unknown {name} arch {arch!r}; choose one of '
                                 f'{choices} or pass a dict.')
            return dict(self.arch_zoo[arch.lower()])
        if not isinstance(arch, dict) or set(arch) != set(self.arch_keys):
            raise ConfigError(f'A custom {name} arch must be a dict with keys '
                             f'{sorted(self.arch_keys)}, got {arch!r}.')
        return arch

    def arch_choices(self):
        """Arch names shown in errors: the long ones (one-letter aliases are left out)."""
        return [k for k in self.arch_zoo if len(k) > 1]

    @staticmethod
    def check_out_indices(out_indices, num_stages):
        out_indices = tuple(out_indices)
        if not out_indices or not all(0 <= i < num_stages for i in out_indices):
            raise ConfigError(f'out_indices {out_indices} must name stages 0..'
                             f'{num_stages - 1}.')
        return out_indices


class ACmixBackbone(ArchMixin, OfficialCheckpointMixin, FrozenStagesMixin, BaseModule):
    """Base of the ACmix backbones built here (PVT-ACmix, Swin-ACmix, SAN(-ACmix),
    AttNet; ResNet-ACmix is mmdet's ResNet with :class:`OfficialCheckpointMixin`).

    Subclasses set ``arch_zoo`` and ``arch_keys`` where they take an arch
    (:class:`ArchMixin`), ``official_layout`` and ``convert_weights``
    (:class:`OfficialCheckpointMixin`), and name their stem and stages for
    ``frozen_stages`` (:class:`FrozenStagesMixin`). Initialisation is decided here, once:
    the checkpoint ``init_cfg`` names, or else :meth:`init_from_scratch`, after which
    every ACmix layer gets its own initialisation back (shift kernels, rates).
    """
    # Said when training starts from scratch (the transformers need their ImageNet
    # weights for the paper's results).
    warn_from_scratch = False

    def init_weights(self):
        if self.load_pretrained_init_cfg():
            return
        if self.warn_from_scratch:
            MMLogger.get_current_instance().warning(
                f'No pre-trained weights for {type(self).__name__}, training starts from '
                'scratch.')
        self.init_from_scratch()
        # A generic init (e.g. truncated normal on every Linear) must not overwrite
        # ACmix's own.
        for m in self.modules():
            if isinstance(m, TokenACmix):
                m.reset_acmix_parameters()

    def init_from_scratch(self):
        """The initialisation without pretrained weights; by default each module's
        ``init_cfg`` (mmengine's)."""
        BaseModule.init_weights(self)


class ACmixTransformerBackbone(ACmixBackbone):
    """Base of :class:`PVTACmix` and :class:`SwinACmix`: from scratch, truncated normal
    linear layers and unit LayerNorms, as PVT's and Swin's code."""
    warn_from_scratch = True

    def init_from_scratch(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, nn.LayerNorm):
                constant_init(m, 1.0)
            else:
                self.init_other_module(m)
        self.init_extra_weights()

    def init_other_module(self, module):
        """Initialise from scratch a module that is neither linear nor a LayerNorm
        (called in module order, with them)."""

    def init_extra_weights(self):
        """Initialisation from scratch after the modules (e.g. parameters)."""


class ACmixTransformerBlock(BaseModule):
    """A pre-norm transformer block whose attention is ACmix, with an FFN.

    ``x + drop_path(ACmix(norm1(x)))``, then ``x + FFN(norm2(x))``. Subclasses choose
    the attention path and may override :meth:`mix` (Swin pads and shifts around it).

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
        feedforward_channels (int): Hidden channels of the FFN.
        attn_path (dict): Attention path of the ACmix (see ``ATTENTION_PATHS``).
        qkv_bias (bool): Bias of the shared projection. Default: True.
        fc_bias (bool): Bias of the convolution path's fc. Default: True.
        drop_rate (float): Dropout in the FFN. Default: 0.
        drop_path_rate (float): Stochastic depth rate. Default: 0.
        kernel_conv (int): Kernel of the ACmix convolution path. Default: 3.
        rate_init (tuple[float]): Initial (alpha, beta). Default: (0.5, 0.5).
        act_cfg (dict): FFN activation. Default: dict(type='GELU').
        norm_cfg (dict): Norm layers. Default: dict(type='LN').
        with_cp (bool): Gradient checkpointing. Default: False.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 feedforward_channels,
                 attn_path,
                 qkv_bias=True,
                 fc_bias=True,
                 drop_rate=0.,
                 drop_path_rate=0.,
                 kernel_conv=3,
                 rate_init=(0.5, 0.5),
                 act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN'),
                 with_cp=False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = TokenACmix(
            embed_dims,
            num_heads,
            attn_path=attn_path,
            kernel_conv=kernel_conv,
            qkv_bias=qkv_bias,
            fc_bias=fc_bias,
            rate_init=rate_init)
        self.drop_path = build_dropout(dict(type='DropPath', drop_prob=drop_path_rate))
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(
            embed_dims=embed_dims,
            feedforward_channels=feedforward_channels,
            num_fcs=2,
            ffn_drop=drop_rate,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            act_cfg=act_cfg)
        native_linears(self)  # oneDNN's products on the CPU (layers/linear.py)

    def mix(self, x, hw_shape):
        """The token mixer: norm, then ACmix."""
        return self.attn(self.norm1(x), hw_shape)

    def forward(self, x, hw_shape):

        def _inner_forward(x):
            x = x + self.drop_path(self.mix(x, hw_shape))
            return self.ffn(self.norm2(x), identity=x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)
