"""tools/plot_rates.py: ACmix alpha/beta per layer (Figure 5 of the paper)."""
import os

import pytest
import torch

from acmix_mm.backbones import PVTACmix

from conftest import run_in_process, run_tool

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def pvt_state():
    """PVT-ACmix-T weights (8 ACmix layers) and the names of its layers."""
    state = PVTACmix('tiny').state_dict()
    layers = [k[:-len('.alpha')] for k in state if k.endswith('.alpha')]
    assert len(layers) == 8
    return state, layers


def save_segmentor(path, state, rates):
    """Save ``state`` as a segmentor checkpoint, with ``rates[i] = (alpha, beta)``."""
    state = dict(state)
    layers = [k[:-len('.alpha')] for k in state if k.endswith('.alpha')]
    for layer, (alpha, beta) in zip(layers, rates):
        state[f'{layer}.alpha'] = torch.tensor([alpha])
        state[f'{layer}.beta'] = torch.tensor([beta])
    torch.save({'state_dict': {'backbone.' + k: v for k, v in state.items()},
                'meta': {}}, path)


def test_two_checkpoints(tmp_path, pvt_state):
    state, layers = pvt_state
    first = [(0.125 * (i + 1), 0.75) for i in range(8)]
    # PVT-ACmix paper configs start with beta = 0: log(|alpha/beta|) is a gap.
    second = [(1.5, 0.0)] + [(0.25, 0.5 + 0.0625 * i) for i in range(1, 8)]
    save_segmentor(tmp_path / 'a.pth', state, first)
    save_segmentor(tmp_path / 'b.pth', state, second)
    out = tmp_path / 'rates.png'
    proc = run_tool('tools/plot_rates.py', str(tmp_path / 'a.pth'),
                    str(tmp_path / 'b.pth'), '--out', str(out), '--labels', 'first',
                    'second')
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.partial')]
    text = proc.stdout
    assert 'first: 8 ACmix layers' in text and 'second: 8 ACmix layers' in text
    for layer in layers:
        assert layer in text
    first_table, second_table = text.split('second: 8 ACmix layers')
    rows = [line.split() for line in first_table.splitlines() if 'attn' in line]
    assert [row[1] for row in rows] == layers  # network order
    assert [float(row[2]) for row in rows] == [a for a, _ in first]
    assert [float(row[3]) for row in rows] == [b for _, b in first]
    assert float(rows[5][4]) == pytest.approx(0.0, abs=1e-4)  # 0.75 / 0.75
    rows = [line.split() for line in second_table.splitlines() if 'attn' in line]
    assert rows[0][2:5] == ['1.5', '0', 'nan']
    assert 'beta = 0' in second_table.splitlines()[2]
    assert [float(row[3]) for row in rows[1:]] == [b for _, b in second[1:]]


def test_official_layout_and_default_labels(tmp_path):
    model = {'patch_embed.proj.weight': torch.zeros(96, 3, 4, 4)}
    for stage in range(2):
        model[f'layers.{stage}.blocks.0.attn.qkv.weight'] = torch.zeros(3, 3)
        model[f'layers.{stage}.blocks.0.attn.rate1'] = torch.tensor([0.3 + stage])
        model[f'layers.{stage}.blocks.0.attn.rate2'] = torch.tensor([0.6])
    torch.save({'model': model}, tmp_path / 'acmix_swin_t.pth')
    out = tmp_path / 'official.png'
    proc = run_tool('tools/plot_rates.py', str(tmp_path / 'acmix_swin_t.pth'), '--out',
                    str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert 'acmix_swin_t.pth: 2 ACmix layers' in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines() if 'attn' in line]
    assert [row[1:4] for row in rows] == [['layers.0.blocks.0.attn', '0.3', '0.6'],
                                          ['layers.1.blocks.0.attn', '1.3', '0.6']]
    assert float(rows[0][4]) == pytest.approx(-0.6931, abs=1e-4)  # log(1/2)


def check_error(*argv, message):
    status, err = run_in_process('plot_rates.py', *argv)
    assert status == 1 and message in err, err


def test_errors(tmp_path, pvt_state):
    out = tmp_path / 'rates.png'
    missing = tmp_path / 'missing.pth'
    check_error(str(missing), '--out', str(out),
                message=f'Checkpoint file not found: {missing}')

    broken = tmp_path / 'broken.pth'
    broken.write_text('not a checkpoint')
    check_error(str(broken), '--out', str(out),
                message=f'Cannot read checkpoint {broken}')

    plain = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'backbone.conv.weight': torch.zeros(4, 3, 3, 3)}},
               plain)
    check_error(str(plain), '--out', str(out),
                message=f'no ACmix alpha/beta found in {plain}; is it an ACmix model?')

    state, _ = pvt_state
    good = tmp_path / 'good.pth'
    save_segmentor(good, state, [(0.5, 0.5)] * 8)
    check_error(str(good), str(good), '--out', str(out), '--labels', 'only-one',
                message='1 labels for 2 checkpoints')
    assert not out.exists()
