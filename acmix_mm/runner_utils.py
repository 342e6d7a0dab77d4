"""What tools/train.py and tools/test.py share: config loading, the library's scope
(mmdet, mmseg or mmpretrain), checks of the data paths, and errors a user can act on
(no tracebacks)."""
import contextlib
import errno
import glob
import json
import os
import os.path as osp
import shutil
import signal
import socket
import sys
import tempfile

from mmengine.config import Config, DictAction

from .config_checks import check_cfg_options
from .errors import AcmixError, UserError

# Errors the tools turn into one clear message and exit status 1.
USER_ERRORS = (AcmixError, )

# default_scope -> the task its configs are for (named in errors)
SCOPES = {
    'mmdet': 'detection',
    'mmseg': 'segmentation',
    'mmpretrain': 'ImageNet classification',
}


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
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        known = ', '.join(f'{k!r} ({v})' for k, v in SCOPES.items())
        raise UserError(f'{path} has default_scope={scope!r}; acmix_mm tools run '
                        f'configs of scope {known}.')
    init_scope(cfg)  # the options are checked against the classes of its registries
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        _make_room_for_options(cfg, cfg_options)
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as err:  # noqa: BLE001
            raise UserError(f'Cannot apply --cfg-options to {path}: {err}') from err
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
    needs = {'pytorch': ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
             'slurm': ('SLURM_PROCID', 'SLURM_NTASKS')}.get(launcher, ())
    unset = [name for name in needs if name not in os.environ]
    if unset:
        starter = 'torchrun (tools/dist_train.sh CONFIG GPUS)' if launcher == 'pytorch' \
            else 'srun (tools/slurm_train.sh)'
        raise UserError(f'--launcher {launcher}: {", ".join(unset)} not set; start the '
                        f'processes with {starter}, or drop --launcher for one process.')
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
    types of runner checkpoints allow-listed for the loading and saving it does. Without
    a GPU, large freed blocks are kept for reuse first (:mod:`acmix_mm.cpu_memory`)."""
    import torch
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .checkpoint import allow_runner_checkpoint_types
    from .cpu_memory import REUSE_MESSAGE, reuse_freed_memory
    reusing = not torch.cuda.is_available() and reuse_freed_memory()
    allow_runner_checkpoint_types()
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if reusing:
        runner.logger.info(REUSE_MESSAGE)
    return runner


def finish_distributed():
    """End a distributed run together: wait for every process, close the group, and
    free it while the interpreter is whole.

    A process that exits while another is still in a collective (the last evaluation
    gathers results) aborts in gloo's threads ("terminate called without an active
    exception", exit status -6), and torchrun reports the run as failed. So does one
    whose group outlives ``destroy_process_group``: the runner's distributed wrapper
    holds it inside reference cycles, and gloo's threads then end during the
    interpreter's teardown (2 of 99 runs of tools/dist_test.sh). Call this once the runner is
    released; collecting the cycles joins those threads here.
    """
    import gc

    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


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


def _meta_file(dataset):
    """The "relative/path label" list an mmpretrain ImageNet-style data set reads, or
    None (folder mode, or another data set)."""
    if 'dataset' in dataset:
        return _meta_file(dataset['dataset'])
    root = dataset.get('data_root') or ''
    ann_file = dataset.get('ann_file') or (
        osp.join('meta', f'{dataset["split"]}.txt') if dataset.get('split') else None)
    if not ann_file or not ann_file.endswith('.txt'):
        return None
    path = osp.join(root, ann_file)
    return path if osp.isfile(path) else None


def check_meta_file(path, num_classes):
    """Refuse a meta file line that is not "relative/path label" with an integer label
    below ``num_classes``, naming the line (mmpretrain fails on it without saying
    where, or trains on a label past its classes)."""
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(' ', 1)
            problem = None
            if len(parts) != 2:
                problem = 'has no label'
            elif not parts[1].lstrip('-').isdigit():
                problem = f'has the label {parts[1]!r}, not an integer'
            elif num_classes is not None and not 0 <= int(parts[1]) < num_classes:
                problem = (f'has the label {parts[1]}, outside the {num_classes} classes '
                           f'(0..{num_classes - 1})')
            if problem:
                raise UserError(f'{path} line {number} ({line!r}) {problem}: each line is '
                                '"relative/path label". Fix or remove the line.')


def check_data(cfg, loaders):
    """Fail early, naming the missing path and the expected layout, and the bad line
    of an ImageNet meta file."""
    for loader in loaders:
        dataset = (cfg.get(loader) or {}).get('dataset')
        if not dataset:
            continue
        meta = _meta_file(dataset) if cfg.default_scope == 'mmpretrain' else None
        if meta is not None:
            check_meta_file(meta, ((cfg.get('model') or {}).get('head') or {}).get(
                'num_classes'))
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


def check_input_shape(shape, flag='--shape'):
    """Refuse an input size the backbones cannot take: they downsample by 32."""
    if shape is not None and min(shape) < 32:
        raise UserError(f'{flag} {" ".join(map(str, shape))}: every backbone downsamples '
                        'by 32, so use sides of at least 32 (e.g. --shape 512 512).')


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
        if isinstance(err, json.JSONDecodeError):
            dataset = _dataset_in_traceback(err)
            where = dataset.ann_file if dataset is not None else 'An annotation file'
            return (f'Cannot parse {where}: it is not valid JSON ({err.msg} at line '
                    f'{err.lineno}, column {err.colno}); it may be truncated. Download or '
                    'write it again.')
        if 'failed to load image:' in text:
            path = text.split('failed to load image:', 1)[1].strip()
            return (f'Cannot read image {path}: it is truncated or not an image. Replace '
                    'the file, or remove it from the annotation file.')
        empty = _empty_dataset(err)
        if empty is not None:
            return empty
        err = err.__cause__ or err.__context__
    return None


def _dataset_in_traceback(err):
    """The data set whose method raised ``err``, or None."""
    from mmengine.dataset import BaseDataset
    tb = err.__traceback__
    while tb is not None:
        dataset = tb.tb_frame.f_locals.get('self')
        if isinstance(dataset, BaseDataset):
            return dataset
        tb = tb.tb_next
    return None


def _coco_keys_missing(ann_file):
    """The required top-level keys a COCO-style annotation file lacks."""
    if not str(ann_file).endswith('.json') or not osp.isfile(ann_file):
        return []
    try:
        with open(ann_file) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(content, dict):
        return ['images', 'annotations', 'categories']
    return [k for k in ('images', 'annotations', 'categories') if not content.get(k)]


def _empty_dataset(err):
    """The message for a data set left without images (mmengine fails to serialise it)."""
    if 'need at least one array to concatenate' not in str(err):
        return None
    dataset = _dataset_in_traceback(err)
    if dataset is not None:
        missing = _coco_keys_missing(dataset.ann_file)
        if missing:
            return (f'The annotation file {dataset.ann_file} has no '
                    f'{", no ".join(repr(k) for k in missing)} list: a COCO-style file '
                    "holds 'images', 'annotations' and 'categories'. Check that it is "
                    'the right file, or write it again.')
        classes = tuple(dataset.metainfo.get('classes') or ())
        shown = ', '.join(classes[:5]) + (', ...' if len(classes) > 5 else '')
        return (f'The data set {dataset.ann_file} has no images left: none of its '
                f'annotations is of the config\'s classes ({len(classes)}: {shown}), '
                'or filter_cfg removed them all. Set the dataset\'s metainfo.classes '
                'to the categories of the annotation file (and the head\'s '
                'num_classes to their number).')
    return None


class Interrupted(AcmixError):
    """Training stopped by Ctrl-C or SIGTERM (exit status 128 + the signal)."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_status = 128 + signum


