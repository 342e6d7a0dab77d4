"""Records of what the benchmarks, the demos and the FLOP counts measured.

Every figure the README and docs/ show comes from here. A record is one JSON object on
one line of a file under ``benchmarks/results/`` (one file per benchmark or tool):

    {"figure": "train_step.pvt.time_ratio", "value": 1.11, "unit": "x",
     "label": "PVT-ACmix-T / PVT-T training step time", "command": "python ...",
     "machine": "AMD EPYC, 2 cores, 2 threads", "threads": 2, "torch": "2.14.1",
     "date": "2026-12-03T14:02:11Z", "commit": "e684e64", "details": {...}}

A new record of a figure is appended; the pages show the latest one of each figure
(the latest date; on the same date, the one written last). Records transcribed from an
older page carry ``"source"`` saying so. ``ACMIX_MM_RECORDS`` names another directory
(the tests write there, never into the repository).

    python -m acmix_mm.records add FILE FIGURE VALUE UNIT --label L --command C
    python -m acmix_mm.records show [PATTERN]

This module imports only the standard library at the top (torch where a record is
made), so the page generators (tools/model_zoo.py, tools/gen_docs.py) load it by path
and run without the OpenMMLab stack.
"""
import argparse
import datetime
import fnmatch
import glob
import json
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The repository's records: what the generated pages are built from.
REPO_RESULTS = osp.join(ROOT, 'benchmarks', 'results')


def results_dir():
    """Where records are read and written: ``$ACMIX_MM_RECORDS`` or benchmarks/results."""
    return os.environ.get('ACMIX_MM_RECORDS') or REPO_RESULTS


def _lscpu():
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(':')
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name(fields):
    """The CPU's model name from lscpu's ``fields``; where it names no model (a virtual
    machine's bare "AMD EPYC" or "Intel(R) Xeon(R) Processor"), with the CPU family and
    model numbers, which tell its generations apart (two machines both named "AMD EPYC"
    ran the same 3x3 convolution benchmark in 33 and 80 ms)."""
    name = fields.get('Model name') or platform.processor() or platform.machine()
    if not any(char.isdigit() for char in name) and fields.get('CPU family'):
        name += f" (family {fields['CPU family']}, model {fields.get('Model', '?')})"
    return name


def machine(device=None):
    """The CPU's name (:func:`cpu_name`) with its core and thread counts (lscpu), or the
    GPU's name when ``device`` (a torch.device or str) is a CUDA device."""
    import torch
    if device is not None and str(device).startswith('cuda'):
        return f'{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})'
    fields = _lscpu()
    name = cpu_name(fields)
    threads = int(fields.get('CPU(s)') or os.cpu_count() or 1)
    try:
        cores = int(fields['Core(s) per socket']) * int(fields.get('Socket(s)', 1))
    except (KeyError, ValueError):
        cores = threads
    return f'{name}, {cores} cores, {threads} threads'


