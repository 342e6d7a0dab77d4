"""Checks of a config and its ``--cfg-options`` before anything runs.

mmengine merges any key into a config: a typo in an argument name reaches the class
that takes it only when it is built (a hook at the first save, the model after data
loading), and a value of the wrong type fails deep inside. Here every option is checked
against the config and against the arguments of the class its dict builds (its
``type``, looked up in the libraries' registries), and the schedule against the run's
length.
"""
import difflib
import inspect
import sys

from .errors import UserError

# Where a class's **kwargs go when not to a base class: mmengine's CheckpointHook hands
# them to Runner.save_checkpoint.
_KWARGS_TARGETS = {'CheckpointHook': ('mmengine.runner', 'Runner', 'save_checkpoint')}


def _registries():
    from mmengine import registry
    return [getattr(registry, name) for name in dir(registry)
            if isinstance(getattr(registry, name), registry.Registry)]


def _build_target(type_):
    """The class or function a config ``type`` names, in the current default scope."""
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    for root in _registries():
        try:
            # the child registry of the default scope (mmdet's, ...), which also
            # searches its parents
            with root.switch_scope_and_registry(None) as registry:
                found = registry.get(type_)
        except Exception:  # noqa: BLE001 (a scope that is not installed)
            found = None
        if found is not None:
            return found
    return None


def _params(func):
    try:
        return inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None


def accepted_arguments(target):
    """Argument names of a class (following ``**kwargs`` up its bases) or function,
    with their defaults; None where any name may be accepted."""
    if not inspect.isclass(target):
        params = _params(target)
        if params is None or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return None
        return {n: p.default for n, p in params.items()}
    names = {}
    for klass in target.__mro__:
        if klass is object:
            return names
        if '__init__' not in klass.__dict__:
            continue
        params = _params(klass.__dict__['__init__'])
        if params is None:
            return None
        names.update({n: p.default for n, p in params.items()
                      if n != 'self' and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                      and n not in names})
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names
        forward = _KWARGS_TARGETS.get(klass.__name__)
        if forward is not None:
            import importlib
            owner = getattr(importlib.import_module(forward[0]), forward[1])
            more = accepted_arguments(getattr(owner, forward[2]))
            return None if more is None else {**more, **names}
    return names


def _kind(value):
    if isinstance(value, bool):
        return bool, 'a boolean (True or False)'
    if isinstance(value, int):
        return int, 'an integer'
    if isinstance(value, float):
        return float, 'a number'
    return None, None


def _check_value(dotted, old, new):
    """Refuse a string where the config (or the argument's default) holds a number or
    a boolean, and a fraction or boolean where it holds an integer."""
    kind, name = _kind(old)
    if kind is None or new is None:
        return
    ok = (isinstance(new, bool) if kind is bool else
          isinstance(new, (int, float)) and not isinstance(new, bool) and
          (kind is float or isinstance(new, int)))
    if not ok:
        raise UserError(f'--cfg-options {dotted}={new!r}: {dotted} expects {name} (the '
                        f'config has {old!r}).')


def check_cfg_options(cfg, options):
    """Refuse ``--cfg-options`` that the config cannot take: a key whose parent is not
    in the config, a key the class of its dict does not accept (naming the closest
    valid ones), a value of the wrong type.

    Top-level arguments of mmengine's Runner (``randomness``, ``env_cfg``, ...) may be
    set even when the config leaves them out. Call with the library's scope set.
    """
    from mmengine.runner import Runner
    # ``compile`` and ``truncated_images`` (acmix_mm's) are read from the config by the
    # runner, not passed to it.
    runner_keys = set(inspect.signature(Runner.__init__).parameters) | {
        'compile', 'truncated_images'}
    tree = cfg.to_dict()
    for dotted, value in (options or {}).items():
        parts = dotted.split('.')
        if len(parts) == 1:
            if parts[0] not in tree and parts[0] not in runner_keys:
                raise UserError(f'--cfg-options key {dotted!r} is not a top-level key of '
                                f'the config{_closest(parts[0], tree)}.')
            _check_value(dotted, tree.get(parts[0]), value)
            continue
        if parts[0] in runner_keys and parts[0] not in tree:
            continue
        node, path = tree, []
        for part in parts[:-1]:
            path.append(part)
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
                if node is None:  # a dict may take the place of None (init_cfg=None)
                    break
            else:
                raise UserError(
                    f'--cfg-options key {dotted!r}: {".".join(path)!r} is not in the '
                    f'config{_closest(part, node)}. Print the config (python -c "from '
                    'mmengine import Config; print(Config.fromfile(PATH).pretty_text)") '
                    'to see its keys.')
        else:
            _check_leaf(dotted, parts[-1], node, value)


