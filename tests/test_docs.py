"""The README and docs/ cannot go stale silently: the generated pages and blocks are what
their generators write from the records, and every config, tool, flag, file and link
they name exists (configs load, tools' parsers accept the flags)."""
import argparse
import glob
import os.path as osp
import re

import pytest

from conftest import ROOT, load_script

README = osp.join(ROOT, 'README.md')
PAGES = [README, osp.join(ROOT, 'CHANGELOG.md')] + sorted(
    glob.glob(osp.join(ROOT, 'docs', '*.md')))
README_SECTIONS = ['Status', 'Quick start', 'Backbones and ImageNet weights', 'Results',
                   'Usage on real data', 'Speed', 'Docs', 'Citation', 'License']
DOCS = ['get_started', 'train_test', 'weights', 'pretrain', 'custom_config', 'model_zoo',
        'benchmarks', 'deploy', 'faq', 'design']
# Where named paths are the user's (data, outputs, downloads), not the repository's.
USER_PATHS = ('data/', 'work_dirs/', 'checkpoints/', '~/', '/path/')
# A shell script's extra flags go to this tool.
PASSES_TO = {'tools/dist_train.sh': 'tools/train.py', 'tools/slurm_train.sh': 'tools/train.py',
             'tools/dist_test.sh': 'tools/test.py'}
PATH = re.compile(r'(?<![\w/.~-])((?:configs|tools|benchmarks|acmix_mm|docs|tests)/'
                  r'[\w./-]*[\w/])')
COMMAND = re.compile(r'((?:tools|benchmarks)/\w+\.(?:py|sh))((?:\\\n|[^`\n|;#])*)')


def text_of(path):
    return open(path).read()


def code_spans(text):
    """Fenced blocks (whole) and inline code spans."""
    fenced = re.findall(r'```[a-z]*\n(.*?)```', text, re.S)
    rest = re.sub(r'```.*?```', '', text, flags=re.S)
    return fenced + re.findall(r'`([^`\n]+)`', rest)


def test_readme_is_at_most_12_kb_in_the_issues_order():
    size = len(open(README, 'rb').read())
    assert size <= 12 * 1024, f'README.md is {size} bytes; move details to docs/'
    headings = re.findall(r'^## (.+)$', text_of(README), re.M)
    assert headings == README_SECTIONS
    for name in DOCS:
        assert osp.isfile(osp.join(ROOT, 'docs', f'{name}.md')), name
        assert f'(docs/{name}.md)' in text_of(README), f'docs/{name}.md not in the index'


def test_no_history_in_the_readme():
    text = text_of(README)
    assert 'Before:' not in text and 'before that' not in text.lower()


@pytest.mark.parametrize('tool', ['tools/model_zoo.py', 'tools/gen_docs.py'])
def test_generated_pages_are_what_their_generator_writes(tool):
    module = load_script(tool)
    records = module.records
    stale = records.stale_pages(module.outputs(records.read(records.REPO_RESULTS)))
    assert not stale, (f'{[osp.relpath(p, ROOT) for p in stale]} differ from what the '
                       f'records give; run python {tool}')


def test_speed_table_marks_figures_of_another_machine():
    """The README's speed table takes each figure's latest record: where they come from
    several machines, the figures of all but the most common one carry a mark, and the
    footer names each machine beside its mark."""
    gen_docs = load_script('tools/gen_docs.py')

    def record(figure, value, machine):
        return dict(figure=figure, value=value, unit='x', machine=machine, torch='2.14.1',
                    date='2026-12-06T00:00:00Z', command='python benchmarks/train_step.py')

    latest = {f'train_step.{pair}.time_ratio': record(f'train_step.{pair}.time_ratio', 1.1,
                                                       'AMD EPYC, 2 cores')
              for _, pair in gen_docs.PAIRS}
    latest['train_step.resnet.time_ratio'] = record('train_step.resnet.time_ratio', 1.36,
                                                    'Intel Xeon, 2 cores')
    text = gen_docs.render_speed(latest)
    assert '| ResNet-ACmix-50 / ResNet-50 | 1.36x* |' in text
    assert '| PVT-ACmix-T / PVT-T | 1.10x |' in text
    assert 'Measured on AMD EPYC, 2 cores' in text and '; * Intel Xeon, 2 cores' in text


def named_paths():
    """(page, path) for every repository path the pages name."""
    found = set()
    for page in PAGES:
        for span in code_spans(text_of(page)) + re.findall(r'\]\(([^)]+)\)', text_of(page)):
            for path in PATH.findall(span):
                if any(marker in span.split(path)[0][-8:] for marker in USER_PATHS):
                    continue
                found.add((osp.relpath(page, ROOT), path))
    return sorted(found)


