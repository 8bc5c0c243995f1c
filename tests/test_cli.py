"""The `flower_tl` command, run as a subprocess: train -> predict -> evaluate on a tiny real subset, the demo,
and every user error (status 2, one line on stderr, no traceback; `--debug` shows it)."""
import csv, json, os, shutil, subprocess, sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from flower_tl.photos import sample_path

SAMPLE = sample_path()
FAST = ['--size', '64', '--bs', '16', '--workers', '0', '--device', 'cpu']

def one_line_error(r, *needles):
    "Exit status 2, exactly one line on stderr, no traceback, and each of `needles` in it."
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err, err
    for n in needles: assert str(n) in err, (n, err)
    return err

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny real data folder: 3 of the sample's classes, 8 training and 2 validation photos each, and a test folder."
    d = tmp_path_factory.mktemp('tiny')
    for cat in ('1', '50', '77'):
        for split, n in (('train', 8), ('valid', 2)):
            (d/split/cat).mkdir(parents=True)
            for f in sorted((SAMPLE/split/cat).iterdir())[:n]: shutil.copy(f, d/split/cat/f.name)
    shutil.copy(SAMPLE/'cat_to_name.json', d)
    (d/'test'/'nested').mkdir(parents=True)
    for f in sorted((SAMPLE/'test').iterdir())[:4]: shutil.copy(f, d/'test'/f.name)
    shutil.copy(SAMPLE/'test'/'image_08096.jpg', d/'test'/'nested'/'a, "b" é.jpg')
    return d

