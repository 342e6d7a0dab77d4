"""The version of acmix_mm, in one place: ``acmix_mm.__version__`` and setup.py read it."""
__version__ = '0.1.0'
