"""What tools/train.py and tools/test.py share: config loading, the library's scope
(mmdet, mmseg or mmpretrain), checks of the data paths, and errors a user can act on
(no tracebacks)."""
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

from .errors import AcmixError, UserError

# Errors the tools turn into one clear message and exit status 1.
USER_ERRORS = (AcmixError, )

# default_scope -> the task its configs are for (named in errors)
SCOPES = {
    'mmdet': 'detection',
    'mmseg': 'segmentation',
    'mmpretrain': 'ImageNet classification',
}


def _check_cfg_options(cfg, options):
    """Refuse --cfg-options whose parent keys do not exist (likely a typo).

    Top-level arguments of mmengine's Runner (``randomness``, ``env_cfg``, ...) may be
    set even when the config leaves them out.
    """
    import inspect

    from mmengine.runner import Runner
    # ``compile`` is read from the config by the runner, not passed to it.
    runner_keys = set(inspect.signature(Runner.__init__).parameters) | {'compile'}
    tree = cfg.to_dict()
    for dotted in options or {}:
        parts = dotted.split('.')
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
                    'config. Print the config (python -c "from mmengine import Config; '
                    'print(Config.fromfile(PATH).pretty_text)") to see its keys.')
        if len(parts) == 1 and parts[0] not in tree and parts[0] not in runner_keys:
            raise UserError(f'--cfg-options key {dotted!r} is not a top-level key of the '
                            'config.')


def _make_room_for_options(cfg, options):
    """Turn a None that an option sets a key under into an empty dict, so that e.g.
    ``model.backbone.init_cfg.checkpoint=...`` works where ``init_cfg=None`` (mmengine
    refuses to merge a dict into None)."""
    from mmengine.config import ConfigDict

    for dotted in options:
        node = cfg
        for part in dotted.split('.')[:-1]:
            if isinstance(node, (list, tuple)) and part.isdigit():
                node = node[int(part)]
                continue
            if not isinstance(node, (dict, Config)) or part not in node:
                break
            if node[part] is None:
                node[part] = ConfigDict()
            node = node[part]


def load_config(path, cfg_options=None):
    """Read a config file and apply ``--cfg-options``, with clear errors."""
    if not osp.isfile(path):
        raise UserError(f'Config file not found: {path}. Configs live under configs/, '
                        'e.g. configs/retinanet_pvt_acmix_t_1x.py.')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # noqa: BLE001 (anything wrong in the file, or its _base_)
        raise UserError(f'Cannot read config {path}: {type(err).__name__}: {err}') from err
    if cfg_options:
        _check_cfg_options(cfg, cfg_options)
        _make_room_for_options(cfg, cfg_options)
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as err:  # noqa: BLE001
            raise UserError(f'Cannot apply --cfg-options to {path}: {err}') from err
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        known = ', '.join(f'{k!r} ({v})' for k, v in SCOPES.items())
        raise UserError(f'{path} has default_scope={scope!r}; acmix_mm tools run '
                        f'configs of scope {known}.')
    return cfg


def set_launcher(cfg, launcher):
    """Record the launcher; without a GPU, distributed runs use gloo instead of nccl.

    mmengine's own set-up of a torchrun process selects a CUDA device, and its DDP
    wrapper passes one, so on CPU the process group is started here (the runner then
    leaves it as it is) and the model is wrapped by
    :class:`acmix_mm.runner.CPUDistributedDataParallel` (no device ids; SyncBN
    synchronised over gloo).
    """
    import torch
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    cfg.model_wrapper_cfg = dict(
        type='CPUDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False),
        device_ids=None)
    if launcher != 'pytorch':
        raise UserError(f'--launcher {launcher} without a GPU is not supported; use '
                        'tools/dist_train.sh (torchrun) on CPU machines.')
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def build_runner(cfg):
    """The config's runner (its ``runner_type``, else mmengine's ``Runner``), with the
    types of runner checkpoints allow-listed for the loading and saving it does."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .checkpoint import allow_runner_checkpoint_types
    allow_runner_checkpoint_types()
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def finish_distributed():
    """End a distributed run together: wait for every process, then close the group.

    A process that exits while another is still in a collective (the last evaluation
    gathers results) aborts in gloo's threads ("terminate called without an active
    exception", exit status -6), and torchrun reports the run as failed.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def init_scope(cfg):
    """Register the modules of the config's library (mmdet, mmseg or mmpretrain)."""
    import importlib

    from mmengine.registry import init_default_scope
    register_all_modules = importlib.import_module(
        f'{cfg.default_scope}.utils').register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.default_scope)


