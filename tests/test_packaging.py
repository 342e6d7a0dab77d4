"""setup.py declares what acmix_mm needs as ranges (extras for mmpretrain and ONNX), the
pinned set of requirements.txt and the installed environment satisfy them, and the
version has one source."""
import importlib.metadata
import os.path as osp
import re
import subprocess
import sys

import pytest
import setuptools
from packaging.requirements import Requirement

from conftest import ROOT


@pytest.fixture(scope='module')
def metadata():
    """The keyword arguments setup.py passes to setup()."""
    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        code = compile(open(osp.join(ROOT, 'setup.py')).read(), 'setup.py', 'exec')
        exec(code, {'__file__': osp.join(ROOT, 'setup.py'), '__name__': 'setup'})
    finally:
        setuptools.setup = original
    return captured


def pins():
    """name -> version of the == pins in requirements.txt."""
    found = {}
    for line in open(osp.join(ROOT, 'requirements.txt')):
        match = re.match(r'^([A-Za-z0-9_.-]+)==([^\s#]+)', line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_requirements_are_ranges_with_extras(metadata):
    names = {Requirement(r).name for r in metadata['install_requires']}
    assert {'mmengine', 'mmcv', 'mmdet', 'mmsegmentation'} <= names
    for requirement in map(Requirement, metadata['install_requires']):
        assert '==' not in str(requirement.specifier), requirement  # ranges, not pins
    extras = metadata['extras_require']
    assert {Requirement(r).name for r in extras['pretrain']} == {'mmpretrain'}
    assert {Requirement(r).name for r in extras['onnx']} == {'onnx', 'onnxscript',
                                                             'onnxruntime'}


def test_the_pinned_set_satisfies_the_ranges(metadata):
    pinned = pins()
    requirements = metadata['install_requires'] + [
        r for extra in ('pretrain', 'onnx') for r in metadata['extras_require'][extra]]
    for requirement in map(Requirement, requirements):
        if not requirement.specifier:
            continue
        version = pinned.get(requirement.name.lower())
        assert version, f'{requirement.name} has no pin in requirements.txt'
        assert requirement.specifier.contains(version, prereleases=True), (
            f'requirements.txt pins {requirement.name}=={version}, outside {requirement}')


def test_the_installed_environment_satisfies_the_ranges(metadata):
    """What `pip check` would say about acmix_mm's requirements, without pip."""
    requirements = metadata['install_requires'] + [
        r for extra in ('pretrain', 'onnx') for r in metadata['extras_require'][extra]]
    for requirement in map(Requirement, requirements):
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f'{requirement.name} is not installed')
        version = version.split('+')[0]  # torch's local build tag (+cpu, +cu121)
        assert requirement.specifier.contains(version, prereleases=True), (
            f'installed {requirement.name} {version} is outside {requirement}')


def test_one_source_of_the_version(metadata):
    import acmix_mm
    from acmix_mm.version import __version__
    assert acmix_mm.__version__ == __version__ == metadata['version']
    assert re.fullmatch(r'\d+\.\d+\.\d+', __version__)


def test_pip_builds_the_metadata_without_fetching_anything(tmp_path):
    """The set-up installs with --no-deps: building acmix_mm's metadata needs no index."""
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
         '--no-build-isolation', '--dry-run', '--report', str(tmp_path / 'report.json'),
         '-e', ROOT],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    report = json.load(open(tmp_path / 'report.json'))
    (item, ) = report['install']
    assert item['metadata']['name'] == 'acmix_mm'
    declared = item['metadata'].get('requires_dist', [])
    assert any(r.startswith('mmdet') for r in declared), declared
    assert any('extra == "onnx"' in r for r in declared), declared
