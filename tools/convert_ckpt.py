"""Convert an official ImageNet checkpoint to the acmix_mm backbone layout.

    python tools/convert_ckpt.py SRC DST

Detects the layout of SRC: the official Swin-ACmix release (LeapLabTHU/ACmix,
``{'model': ...}``) or official Swin (microsoft/Swin-Transformer) -> SwinACmix; the
official ResNet-ACmix state dict -> ResNetACmix; official PVT v1 (whai362/PVT) ->
PVTACmix; official patchwise SAN (hszhao/SAN) -> SAN, and SANACmix (whose convolution
paths then start from their shift kernels); official AttNet
(price112/Attentive-Convolution, ``{'model': ...}``) -> AttNet. DST holds
``{'state_dict': ..., 'meta': ...}`` and loads with
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` (the official files load there
directly too, converted on load). Every official tensor is either converted or listed
with the reason it is left out.
"""
import argparse
import os.path as osp
import sys

from acmix_mm.backbones import OFFICIAL_LAYOUTS  # each registered beside its backbone
from acmix_mm.checkpoint import (
    CheckpointError,
    extract_state_dict,
    load_checkpoint_file,
    save_atomic,
)
from acmix_mm.runner_utils import run_with_clear_errors


def convert(state_dict):
    """Returns (layout name, backbone type, converted state dict, discarded list)."""
    for layout in OFFICIAL_LAYOUTS.values():
        if layout.detect(state_dict):
            converted, discarded = layout.convert(state_dict)
            return layout.name, layout.backbone, converted, discarded
    sample = ', '.join(list(state_dict)[:5])
    raise CheckpointError(
        f'Unrecognised checkpoint layout (first keys: {sample}). Supported: ' +
        '; '.join(OFFICIAL_LAYOUTS) + '. A checkpoint written by acmix_mm needs no '
        'conversion.')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint (path)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    args = parser.parse_args(argv)
    return run_with_clear_errors(lambda: convert_file(args.src, args.dst))


def convert_file(src, dst):
    """Convert the official checkpoint ``src`` into ``dst`` and say what was done."""
    if osp.abspath(src) == osp.abspath(dst):
        raise CheckpointError('SRC and DST are the same file; choose another DST so '
                              'that the original is kept.')
    state_dict = extract_state_dict(load_checkpoint_file(src))
    name, backbone, converted, discarded = convert(state_dict)
    save_atomic(
        dict(
            state_dict=converted,
            meta=dict(converted_from=osp.basename(src), layout=name, backbone=backbone,
                      left_out=discarded)), dst)
    print(f'{src}: {name} layout, {len(state_dict)} tensors')
    print(f'wrote {dst}: {len(converted)} tensors for {backbone}')
    if discarded:
        print(f'left out ({len(discarded)}):')
        for line in discarded:
            print(f'  {line}')

if __name__ == '__main__':
    sys.exit(main())