def _process_rank():
    """This process's rank before the process group exists (torchrun, Slurm)."""
    return int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', 0)))


@contextlib.contextmanager
def claim_work_dir(work_dir):
    """Hold ``work_dir`` for one training run.

    Refuses a work dir that another live run holds (two runs would overwrite each
    other's checkpoints and logs), one that cannot be written, and removes the
    ``.*.partial`` files a killed run left behind (no live run writes them).
    """
    if _process_rank() != 0:
        yield
        return
    try:
        os.makedirs(work_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix='.write_test'):
            pass
    except OSError as err:
        raise UserError(f'Cannot write to the work dir {work_dir}: {err.strerror} (errno '
                        f'{err.errno}). Pass a writable --work-dir.') from None
    lock = osp.join(work_dir, '.train.lock')
    owner = _lock_owner(lock)
    if owner is not None:
        raise UserError(f'The work dir {work_dir} is in use by a running training '
                        f'(pid {owner}, see {lock}). Pass another --work-dir, or stop that '
                        'run first.')
    with open(lock, 'w') as f:
        f.write(f'{os.getpid()} {socket.gethostname()}\n')
    for stale in glob.glob(osp.join(work_dir, '.*.partial')):
        os.remove(stale)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)


def _lock_owner(lock):
    """The pid of the live process that holds ``lock`` on this host, else None."""
    try:
        with open(lock) as f:
            pid, host = f.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname() or pid == os.getpid():
        return None  # another machine's lock on a shared disk cannot be checked here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return pid


