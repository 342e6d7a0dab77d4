"""Errors that name a problem in what the user asked for, and the fix."""


class ConfigError(ValueError):
    """A model argument or input that cannot work (unknown arch, unsupported option,
    too small an image); the tools print its message instead of a traceback."""