def _closest(name, node):
    if not isinstance(node, dict):
        return ''
    near = difflib.get_close_matches(name, [str(k) for k in node], n=3, cutoff=0.6)
    return f' (did you mean {", ".join(near)}?)' if near else ''


def _check_leaf(dotted, leaf, node, value):
    if not isinstance(node, dict):
        return
    if leaf in node:
        _check_value(dotted, node[leaf], value)
        return
    if 'type' not in node:
        return  # a plain dict (metainfo, env_cfg, ...) may take new keys
    target = _build_target(node['type'])
    accepted = None if target is None else accepted_arguments(target)
    if accepted is None:
        return
    if leaf in accepted:
        default = accepted[leaf]
        _check_value(dotted, None if default is inspect.Parameter.empty else default,
                     value)
        return
    name = getattr(target, '__name__', str(node['type']))
    near = difflib.get_close_matches(leaf, list(accepted) + list(node), n=3, cutoff=0.6)
    hint = f'did you mean {", ".join(near)}?' if near else (
        f'it takes: {", ".join(sorted(accepted))}')
    raise UserError(f'--cfg-options key {dotted!r}: {name} has no argument {leaf!r} '
                    f'({hint})')


def check_schedule(cfg):
    """Refuse a parameter schedule with a phase whose end defaults to the run's and that
    begins after the run ends (mmengine fails with 'end should be larger than begin');
    warn where a phase begins or ends past the run."""
    loop = cfg.get('train_cfg') or {}
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    if 'max_epochs' in loop:
        length, key, unit_by_epoch = loop['max_epochs'], 'train_cfg.max_epochs', True
    elif 'max_iters' in loop:
        length, key, unit_by_epoch = loop['max_iters'], 'train_cfg.max_iters', False
    else:
        return
    unit = 'epoch' if unit_by_epoch else 'iteration'
    for i, phase in enumerate(schedulers):
        if not isinstance(phase, dict) or phase.get('by_epoch', True) != unit_by_epoch:
            continue  # counted in another unit; its length depends on the data
        begin, end = phase.get('begin', 0), phase.get('end', length)
        if begin >= length and 'end' in phase and phase['end'] > begin:
            # mmengine accepts it; the phase never runs (a shortened smoke run)
            print(f'warning: param_scheduler.{i} ({phase.get("type")}) begins at {unit} '
                  f'{begin}, after the run ({key}={length}): it never runs.',
                  file=sys.stderr)
        elif begin >= length:  # its end defaults to the run's: mmengine fails on it
            earlier = [j for j, p in enumerate(schedulers[:i])
                       if isinstance(p, dict) and p.get('end', 0) >= begin]
            fix = f'set param_scheduler.{i}.begin below {length}'
            if earlier:
                half = max(length // 2, 1)
                fix = (f'the phases before it (param_scheduler.{earlier[0]} ends at {unit} '
                       f'{schedulers[earlier[0]]["end"]}) are longer than the run; shorten '
                       f'both, e.g. --cfg-options param_scheduler.{earlier[0]}.end={half} '
                       f'param_scheduler.{i}.begin={half}')
            raise UserError(f'param_scheduler.{i} ({phase.get("type")}) begins at {unit} '
                            f'{begin}, but the run ends at {key}={length}: {fix}.')
        elif end > length and end != float('inf'):
            print(f'warning: param_scheduler.{i} ({phase.get("type")}) ends at {unit} {end}, '
                  f'after the run ({key}={length}): it stops part way.', file=sys.stderr)
