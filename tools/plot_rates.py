"""Plot the ACmix rates alpha and beta of every layer, as Figure 5 of the ACmix paper.

    python tools/plot_rates.py CKPT [CKPT ...] --out rates.png [--labels A B ...]

Reads checkpoints of ACmix models (a backbone, or a detector or segmentor holding it
under ``backbone.``; our layout with ``.alpha``/``.beta`` or the official one with
``.rate1``/``.rate2``) and draws, per ACmix layer in network order, |alpha|, |beta|
and log(|alpha / beta|) (natural logarithm) in three panels sharing the x axis, one
line per checkpoint. alpha weighs the self-attention path and beta the convolution
path of ``alpha * attention + beta * convolution``, so log(|alpha / beta|) > 0 means
that a layer leans towards self-attention. The values are also printed as a table.
Where beta (or alpha) is 0 the logarithm is undefined: the point is left out of the
plot (a gap) and noted in the table.
"""
import argparse
import math
import os.path as osp
import sys
from collections import OrderedDict

import torch
from mmengine.logging import MMLogger

import acmix_mm  # noqa: F401  (registers the types our runner checkpoints hold)
from acmix_mm.checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file
from acmix_mm.fileio import atomic_output
from acmix_mm.runner_utils import UserError, run_with_clear_errors

# Name endings of (alpha, beta): ours, and the official ACmix release's.
RATE_SUFFIXES = (('.alpha', '.beta'), ('.rate1', '.rate2'))


def _scalar(name, value):
    """The float of a one-element rate tensor.

    Raises:
        CheckpointError: if the tensor holds more than one value.
    """
    if value.numel() != 1:
        raise CheckpointError(
            f'{name} has shape {tuple(value.shape)}; an ACmix rate is a single value.')
    return float(value.detach().float().reshape(-1)[0])


def find_rates(state_dict, source):
    """The ACmix rates of a state dict, in its order (network order).

    Args:
        state_dict (dict): Backbone weights, e.g. from ``extract_state_dict``.
        source (str): The checkpoint's name, for error messages.

    Returns:
        list[tuple[str, float, float]]: ``(layer, alpha, beta)`` per ACmix layer, the
        layer named by the common prefix of its two rates.

    Raises:
        CheckpointError: if there are no rates, or an alpha without its beta (or the
            other way round).
    """
    layers = OrderedDict()  # prefix -> {'alpha': value, 'beta': value}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        for suffixes in RATE_SUFFIXES:
            for which, suffix in zip(('alpha', 'beta'), suffixes):
                if name.endswith(suffix):
                    prefix = name[:-len(suffix)]
                    layers.setdefault(prefix, {})[which] = _scalar(name, value)
    if not layers:
        raise CheckpointError(
            f'no ACmix alpha/beta found in {source}; is it an ACmix model?')
    unpaired = [f'{prefix} (only {", ".join(rates)})'
                for prefix, rates in layers.items() if len(rates) != 2]
    if unpaired:
        raise CheckpointError(
            f'{source}: ACmix rates without their partner: ' + '; '.join(unpaired))
    return [(prefix, rates['alpha'], rates['beta']) for prefix, rates in layers.items()]


def log_ratio(alpha, beta):
    """``(log(|alpha / beta|), note)``; NaN with a note where it is undefined."""
    if beta == 0 and alpha == 0:
        return math.nan, 'alpha = beta = 0: log undefined'
    if beta == 0:
        return math.nan, 'beta = 0: log undefined'
    if alpha == 0:
        return math.nan, 'alpha = 0: log undefined'
    return math.log(abs(alpha / beta)), ''


