from .attnet import AttNet, attnet_official_to_ours
from .base import OFFICIAL_LAYOUTS
from .pvt_acmix import PVTACmix, pvt_official_to_acmix
from .resnet_acmix import ResNetACmix, resnet_official_to_acmix
from .san_acmix import SAN, SANACmix, san_official_to_acmix
from .swin_acmix import SwinACmix, swin_official_to_acmix

__all__ = [
    'AttNet', 'attnet_official_to_ours', 'OFFICIAL_LAYOUTS', 'PVTACmix', 'pvt_official_to_acmix',
    'ResNetACmix', 'resnet_official_to_acmix', 'SAN', 'SANACmix',
    'san_official_to_acmix', 'SwinACmix', 'swin_official_to_acmix'
]