@pytest.fixture(scope='module')
def run(tiny, tmp_path_factory):
    "`flower_tl train` on the tiny folder: 2 epochs of the head, 1 of stage 2, at 64 px; no --arch: on a CPU, efficientnet_lite0."
    out = tmp_path_factory.mktemp('run')/'out'
    r = run_cli('train', '--data', tiny, '--freeze-epochs', '2', '--epochs', '1', '--lr-find', '--out', out, *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r

def test_train_writes_checkpoint_curves_metrics(run):
    out, r = run
    assert sorted(p.name for p in out.iterdir()) == ['best.pth', 'curves.png', 'epochs.png', 'last.pth', 'lr_find.png',
                                                     'metrics.json']
    m = json.loads((out/'metrics.json').read_text())
    assert (m['arch'], m['size'], m['freeze_epochs'], m['epochs'], len(m['history'])) == ('efficientnet_lite0', 64, 2, 1, 3)
    assert m['lr_found'] and f"lr_find suggests lr={m['lr']:.3g}" in r.stdout
    # the CPU recipe's lr2_cap is 2, but a stage 2 of 2 steps is far under its lr2_cap_steps (1000): the ceiling in effect
    # is recorded, and the rate is lr2_frac of stage 1's, with no range test, saying why
    assert m['lr2_cap'] == 1.0 and m['lr2'] == pytest.approx(m['lr2_frac']*m['lr']), m
    assert 'a stage 2 of 2 steps is too short to pay for a range test (1000 or more)' in m['lr2_by'], m
    assert m['frozen_bf16'] is False and m['frozen_bf16_speedup'] is None, m
    assert m['classes'] == ['1', '50', '77']
    # the best epoch's validation accuracy is the best of the history, and that epoch is the one best.pth holds
    assert m['best_val_acc'] == max(h['val_acc'] for h in m['history'])
    assert m['history'][m['best_epoch'] - 1]['val_acc'] == m['best_val_acc']
    assert 'best validation accuracy' in r.stdout and str(out) in r.stdout

def test_lr_find(tiny, tmp_path):
    r = run_cli('lr-find', '--data', tiny, '--arch', 'efficientnet_lite0', '--plot', tmp_path/'lr.png', '--frozen-bf16', *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'suggested learning rate: ' in r.stdout and (tmp_path/'lr.png').stat().st_size > 1000
    # --frozen-bf16 is timed first: bfloat16 is kept where it is faster (and said), else float32 with a warning
    assert ('the frozen stages run in bfloat16' in r.stdout) != ('--frozen-bf16: a forward pass in bfloat16' in r.stderr), r

def test_frozen_bf16_falls_back_where_slower(tiny, tmp_path):
    "With oneDNN held to AVX2 (a CPU of this kind without native bfloat16), bf16 runs many times slower: train keeps float32 and says so."
    avx2 = dict(OMP_NUM_THREADS='1', ONEDNN_MAX_CPU_ISA='AVX2', ATEN_CPU_CAPABILITY='avx2')
    out = tmp_path/'run'
    r = run_cli('train', '--data', tiny, '--arch', 'efficientnet_lite0', '--freeze-epochs', '1', '--epochs', '1',
                '--lr', '0.05', '--frozen-bf16', '--out', out, *FAST, env=avx2)
    assert r.returncode == 0, r.stderr[-3000:]
    warning = [l for l in r.stderr.splitlines() if '--frozen-bf16' in l]
    assert len(warning) == 1 and warning[0].startswith('flower_tl train: warning: --frozen-bf16: a forward pass in bfloat16 took'), r.stderr
    assert 'so the frozen stages run in float32' in warning[0]
    m = json.loads((out/'metrics.json').read_text())
    assert m['frozen_bf16'] is False and 0 < m['frozen_bf16_speedup'] < 1, m

def test_predict_csv(run, tiny, tmp_path):
    out, _ = run
    r = run_cli('predict', '--checkpoint', out/'best.pth', '--images', tiny/'test', '--csv', tmp_path/'p.csv', '--workers', '0')
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(open(tmp_path/'p.csv', newline='', encoding='utf-8')))
    assert rows[0] == ['file_name', 'id']
    names = [r[0] for r in rows[1:]]
    assert names == sorted(names) and len(names) == 5 and 'nested/a, "b" é.jpg' in names
    assert {r[1] for r in rows[1:]} <= {'1', '50', '77'}
    assert 'predicted 5 images' in r.stdout
    # extra columns, TTA; an existing CSV is refused, then replaced with --overwrite
    args = ['predict', '--checkpoint', out/'best.pth', '--images', tiny/'test', '--csv', tmp_path/'p.csv', '--workers', '0',
            '--tta', '--topk', '3', '--details']
    r = run_cli(*args, '--overwrite')
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path/'p.csv', newline='', encoding='utf-8')))
    assert list(rows[0]) == ['file_name', 'id', 'name', 'prob', 'topk'] and len(rows) == 5
    assert all(len(r['topk'].split()) == 3 and r['topk'].startswith(r['id'] + ':') for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == ['p.csv']   # no temporary file left behind

def test_predict_bad_image(run, tiny, tmp_path):
    out, _ = run
    imgs = tmp_path/'imgs'; shutil.copytree(tiny/'test', imgs)
    (imgs/'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
    args = ['predict', '--checkpoint', out/'best.pth', '--images', imgs, '--csv', tmp_path/'p.csv', '--workers', '0']
    one_line_error(main_(*args), 'broken.jpg', '--skip-bad')   # (in this process: the same main, without the start-up)
    assert not (tmp_path/'p.csv').exists()
    r = run_cli(*args, '--skip-bad')
    assert r.returncode == 0, r.stderr
    assert 'skipped 1 unreadable: broken.jpg' in r.stdout
    assert len((tmp_path/'p.csv').read_text(encoding='utf-8').splitlines()) == 1 + 5

@pytest.mark.outcome
def test_evaluate(run, tiny, tmp_path):
    out, _ = run
    d = run_cli('evaluate', '--checkpoint', out/'best.pth', '--data', tiny, '--json', tmp_path/'d.json',
                '--plot', tmp_path/'d.png', '--workers', '0')
    assert d.returncode == 0 and '(flip TTA)' in d.stdout, d.stderr   # flip TTA by default ...
    assert json.loads((tmp_path/'d.json').read_text())['tta'] is True
    r = run_cli('evaluate', '--checkpoint', out/'best.pth', '--data', tiny, '--json', tmp_path/'e.json',
                '--plot', tmp_path/'m.png', '--workers', '0', '--no-tta')   # ... and the centre crop that training scored
    assert r.returncode == 0 and 'TTA' not in r.stdout, r.stderr
    e = json.loads((tmp_path/'e.json').read_text())
    assert e['n_images'] == 6 and set(e['per_class']) == {'1', '50', '77'}
    assert e['top5_accuracy'] is None and 'top-5' not in r.stdout   # 3 classes: every image is in its top 5
    assert e['folder'].endswith('valid') and (tmp_path/'m.png').stat().st_size > 1000
    assert 'accuracy' in r.stdout and 'most confused' in r.stdout
    # the accuracy agrees with the predictions of the same folder, scored by hand against its class folders ...
    p = run_cli('predict', '--checkpoint', out/'best.pth', '--images', tiny/'valid', '--csv', tmp_path/'v.csv', '--workers', '0',
                '--no-tta')
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(open(tmp_path/'v.csv', newline='', encoding='utf-8')))
    assert e['accuracy'] == pytest.approx(sum(r['file_name'].split('/')[0] == r['id'] for r in rows)/len(rows), abs=1e-6)
    # ... and with the validation accuracy that training recorded for the epoch best.pth holds
    assert e['accuracy'] == pytest.approx(json.loads((out/'metrics.json').read_text())['best_val_acc'], abs=1e-6)

def test_demo_default_out_twice(tmp_path):
    "The demo writes into a new ./flower_tl_demo/<time>/ each run (training into its train/), so a second run works and keeps the first."
    cmd = [sys.executable, '-m', 'flower_tl', 'demo', '--epochs', '0', '--freeze-epochs', '2', '--size', '64',
           '--workers', '0', '--device', 'cpu']
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONPATH=str(ROOT))
    runs = [subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600) for _ in range(2)]
    for r in runs: assert r.returncode == 0, r.stderr[-3000:]
    outs = sorted((tmp_path/'flower_tl_demo').iterdir())
    assert len(outs) == 2
    for o in outs:
        assert {'train', 'test_predictions.csv', 'valid_evaluation.json', 'valid_mistakes.png'} <= {p.name for p in o.iterdir()}
        assert {'best.pth', 'last.pth', 'metrics.json', 'curves.png'} <= {p.name for p in (o/'train').iterdir()}
        assert (o/'test_predictions.csv').read_text().splitlines()[0] == 'file_name,id'
    out = runs[0].stdout
    assert 'train: 96 images in 6 classes' in out and 'test accuracy: ' in out and 'everything is in' in out

