"""Write docs/benchmarks.md and the README's speed and demo blocks from the records.

    python tools/gen_docs.py            # write them
    python tools/gen_docs.py --check    # exit 1 if one differs from the records

Every figure comes from the latest record of its name under benchmarks/results/
(acmix_mm/records.py): the benchmarks, tools/benchmark.py and tools/demo.sh append
records when they run. Rerun this after they do (and tools/model_zoo.py for the model
zoo); tests/test_docs.py fails when a page differs from what this writes.
"""
import argparse
import collections
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# acmix_mm/records.py as tools/model_zoo.py loads it (by path, without the OpenMMLab
# stack that importing the acmix_mm package brings).
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from model_zoo import records  # noqa: E402

BENCHMARKS = osp.join(ROOT, 'docs', 'benchmarks.md')
README = osp.join(ROOT, 'README.md')
REGENERATE = 'python tools/gen_docs.py'

# The README's speed table: (label, pair) rows.
PAIRS = (('PVT-ACmix-T / PVT-T', 'pvt'), ('Swin-ACmix-T / Swin-T', 'swin'),
         ('PVT-ACmix-T / PVT-T, same linears', 'pvt-onednn'),
         ('Swin-ACmix-T / Swin-T, same linears', 'swin-onednn'),
         ('ResNet-ACmix-50 / ResNet-50', 'resnet'), ('SAN-ACmix-19 / SAN-19', 'san'))
DEMOS = (('`bash tools/demo.sh`', 'det'), ('`bash tools/demo.sh seg`', 'seg'),
         ('`bash tools/demo.sh cls`', 'cls'))
SETUP = (('first run on a machine (builds mmcv)', 'setup.first'),
         ('first run in a new clone (mmcv wheel cached)', 'setup.new_clone'),
         ('second run in the same checkout', 'setup.second'),
         ('same checkout after requirements.txt or setup.py changed', 'setup.reinstall'),
         ('`bash tools/run_tests.sh`: the whole suite', 'tests.suite_s'))
# docs/benchmarks.md: (title, what it is, figure prefixes).
SECTIONS = (
    ('Demos, set-up and tests', '`bash tools/demo.sh [seg|cls]` records its metric and '
     'times; `benchmarks/demo_step.py` the detection demo\'s step against the paper '
     'config\'s 256-channel neck and head; set-up and test-suite times.',
     ('demo.', 'setup.', 'tests.')),
    ('Training step, ACmix / baseline', 'One forward and backward of the backbone alone on '
     'one 1x3x512x640 image (`benchmarks/train_step.py`).', ('train_step.', )),
    ('Backbone forward, ACmix / baseline', 'Eval mode, one 1x3x800x1344 image '
     '(`benchmarks/backbone_speed.py`).', ('backbone_forward.', )),
    ('Whole models, images/s', '`tools/benchmark.py`: a config against a baseline (`--vs`) '
     'or its own eager run (`--backend`).', ('benchmark.', )),
    ('Operators', 'One layer at a 1333x800 image\'s stride-4 size '
     '(`benchmarks/shift_operators.py`, `sliding_window_acmix.py`, `atconv_vs_acmix.py`).',
     ('shift.', 'sliding_window.', 'patchwise.', 'token_mixer.')),
    ('Native operators', 'The ResNet-ACmix layer on the C++ sliding-window op, against the '
     'PyTorch fallback and the 3x3 convolution it replaces, forward and backward; SAN\'s '
     'patchwise layer on the C++ patchwise ops against the fallback; SAN-19, SAN-ACmix-19 '
     'and ResNet-50 training steps side by side (`benchmarks/native_ops.py`).',
     ('native_ops.', )),
)


def cell(latest, figure, marks=None):
    """A figure's latest value, with its machine's mark from ``marks`` if it has one."""
    if figure not in latest:
        return 'not measured'
    return records.show(latest[figure]) + (marks or {}).get(latest[figure]['machine'], '')


def machine_marks(used):
    """Marks (*, **, ...) for the machines of a table's records but its most common one,
    so that no figure reads as measured on a machine it was not."""
    counts = collections.Counter(record['machine'] for record in used)
    main = counts.most_common(1)[0][0] if counts else None
    return main, {machine: '*' * (i + 1)
                  for i, machine in enumerate(m for m in counts if m != main)}