def git_commit():
    """The short commit of the checkout, with ``+dirty`` when tracked files changed (the
    records themselves aside: a record appended earlier changes no code)."""
    git = shutil.which('git')
    if not git:
        return 'unknown'
    try:
        commit = subprocess.run([git, 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run([git, 'status', '--porcelain', '--untracked-files=no', '--',
                                '.', ':(exclude)benchmarks/results'],
                               cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    return (commit or 'unknown') + ('+dirty' if dirty else '')


def command_line():
    """The command that is running, as one would type it again."""
    script = osp.relpath(osp.abspath(sys.argv[0]), ROOT) if sys.argv[0] else 'python'
    return ' '.join(['python', script] + sys.argv[1:])


def make(figure, value, unit, label, command=None, details=None, device=None, **extra):
    """One record of ``figure``, stamped with the machine (``device``'s: the CPU unless
    it is a CUDA device), torch, date and commit; and ``"allocator"`` where the process
    kept freed blocks for reuse (:mod:`acmix_mm.cpu_memory`)."""
    import torch

    from acmix_mm.cpu_memory import reuses_freed_memory
    record = dict(figure=figure, value=value, unit=unit, label=label,
                  command=command or command_line(), machine=machine(device),
                  threads=torch.get_num_threads(), torch=torch.__version__.split('+')[0],
                  date=datetime.datetime.now(datetime.timezone.utc).strftime(
                      '%Y-%m-%dT%H:%M:%SZ'),
                  commit=git_commit())
    if details:
        record['details'] = details
    if reuses_freed_memory():
        record['allocator'] = 'freed blocks reused (glibc)'
    record.update(extra)
    return record


def write(name, records):
    """Append ``records`` to ``<results dir>/<name>.jsonl``; returns the file's path."""
    directory = results_dir()
    os.makedirs(directory, exist_ok=True)
    path = osp.join(directory, f'{name}.jsonl')
    with open(path, 'a') as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + '\n')
    print(f'{len(records)} record(s) appended to {path}', flush=True)
    return path


def variant(name, *parts):
    """``name`` with a suffix for each non-empty part: figures measured at other sizes or
    on another device are other figures, e.g. ``backbone_forward.pvt.64x64.cuda``."""
    return '.'.join([name] + [str(part) for part in parts if part])


def record(name, *args, **kwargs):
    """``write(name, [make(*args, **kwargs)])``."""
    return write(name, [make(*args, **kwargs)])


def read(directory=None):
    """Every record under ``directory`` (default: results_dir()), in file order."""
    records = []
    for path in sorted(glob.glob(osp.join(directory or results_dir(), '*.jsonl'))):
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except ValueError as error:
                        raise ValueError(f'{path}:{number}: not a JSON record ({error})')
    return records


def latest(records):
    """The latest record of each figure, by figure name: the latest date, and of those
    on the same date, the last one written."""
    chosen = {}
    # sorted() is stable: records of one date keep file order, and the last one wins
    for rec in sorted(records, key=lambda r: r['date']):
        chosen[rec['figure']] = rec
    return chosen


def show(rec):
    """A record's value as the pages print it: '1.11x', '11 min 55 s', '0.418 mAP'."""
    value, unit = rec['value'], rec['unit']
    about = 'about ' if rec.get('approx') else ''
    if unit == 's':
        minutes, seconds = divmod(int(round(value)), 60)
        if about:
            return f'about {round(value / 60)} min' if minutes else f'about {seconds} s'
        return f'{minutes} min {seconds} s' if minutes else f'{seconds} s'
    if unit == 'x':
        return f'{about}{value:.2f}x'
    return f'{about}{value:g} {unit}'


def machine_of(rec):
    """The record's machine, and the allocator setting where it has one."""
    allocator = rec.get('allocator')
    return rec['machine'] + (f' ({allocator})' if allocator else '')


def when(recs, torch=True):
    """'AMD EPYC, 2 cores, 2 threads, torch 2.14.1, 2026-12-03' for the records of one
    row or table: each machine, allocator setting (:mod:`acmix_mm.cpu_memory`) and
    torch version, and the dates, once."""
    parts = list(dict.fromkeys(r['machine'] for r in recs))
    settings = {r.get('allocator') for r in recs}
    for allocator in sorted(setting for setting in settings if setting):
        parts.append(allocator if len(settings) == 1 else f'{allocator} in some')
    if torch:
        parts += [f'torch {v}' for v in dict.fromkeys(r['torch'] for r in recs)]
    dates = sorted({r['date'][:10] for r in recs})
    parts.append(dates[0] if len(dates) == 1 else f'{dates[0]} to {dates[-1]}')
    return ', '.join(parts)


# Generated pages: whole files, or blocks between markers in a hand-written file.
def replace_block(text, name, body, command):
    """``text`` with the block between the markers of ``name`` set to ``body``."""
    import re
    begin, end = f'<!-- BEGIN generated:{name} -->', f'<!-- END generated:{name} -->'
    pattern = re.compile(re.escape(begin) + r'.*?' + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f'no {begin} ... {end} markers')
    note = f'<!-- written by `{command}` from benchmarks/results/; do not edit -->\n'
    return pattern.sub(lambda _: f'{begin}\n{note}{body}{end}', text)


def stale_pages(expected):
    """The paths of ``expected`` ({path: text}) whose file differs from its text."""
    return [path for path, text in expected.items()
            if not osp.isfile(path) or open(path).read() != text]


def write_pages(expected, check=False, command=''):
    """Write ``expected`` ({path: text}); with ``check`` only report what differs.
    Returns the exit code (1: ``check`` found a page that differs)."""
    if check:
        wrong = stale_pages(expected)
        for path in wrong:
            print(f'{osp.relpath(path, ROOT)} differs from the records; run {command}')
        return 1 if wrong else 0
    for path, text in expected.items():
        partial = f'{path}.partial'
        with open(partial, 'w') as f:
            f.write(text)
        os.replace(partial, path)  # whole or not at all
        print(f'wrote {osp.relpath(path, ROOT)}')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write or show measurement records.')
    sub = parser.add_subparsers(dest='action', required=True)
    add = sub.add_parser('add', help='append one record (what a demo or a person measured)')
    add.add_argument('file', help='record file name under the results dir, without .jsonl')
    add.add_argument('figure')
    add.add_argument('value', type=float)
    add.add_argument('unit')
    add.add_argument('--label', required=True)
    add.add_argument('--command', required=True, help='the command that measured it')
    add.add_argument('--details', help='a JSON object of further figures')
    show = sub.add_parser('show', help='print the latest record of each figure')
    show.add_argument('pattern', nargs='?', default='*', help='figure names (fnmatch)')
    args = parser.parse_args(argv)
    if args.action == 'add':
        details = json.loads(args.details) if args.details else None
        record(args.file, args.figure, args.value, args.unit, args.label, args.command,
               details)
        return 0
    for figure, rec in sorted(latest(read()).items()):
        if fnmatch.fnmatch(figure, args.pattern):
            print(f'{figure}: {rec["value"]} {rec["unit"]}  ({rec["machine"]}, '
                  f'{rec["date"][:10]}, {rec["command"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
