"""The errors acmix_mm raises for a problem in what the user asked for, each naming the
problem and the fix. The tools print the message as one line and exit with status 1
(:func:`acmix_mm.runner_utils.run_with_clear_errors`)."""


class AcmixError(Exception):
    """Base of every error that names a problem in the user's input and its fix."""


class ConfigError(AcmixError, ValueError):
    """A model argument or input that cannot work (unknown arch, unsupported option,
    too small an image)."""


class UserError(AcmixError, RuntimeError):
    """A problem in a tool's arguments, a config file or the data paths."""


class CheckpointError(AcmixError, RuntimeError):
    """A checkpoint that cannot be used (missing, truncated, unsafe, of another
    model)."""


class DataError(AcmixError, RuntimeError):
    """A data file that cannot be used (missing, empty, truncated, out-of-range
    labels, an annotation or meta file that does not parse)."""
