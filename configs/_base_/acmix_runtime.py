# What every baseline adds to the library config it inherits, beside it in _base_ (a key
# of neither library's configs): acmix_mm registers the backbones and the runner that
# writes checkpoints atomically. The checkpoint count (default_hooks) must be set in the
# config itself: mmengine refuses a key that two bases both define.
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)
runner_type = 'AtomicCheckpointRunner'
