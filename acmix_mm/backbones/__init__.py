from .pvt_acmix import PVTACmix, pvt_official_to_acmix

__all__ = ['PVTACmix', 'pvt_official_to_acmix']