_LAYOUTS = {
    'mmdet': ('data/coco/\n  train2017/  val2017/  (images)\n  annotations/'
              'instances_train2017.json  annotations/instances_val2017.json'),
    'mmseg': ('data/ade/ADEChallengeData2016/\n  images/{training,validation}/*.jpg\n'
              '  annotations/{training,validation}/*.png'),
    'mmpretrain': ('data/imagenet/\n  train/<class>/*.JPEG  val/<class>/*.JPEG\n'
                   '  meta/train.txt  meta/val.txt  ("relative/path label" lines)'),
}


def _dataset_paths(dataset):
    """Files and folders a dataset config reads (following wrapper datasets)."""
    if 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
        return _dataset_paths(dataset['dataset'])
    if 'datasets' in dataset:  # ConcatDataset
        return [p for d in dataset['datasets'] for p in _dataset_paths(d)]
    root = dataset.get('data_root') or ''
    paths = [root] if root else []
    if dataset.get('ann_file'):
        paths.append(osp.join(root, dataset['ann_file']))
    prefixes = dataset.get('data_prefix') or {}
    if isinstance(prefixes, str):  # mmpretrain's datasets take one folder
        prefixes = dict(img_path=prefixes)
    if not prefixes and dataset.get('split'):  # mmpretrain's ImageNet: root/split/
        prefixes = dict(img_path=dataset['split'])
    for prefix in prefixes.values():
        if isinstance(prefix, str) and prefix:
            paths.append(osp.join(root, prefix))
    return paths


def _evaluator_paths(evaluator):
    """Annotation files an evaluator config reads (COCO's ``ann_file``)."""
    evaluators = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    return [e['ann_file'] for e in evaluators if isinstance(e, dict) and e.get('ann_file')]


def check_data(cfg, loaders):
    """Fail early, naming the missing path and the expected layout."""
    for loader in loaders:
        dataset = (cfg.get(loader) or {}).get('dataset')
        if not dataset:
            continue
        evaluator = loader.replace('_dataloader', '_evaluator')
        paths = [(loader, p) for p in _dataset_paths(dataset)]
        paths += [(evaluator, p) for p in _evaluator_paths(cfg.get(evaluator) or {})]
        for where, path in paths:
            if '://' not in path and not osp.exists(path):
                raise UserError(
                    f'{where}: {path} does not exist. Expected the standard layout\n'
                    f'{_LAYOUTS[cfg.default_scope]}\n(link your data there, or set '
                    "--cfg-options to another data_root). For the bundled demo data run "
                    '"python tools/make_demo_data.py" and use a config in configs/demo/.')


def add_common_args(parser):
    """The arguments train.py and test.py share, as mmdet's and mmseg's tools name them."""
    parser.add_argument('--work-dir', help='the dir to save logs, models and metrics')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value, e.g. '
        'train_cfg.max_epochs=1 model.backbone.with_cp=True')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def config_from_args(args):
    """Load ``args.config`` with the common arguments applied."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = load_config(args.config, args.cfg_options)
    set_launcher(cfg, args.launcher)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def data_error_message(err):
    """A one-line message for a data file that cannot be read, or None.

    mmcv's image loading fails with an assertion naming the file deep inside the data
    loader; the tools turn it into an error that says what to do.
    """
    while err is not None:
        text = str(err)
        if 'failed to load image:' in text:
            path = text.split('failed to load image:', 1)[1].strip()
            return (f'Cannot read image {path}: it is truncated or not an image. Replace '
                    'the file, or remove it from the annotation file.')
        empty = _empty_dataset(err)
        if empty is not None:
            return empty
        err = err.__cause__ or err.__context__
    return None


def _empty_dataset(err):
    """The message for a data set left without images (mmengine fails to serialise it)."""
    if 'need at least one array to concatenate' not in str(err):
        return None
    from mmengine.dataset import BaseDataset
    tb = err.__traceback__
    while tb is not None:
        dataset = tb.tb_frame.f_locals.get('self')
        if isinstance(dataset, BaseDataset):
            classes = tuple(dataset.metainfo.get('classes') or ())
            shown = ', '.join(classes[:5]) + (', ...' if len(classes) > 5 else '')
            return (f'The data set {dataset.ann_file} has no images left: none of its '
                    f'annotations is of the config\'s classes ({len(classes)}: {shown}), '
                    'or filter_cfg removed them all. Set the dataset\'s metainfo.classes '
                    'to the categories of the annotation file (and the head\'s '
                    'num_classes to their number).')
        tb = tb.tb_next
    return None


def run_with_clear_errors(body):
    """Run a tool's work; bad input ends with one line on stderr and exit status 1.

    Returns:
        int: the exit status (0 on success).
    """
    try:
        body()
    except USER_ERRORS as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    except Exception as err:  # a data file found unreadable mid-run
        message = data_error_message(err)
        if message is None:
            raise
        print(f'error: {message}', file=sys.stderr)
        return 1
    return 0