def check_free_space(runner):
    """Refuse to start when the work dir cannot hold one more checkpoint of the model
    (weights and, at most, two optimizer states per weight)."""
    if _process_rank() != 0:
        return
    model = getattr(runner.model, 'module', runner.model)
    needed = 3 * sum(t.numel() * t.element_size() for t in model.state_dict().values())
    free = shutil.disk_usage(runner.work_dir).free
    if free < needed:
        raise UserError(f'The disk of the work dir {runner.work_dir} has {free / 2**20:.0f} '
                        f'MB free; a checkpoint of this model needs up to {needed / 2**20:.0f}'
                        ' MB. Free space or pass another --work-dir.')


@contextlib.contextmanager
def stop_signals_end_cleanly(work_dir):
    """Ctrl-C and SIGTERM end training with one line naming the last good checkpoint.

    SIGTERM (what schedulers and ``kill`` send) is raised as an interrupt, so a save in
    progress removes its partial file and no traceback is printed.
    """
    from .runner import last_good_checkpoint

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    except KeyboardInterrupt as err:
        signum = err.args[0] if err.args else signal.SIGINT
        name = 'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'
        raise Interrupted(f'training stopped by {name}; the last good checkpoint is '
                          f'{last_good_checkpoint(work_dir)} (continue with --resume).',
                          signum) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(err):
    """The message of ``err``; for an error re-raised from a data loader worker (its
    text then holds the worker's traceback), the original message."""
    text = str(err)
    if 'Original Traceback' in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(': ', 1)[1] if ': ' in last else last
    return text


def run_with_clear_errors(body):
    """Run a tool's work; bad input ends with one line on stderr and exit status 1
    (128 + the signal for Ctrl-C and SIGTERM). A distributed run that succeeded ends
    with :func:`finish_distributed` once the work (and its runner) is released.

    Returns:
        int: the exit status (0 on success).
    """
    try:
        body()
        finish_distributed()
    except USER_ERRORS as err:
        print(f'error: {_one_line(err)}', file=sys.stderr)
        return getattr(err, 'exit_status', 1)
    except KeyboardInterrupt:
        print('error: stopped by Ctrl-C.', file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as err:  # a path of the user's: full disk, read-only, missing folder
        if err.filename is None and err.errno not in (errno.ENOSPC, errno.EROFS,
                                                      errno.EACCES, errno.EDQUOT):
            raise
        print(f'error: {err.filename or "a file"}: {err.strerror} (errno {err.errno}). '
              'Check the path, its permissions and the free space.', file=sys.stderr)
        return 1
    except Exception as err:  # a data file found unreadable mid-run
        message = data_error_message(err)
        if message is None:
            raise
        print(f'error: {message}', file=sys.stderr)
        return 1
    return 0