def render_speed(latest, link=True):
    rows = ['| ACmix / baseline | training step time, 512x640 | memory kept for backward | '
            'forward time, 800x1344 |', '|---|---|---|---|']
    onnx = 'benchmark.retinanet_pvt_acmix_t_1x.576x576.onnxruntime'
    compiled = 'benchmark.retinanet_pvt_acmix_t_1x.576x576.compile'
    table = [(label, (f'train_step.{pair}.time_ratio', f'train_step.{pair}.memory_ratio',
                      f'backbone_forward.{pair}')) for label, pair in PAIRS]
    used = [latest[f] for f in [f for _, figures in table for f in figures] + [onnx, compiled]
            if f in latest]
    main, marks = machine_marks(used)
    for label, figures in table:
        rows.append(f'| {label} | ' + ' | '.join(cell(latest, f, marks) for f in figures) +
                    ' |')
    others = ''.join(
        f'; {mark} {records.when([r for r in used if r["machine"] == machine])}'
        for machine, mark in marks.items())
    return '\n'.join(rows + [
        '',
        f'Whole RetinaNet PVT-ACmix-T at 576x576, images/s: ONNX Runtime / eager '
        f'{cell(latest, onnx, marks)}, torch.compile / eager {cell(latest, compiled, marks)}.',
        f'Measured on {records.when([r for r in used if r["machine"] == main])}{others}'
        f'{"" if any("CUDA" in r["machine"] for r in used) else "; CPU only"}.'
        f'{transcribed(used)}',
        'Commands: `python benchmarks/train_step.py`, `python benchmarks/backbone_speed.py`,',
        '`python tools/benchmark.py CONFIG --backend onnxruntime`.'
        + (' Each figure with its command: [docs/benchmarks.md](docs/benchmarks.md).'
           if link else ''), ''])


def transcribed(recs):
    """A note when some of ``recs`` were transcribed rather than written by a tool."""
    if any(r.get('source') for r in recs):
        return (' Figures marked (t) in docs/benchmarks.md were copied by hand (commit '
                'e684e64); rerunning their command replaces them.')
    return ''


def render_demo(latest):
    rows = ['| command | prints | training | whole command | measured on |',
            '|---|---|---|---|---|']
    used = []
    for command, key in DEMOS:
        found = [latest[f] for f in (f'demo.{key}.metric', f'demo.{key}.train_s',
                                     f'demo.{key}.total_s') if f in latest]
        used += found
        rows.append(f'| {command} | ' + ' | '.join(
            cell(latest, f'demo.{key}.{kind}') for kind in ('metric', 'train_s', 'total_s'))
            + f' | {records.when(found, torch=False) if found else "-"} |')
    rows += ['', '| set-up | time | measured on |', '|---|---|---|']
    for label, figure in SETUP:
        found = [latest[figure]] if figure in latest else []
        used += found
        rows.append(f'| {label} | {cell(latest, figure)} | '
                    f'{records.when(found, torch=False) if found else "-"} |')
    note = transcribed(used)
    return '\n'.join(rows) + ('\n\n' + note.strip() if note else '') + '\n'


def render_benchmarks(latest):
    lines = [
        '# Benchmarks', '',
        f'Generated by `{REGENERATE}` from the latest record of each figure under',
        '`benchmarks/results/`; do not edit by hand. Every figure was measured on a CPU:',
        'no GPU has run this project. Ratios move with the machine (two AMD EPYC machines',
        'of one name differed by 1.5x): compare figures of one machine only.', '',
        '## Summary', '',
        render_speed(latest, link=False),
        'A benchmark appends its records when it runs; then run',
        f'`{REGENERATE}`. "(t)": transcribed from the README at e684e64, not yet',
        're-run by the tool. Each record also holds the absolute times (JSON `details`).', '',
    ]
    for title, about, prefixes in SECTIONS:
        lines += [f'## {title}', '', about, '',
                  '| figure | value | machine | torch | date | command |',
                  '|---|---|---|---|---|---|']
        for figure in sorted(latest):
            if figure.startswith(prefixes):
                rec = latest[figure]
                date = rec['date'][:10] + (' (t)' if rec.get('source') else '')
                lines.append(f'| {rec["label"]} | {records.show(rec)} | '
                             f'{records.machine_of(rec)} | {rec["torch"]} | {date} | '
                             f'`{rec["command"]}` |')
        lines.append('')
    lines += ['## Params and GFLOPs', '',
              'Per config, beside the paper\'s columns: [model_zoo.md](model_zoo.md).']
    return '\n'.join(lines) + '\n'


def outputs(all_records):
    """{path: text} of everything this tool writes."""
    latest = records.latest(all_records)
    readme = open(README).read()
    readme = records.replace_block(readme, 'speed', render_speed(latest), REGENERATE)
    readme = records.replace_block(readme, 'demo', render_demo(latest), REGENERATE)
    return {BENCHMARKS: render_benchmarks(latest), README: readme}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='exit 1 when a page differs from what the records give')
    args = parser.parse_args(argv)
    return records.write_pages(outputs(records.read(records.REPO_RESULTS)), args.check,
                               REGENERATE)


if __name__ == '__main__':
    sys.exit(main())