def test_every_named_path_exists():
    missing = [f'{page}: {path}' for page, path in named_paths()
               if not re.search(r'[A-Z]{3,}', path)  # CONFIG, NAME: placeholders
               and not osp.exists(osp.join(ROOT, path.rstrip('/')))]
    assert not missing, missing


def test_every_link_resolves():
    missing = []
    for page in PAGES:
        for target in re.findall(r'\]\(([^)#]+)(?:#[^)]*)?\)', text_of(page)):
            if '://' in target:
                continue
            if not osp.exists(osp.join(osp.dirname(page), target)):
                missing.append(f'{osp.relpath(page, ROOT)}: {target}')
    assert not missing, missing


def test_named_checkpoint_paths_are_the_configs():
    """The checkpoints/ paths the pages tell users to fill are the ones configs load."""
    configs = ''.join(text_of(p) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                                                     recursive=True))
    named = set()
    for page in PAGES:
        named |= set(re.findall(r'`(checkpoints/[\w.-]+\.pth)`', text_of(page)))
    assert named
    assert not [p for p in named if p not in configs], named


def test_every_named_config_loads():
    from mmengine.config import Config
    configs = sorted({path for _, path in named_paths()
                      if path.startswith('configs/') and path.endswith('.py')})
    assert 'configs/retinanet_pvt_acmix_t_1x.py' in configs
    for path in configs:
        if not re.search(r'[A-Z]{3,}', path):
            Config.fromfile(osp.join(ROOT, path))


class _Parsed(Exception):
    pass


def parser_of(tool):
    """The argparse parser a tool or benchmark builds (its main or parse_args is run up
    to the point where it parses)."""
    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        captured['parser'] = self
        raise _Parsed

    module = load_script(tool)
    argparse.ArgumentParser.parse_args = capture
    try:
        entry = getattr(module, 'parse_args', None) or module.main
        try:
            entry(['--help']) if entry.__code__.co_argcount else entry()
        except _Parsed:
            pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured['parser']


def named_flags():
    """{tool: {flag}} for commands the pages write out, and flags named on their own."""
    by_tool, alone = {}, set()
    for page in PAGES:
        for span in code_spans(text_of(page)):
            commands = COMMAND.findall(span)
            for tool, rest in commands:
                tool = PASSES_TO.get(tool, tool)
                if tool.endswith('.py'):
                    by_tool.setdefault(tool, set()).update(
                        re.findall(r'(?<![\w-])(--[a-z][\w-]*)', rest))
            if not commands:
                alone.update(re.findall(r'^(--[a-z][\w-]*)', span.strip()))
    return by_tool, alone


def test_tools_accept_every_flag_the_pages_name():
    by_tool, alone = named_flags()
    assert '--auto-scale-lr' in alone and 'tools/export_onnx.py' in by_tool
    known = {}
    for tool in sorted(set(by_tool) | {'tools/train.py', 'tools/test.py'}):
        known[tool] = set(parser_of(tool)._option_string_actions)
    unknown = [f'{tool} {flag}' for tool, flags in by_tool.items() for flag in flags
               if flag not in known[tool]]
    everywhere = set().union(*known.values())
    unknown += [flag for flag in alone if flag not in everywhere]
    assert not unknown, f'flags the pages name that no tool accepts: {unknown}'


def test_the_own_config_snippets_load(tmp_path):
    """docs/custom_config.md's first snippet (and the README's) give a model with the
    ACmix backbone and no stray top-level copy of it."""
    from mmengine.config import Config
    page = text_of(osp.join(ROOT, 'docs', 'custom_config.md'))
    snippet = re.findall(r'```python\n(.*?)```', page, re.S)[0]
    path = tmp_path / 'own_config.py'
    path.write_text(snippet.replace('/path/to/acmix_mm', ROOT))
    cfg = Config.fromfile(str(path))
    assert cfg.model.backbone.type == 'PVTACmix' and 'backbone' not in cfg
    assert cfg.model.backbone.init_cfg.checkpoint.endswith('pvt_tiny.pth')
    assert cfg.model.neck.in_channels == [64, 128, 320, 512]
    from acmix_mm.runner_utils import init_scope
    init_scope(cfg)
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        MODELS.build(cfg.model)  # the neck fits the backbone
    readme = re.findall(r'```python\n(.*?)```', text_of(README), re.S)[0]
    path = tmp_path / 'readme_config.py'
    path.write_text("_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']\n" + readme)
    cfg = Config.fromfile(str(path))
    assert cfg.model.backbone == dict(type='PVTACmix', arch='tiny', out_indices=(0, 1, 2, 3))