def format_table(label, rates):
    """A text table of one checkpoint's rates.

    Args:
        label (str): Title line.
        rates (list[tuple[str, float, float]]): As returned by ``find_rates``.

    Returns:
        str: The table.
    """
    width = max(len('layer'), *(len(name) for name, _, _ in rates))
    lines = [f'{label}: {len(rates)} ACmix layers',
             f'  {"#":>3}  {"layer":<{width}}  {"alpha":>10}  {"beta":>10}  '
             f'{"log|a/b|":>10}']
    for index, (name, alpha, beta) in enumerate(rates, 1):
        ratio, note = log_ratio(alpha, beta)
        ratio_text = 'nan' if math.isnan(ratio) else f'{ratio:.4f}'
        line = (f'  {index:>3}  {name:<{width}}  {alpha:>10.6g}  {beta:>10.6g}  '
                f'{ratio_text:>10}')
        lines.append(f'{line}  ({note})' if note else line)
    return '\n'.join(lines)


def plot(curves, out):
    """Draw |alpha|, |beta| and log(|alpha / beta|) per layer into a PNG.

    Args:
        curves (list[tuple[str, list]]): ``(label, rates)`` per checkpoint, ``rates``
            as returned by ``find_rates``.
        out (str): The PNG to write; written to a temporary file beside it first and
            then renamed, so that a failure leaves any earlier file intact.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    num_layers = max(len(rates) for _, rates in curves)
    fig, axes = plt.subplots(3, 1, sharex=True,
                             figsize=(max(6.0, 0.4 * num_layers + 2.0), 8.0))
    panels = ((r'$|\alpha|$', lambda a, b: abs(a)),
              (r'$|\beta|$', lambda a, b: abs(b)),
              (r'$\log(|\alpha / \beta|)$', lambda a, b: log_ratio(a, b)[0]))
    for ax, (title, value) in zip(axes, panels):
        for label, rates in curves:
            xs = list(range(1, len(rates) + 1))
            ax.plot(xs, [value(a, b) for _, a, b in rates], marker='o',
                    markersize=4, label=label)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[2].axhline(0.0, color='gray', linewidth=0.8)
    axes[2].set_xlabel('layer')
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize='small')
    fig.tight_layout()

    try:
        with atomic_output(out) as partial:
            fig.savefig(partial, format='png', dpi=150)
    finally:
        plt.close(fig)


def default_labels(paths):
    """File names, or the paths as given where two file names are the same."""
    names = [osp.basename(p) for p in paths]
    return names if len(set(names)) == len(names) else list(paths)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoints', nargs='+', metavar='CKPT',
                        help='checkpoints of ACmix models (one line each)')
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--labels', nargs='+', metavar='LABEL',
                        help='legend entries, one per checkpoint (default: file names)')
    args = parser.parse_args(argv)
    # Keep mmengine's 'Loads checkpoint by ...' lines out of the table.
    MMLogger.get_instance('plot_rates', log_level='WARNING')
    return run_with_clear_errors(lambda: plot_checkpoints(args))


def plot_checkpoints(args):
    """Print the table of every checkpoint's rates and draw them into ``args.out``."""
    if args.labels is not None and len(args.labels) != len(args.checkpoints):
        raise UserError(
            f'{len(args.labels)} labels for {len(args.checkpoints)} checkpoints; '
            'give one label per checkpoint or none.')
    out_dir = osp.dirname(osp.abspath(args.out))
    if not osp.isdir(out_dir):
        raise UserError(f'cannot write {args.out}: no directory {out_dir}.')
    labels = args.labels or default_labels(args.checkpoints)
    curves = []
    for path, label in zip(args.checkpoints, labels):
        state_dict = extract_state_dict(load_checkpoint_file(path))
        curves.append((label, find_rates(state_dict, path)))
    for index, (label, rates) in enumerate(curves):
        if index:
            print()
        print(format_table(label, rates))
    names = [[name for name, _, _ in rates] for _, rates in curves]
    if any(n != names[0] for n in names[1:]):
        print('\nnote: the checkpoints have different ACmix layers; the lines are '
              'drawn by layer index.')
    try:
        plot(curves, args.out)
    except OSError as err:
        raise UserError(f'cannot write {args.out}: {err}') from None
    print(f'\nwrote {args.out}')

if __name__ == '__main__':
    sys.exit(main())
