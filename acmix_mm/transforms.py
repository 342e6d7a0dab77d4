"""Data loading that names a bad file instead of using it silently.

:class:`~acmix_mm.runner.AtomicCheckpointRunner` puts these in place of the libraries'
loading transforms in every pipeline it builds, so the paper's configs get them as
they are.
"""
import os
import os.path as osp

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log

from .errors import DataError

# How files of each format (known by their first bytes) end when complete. Entropy-coded
# JPEG data cannot hold the end marker FF D9 (a data byte FF is followed by 00), so its
# absence from the tail means the file was cut; the tail allows for bytes some writers
# add after it.
_ENDINGS = {b'\xff\xd8': b'\xff\xd9', b'\x89PNG': b'IEND\xaeB`\x82'}
_TAIL = 4096


def _missing_ending(path, size):
    """The ending a JPEG or PNG file lacks, or None when it has it (or is of another
    format, which the decoder judges)."""
    with open(path, 'rb') as f:
        head = f.read(4)
        for magic, ending in _ENDINGS.items():
            if head.startswith(magic):
                f.seek(max(size - _TAIL, 0))
                return None if ending in f.read() else ending
    return None


class CheckedLoadImageFromFile(LoadImageFromFile):
    """:class:`mmcv.transforms.LoadImageFromFile` that refuses a missing, empty or
    truncated image file, naming it.

    OpenCV decodes a JPEG cut short with its missing rows black and only a note on
    stderr, so a damaged data set trains and evaluates on partly black images.

    Args:
        on_truncated (str): 'error' stops at a truncated JPEG or PNG; 'warn' logs the
            file and the count so far and uses the image as decoded. The config's
            top-level ``truncated_images`` sets it. Default: 'error'.
        **kwargs: Arguments of :class:`mmcv.transforms.LoadImageFromFile`.
    """

    def __init__(self, on_truncated='error', **kwargs):
        super().__init__(**kwargs)
        if on_truncated not in ('error', 'warn'):
            raise DataError(f"truncated_images={on_truncated!r}: use 'error' or 'warn'.")
        self.on_truncated = on_truncated
        self.truncated_count = 0

    def transform(self, results):
        path = results['img_path']
        if '://' not in str(path) and not self.ignore_empty:
            self.check_file(path)
        return super().transform(results)

    def check_file(self, path):
        """Raise :class:`DataError` for a missing, empty or (by ``on_truncated``)
        truncated image file."""
        if not osp.isfile(path):
            raise DataError(f'Image not found: {path}. Restore the file, or remove it '
                            'from the annotation (or meta) file.')
        size = os.stat(path).st_size
        if size == 0:
            raise DataError(f'Image {path} is empty (0 bytes). Restore the file, or '
                            'remove it from the annotation (or meta) file.')
        ending = _missing_ending(path, size)
        if ending is None:
            return
        if self.on_truncated == 'error':
            raise DataError(f'Image {path} is truncated (it lacks its end marker '
                            f'{ending.hex(" ")}). Restore the file, or set '
                            "truncated_images='warn' in the config to use it as decoded.")
        self.truncated_count += 1
        print_log(f'Image {path} is truncated; used as decoded (truncated images so '
                  f'far in this process: {self.truncated_count}).', logger='current',
                  level=30)


try:  # mmseg is optional for detection users
    from mmseg.datasets.transforms import LoadAnnotations
except ImportError:
    LoadAnnotations = None

if LoadAnnotations is not None:

    class CheckedLoadSegAnnotations(LoadAnnotations):
        """mmseg's ``LoadAnnotations`` that reads 16-bit label maps as they are (mmseg
        casts them to 8 bits: a label 300 is read as 44) and refuses labels outside
        the classes and the ignore index, naming the file (mmseg's loss fails with an
        IndexError naming none, and its IoU metric drops them silently).

        Args:
            num_classes (int): Labels must be below this, or the ignore index.
            ignore_index (int): The label that marks pixels to ignore. Default: 255.
            **kwargs: Arguments of mmseg's ``LoadAnnotations``.
        """

        def __init__(self, num_classes, ignore_index=255, **kwargs):
            super().__init__(**kwargs)
            self.num_classes, self.ignore_index = num_classes, ignore_index

        def _load_seg_map(self, results):
            import mmcv
            from mmengine import fileio
            path = results['seg_map_path']
            raw = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args),
                                   flag='unchanged', backend=self.imdecode_backend)
            if raw is None:
                raise DataError(f'Cannot read label map {path}: it is truncated or not an '
                                'image. Replace the file.')
            raw = raw.squeeze()
            if raw.ndim != 2:
                raise DataError(f'Label map {path} has {raw.shape[-1]} channels; label '
                                'maps hold one class index per pixel.')
            # uint8 and uint16 are what OpenCV's nearest resizing takes.
            seg = raw.astype(np.uint8 if raw.max(initial=0) < 256 else np.uint16)
            if self.reduce_zero_label is None:
                self.reduce_zero_label = results['reduce_zero_label']
            if self.reduce_zero_label:  # 0 (other) and 255 -> ignored, the rest one down
                ignored = (seg == 0) | (seg == 255)
                seg = seg.astype(np.int64) - 1
                seg[ignored] = self.ignore_index
                seg = seg.astype(np.uint8 if seg.max(initial=0) < 256 else np.uint16)
            if results.get('label_map') is not None:
                mapped = seg.copy()
                for old_id, new_id in results['label_map'].items():
                    mapped[seg == old_id] = new_id
                seg = mapped
            bad = (seg >= self.num_classes) & (seg != self.ignore_index)
            if bad.any():
                values = np.unique(raw[bad])
                shown = ', '.join(str(v) for v in values[:8])
                raise DataError(
                    f'Label map {path} holds labels outside the {self.num_classes} '
                    f'classes and the ignore index {self.ignore_index} (values in the '
                    f'file: {shown}{", ..." if len(values) > 8 else ""}'
                    f'{"; reduce_zero_label is on" if self.reduce_zero_label else ""}). '
                    "Fix the file, or the config's num_classes.")
            results['gt_seg_map'] = seg
            results['seg_fields'].append('gt_seg_map')


def check_pipelines(loader_cfg, truncated_images='error', seg_classes=None,
                    ignore_index=255):
    """A copy of a dataloader config whose pipelines load images (and mmseg's label
    maps, when ``seg_classes`` is given) through the checked transforms."""
    import copy
    loader_cfg = copy.deepcopy(loader_cfg)
    seg_loader = CheckedLoadSegAnnotations if seg_classes is not None else None

    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'pipeline' and isinstance(value, list):
                    node[key] = [swap(t) for t in value]
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    def swap(transform):
        if not isinstance(transform, dict):
            return transform
        if transform.get('type') in ('LoadImageFromFile', LoadImageFromFile):
            return dict(transform, type=CheckedLoadImageFromFile,
                        on_truncated=truncated_images)
        if seg_loader is not None and transform.get('type') == 'LoadAnnotations':
            return dict(transform, type=seg_loader, num_classes=seg_classes,
                        ignore_index=ignore_index)
        visit(transform)  # TestTimeAug holds lists of transforms
        return transform

    visit(loader_cfg)
    return loader_cfg