@pytest.fixture(scope='module')
def junk(tmp_path_factory):
    d = tmp_path_factory.mktemp('junk')
    (d/'junk.pth').write_bytes(b'this is not a checkpoint')
    return d/'junk.pth'

# Each run of the command pays for importing torch (seconds on a busy 2-core machine), so only the errors the
# issue lists run as subprocesses; the others call the same `main` in this process, which gives the same exit
# status and stderr.
def test_user_errors_subprocess(junk, tmp_path):
    one_line_error(run_cli('predict', '--checkpoint', junk, '--images', SAMPLE/'test', '--csv', tmp_path/'p.csv'),
                   'junk.pth')                                                       # bad checkpoint
    one_line_error(run_cli('train', '--data', SAMPLE, '--arch', 'resnet9000'), 'resnet9000', 'efficientnet_lite0')
    one_line_error(run_cli('train', '--data', SAMPLE, '--arch', 'resnet50', '--offline', '--out', tmp_path/'out', *FAST,
                           env=dict(TORCH_HOME=str(tmp_path/'torch_home'))), 'resnet50', '--weights')
    assert not any(tmp_path.iterdir())                                               # nothing written

def main_(*args):
    "Run `flower_tl.cli.main` here, returning what `run_cli` returns."
    import contextlib, io, types
    from flower_tl.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code
    return types.SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())

def test_help_on_every_command():
    for cmd in ('train', 'lr-find', 'predict', 'evaluate', 'demo'):
        r = main_(cmd, '--help')
        assert r.returncode == 0 and f'usage: flower_tl {cmd}' in r.stdout, (cmd, r.stderr)

@pytest.mark.parametrize('args, needles', [
    (['train', '--data', 'no/such/folder', '--arch', 'efficientnet_lite0'], ['no/such/folder']),
    (['lr-find', '--data', 'no/such/folder', '--arch', 'efficientnet_lite0'], ['no/such/folder']),
    (['predict', '--checkpoint', 'no/such.pth', '--images', SAMPLE/'test', '--csv', 'X'], ['no/such.pth']),
    (['predict', '--checkpoint', 'CKPT', '--images', 'no/such/dir', '--csv', 'X'], ['no/such/dir']),
    (['evaluate', '--checkpoint', 'CKPT', '--data', 'no/such/dir', '--json', 'X'], ['no/such/dir']),
    (['evaluate', '--checkpoint', 'JUNK', '--data', SAMPLE, '--json', 'X'], ['junk.pth']),
    (['demo', '--data', 'no/such/folder'], ['no/such/folder']),
    (['train', '--data', SAMPLE, '--arch', 'efficientnet_lite0', '--out', 'RUN'], ['not empty', '--overwrite']),
    (['predict', '--checkpoint', 'CKPT', '--images', SAMPLE/'test', '--csv', 'CSV'], ['already exists', '--overwrite']),
    (['train', '--data', SAMPLE, '--lr', '0.1', '--lr-find'], ['give either --lr or --lr-find, not both']),
    (['predict', '--images', 'x'], ['--checkpoint', '--help']),   # argparse's usage errors are one line too
    (['train', '--data', SAMPLE, '--arch', 'efficientnet_lite0', '--recipe', 'quick', '--progressive'], ['--progressive needs photos', '--no-cache']),
])
def test_user_errors(args, needles, junk, run, tmp_path):
    out, _ = run
    (tmp_path/'exists.csv').write_text('precious')
    sub = {'X': tmp_path/'out.csv', 'JUNK': junk, 'CKPT': out/'best.pth', 'RUN': out, 'CSV': tmp_path/'exists.csv'}
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    one_line_error(main_(*[sub.get(a, a) if isinstance(a, str) else a for a in args]), *needles)
    assert not (tmp_path/'out.csv').exists() and (tmp_path/'exists.csv').read_text() == 'precious'
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before

def test_debug_shows_traceback(tmp_path):
    from flower_tl.core import UserError
    for args in (['--debug', 'demo', '--data', 'no/such/folder'], ['demo', '--data', 'no/such/folder', '--debug']):
        with pytest.raises(UserError, match='no/such/folder'): main_(*args)
    # (a CSV outside the images: one inside them is refused first, as an output over an input)
    r = run_cli('--debug', 'predict', '--checkpoint', 'no/such.pth', '--images', SAMPLE/'test', '--csv', tmp_path/'x.csv')
    assert r.returncode == 1 and 'Traceback' in r.stderr and 'no/such.pth' in r.stderr
    assert not (tmp_path/'x.csv').exists()
