"""acmix_mm/records.py: what the benchmarks and demos measured, as JSON lines; the pages
show the latest record of each figure."""
import json
import os
import os.path as osp

from conftest import ROOT, load_script, run_tool

records = load_script('acmix_mm/records.py')


def record(figure, value, date, **extra):
    return dict(figure=figure, value=value, unit='x', label=figure, command='c',
                machine='m', threads=2, torch='2.14.1', date=date, commit='abc', **extra)


def test_the_latest_record_of_each_figure_wins():
    recs = [record('a', 1.0, '2026-12-03T10:00:00Z'), record('a', 2.0, '2026-12-02'),
            record('b', 3.0, '2026-12-01', source='transcribed'),
            record('b', 4.0, '2026-12-01'), record('a', 5.0, '2026-12-03')]
    latest = records.latest(recs)
    # a re-run (with a time) replaces a transcribed record (a date only) of that day
    assert latest['a']['value'] == 1.0
    assert latest['b']['value'] == 4.0  # same date: the one written last


def test_values_as_the_pages_show_them():
    assert records.show(dict(value=715, unit='s')) == '11 min 55 s'
    assert records.show(dict(value=3, unit='s', approx=True)) == 'about 3 s'
    assert records.show(dict(value=1020, unit='s', approx=True)) == 'about 17 min'
    assert records.show(dict(value=1.105, unit='x')) == '1.10x'
    assert records.show(dict(value=0.418, unit='mAP')) == '0.418 mAP'


def test_every_seeded_record_is_complete():
    keys = {'figure', 'value', 'unit', 'label', 'command', 'machine', 'torch', 'date',
            'commit'}
    recs = records.read(records.REPO_RESULTS)
    assert len(recs) > 100
    for rec in recs:
        assert keys <= set(rec), rec
        assert isinstance(rec['value'], (int, float)), rec
        if rec['date'] <= '2026-12-03':
            assert rec.get('source', '').startswith('transcribed from'), rec


def test_write_and_read_under_the_tests_directory(tmp_path, monkeypatch):
    monkeypatch.setenv('ACMIX_MM_RECORDS', str(tmp_path))
    path = records.write('x', [record('x.y', 1.5, '2030-01-01')])
    assert path == str(tmp_path / 'x.jsonl')
    assert records.read()[0]['value'] == 1.5


def test_a_benchmark_appends_its_records():
    """The tests' records go to $ACMIX_MM_RECORDS (conftest.py), not benchmarks/results."""
    directory = os.environ['ACMIX_MM_RECORDS']
    assert not directory.startswith(ROOT)
    proc = run_tool('benchmarks/shift_operators.py', '--shapes', '8,2,5,6', '--repeat', '1')
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(osp.join(directory, 'shift_operators.jsonl')) as f:
        lines = [json.loads(line) for line in f]
    figures = {r['figure'] for r in lines}
    assert {'shift.custom_c_8_2_heads_5x6.forward',
            'shift.custom_c_8_2_heads_5x6.forward_backward'} <= figures
    rec = lines[-1]
    assert rec['command'].startswith('python benchmarks/shift_operators.py --shapes 8,2,5,6')
    assert rec['machine'] and rec['torch'] and rec['commit'] and rec['unit'] == 'x'
    assert 'cores' in rec['machine'] or 'CUDA' in rec['machine']


def test_demo_sh_records_the_figures_the_pages_show():
    """tools/demo.sh's records are the ones tools/gen_docs.py puts in the README: the
    metric, training and whole-command times of each task, and the set-up's time."""
    demo = open(osp.join(ROOT, 'tools', 'demo.sh')).read()
    gen_docs = load_script('tools/gen_docs.py')
    for kind in ('metric', 'train_s', 'total_s'):
        assert f'records add demo "demo.$TASK.{kind}"' in demo, kind
    assert 'records add setup "setup.$SETUP"' in demo
    for _, task in gen_docs.DEMOS:
        assert f'\n  {task}) NAME=' in demo, task  # a task of the case statement
    for _, figure in gen_docs.SETUP:
        if figure.startswith('setup.'):
            assert f'SETUP={figure.split(".")[1]}' in demo, figure


def test_pages_name_the_allocator_setting_of_cpu_runs():
    plain = record('a', 1.0, '2026-12-05T07:00:00Z')
    reused = record('b', 1.0, '2026-12-05T08:00:00Z', allocator='freed blocks reused (glibc)')
    assert records.machine_of(plain) == 'm'
    assert records.machine_of(reused) == 'm (freed blocks reused (glibc))'
    assert records.when([reused]) == 'm, freed blocks reused (glibc), torch 2.14.1, 2026-12-05'
    assert records.when([plain, reused], torch=False) == (
        'm, freed blocks reused (glibc) in some, 2026-12-05')


def test_machine_names_the_cpu_generation_where_the_model_name_is_bare():
    bare = {'Model name': 'AMD EPYC', 'CPU family': '25', 'Model': '17'}
    assert records.cpu_name(bare) == 'AMD EPYC (family 25, model 17)'
    named = dict(bare, **{'Model name': 'AMD EPYC 9654 96-Core Processor'})
    assert records.cpu_name(named) == 'AMD EPYC 9654 96-Core Processor'
    assert records.cpu_name({'Model name': 'Intel(R) Xeon(R) Processor'}) == (
        'Intel(R) Xeon(R) Processor')
