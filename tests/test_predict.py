"""What the 04_predict notebook cannot show well: loader worker processes meeting unreadable images, and a process
killed while it writes a CSV."""
import csv, os, shutil, signal, subprocess, sys, textwrap

import pytest
import torch
from torch import nn

from flower_tl.core import UserError
from flower_tl.photos import sample_path
from flower_tl.predict import Predictor, atomic_open

SAMPLE = sample_path()

def tiny_predictor():
    "A predictor around a tiny deterministic model (mean colour -> 6 classes): fast, and enough to test the plumbing."
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 6))
    return Predictor(model, ['1', '10', '2', '50', '77', '84'], None, (0.5,)*3, (0.5,)*3, 32, device='cpu')

@pytest.fixture
def folder(tmp_path):
    "The sample's test photos, some nested, some with awkward names, and two unreadable files."
    d = tmp_path/'imgs'
    (d/'sub').mkdir(parents=True)
    photos = sorted((SAMPLE/'test').iterdir())
    for f in photos[:6]: shutil.copy(f, d/f.name)
    for f, name in zip(photos[6:], ['a, "b" é.jpg', 'sub/x y.jpg', 'sub/ü.png', 'Z.jpg', 'sub/new\nline.jpg', 'c.jpeg']):
        shutil.copy(f, d/name)
    (d/'empty.jpg').write_bytes(b'')
    (d/'sub'/'truncated.jpg').write_bytes(photos[0].read_bytes()[:500])
    return d

@pytest.mark.parametrize('workers', [0, 2])
def test_bad_images_with_workers(folder, workers):
    p = tiny_predictor()
    with pytest.raises(UserError, match='empty.jpg'): p.predict_folder(folder, bs=4, num_workers=workers)
    preds = p.predict_folder(folder, bs=4, num_workers=workers, skip_bad=True)
    assert sorted(n for n, _ in preds.skipped) == ['empty.jpg', 'sub/truncated.jpg']
    assert len(preds) == 12 and preds.files == sorted(preds.files)
    assert 'skipped 2 unreadable' in preds.summary()
    ref = p.predict_folder(folder, bs=5, num_workers=0, skip_bad=True)   # workers and batch size change nothing
    assert preds.files == ref.files and torch.allclose(preds.probs, ref.probs, atol=1e-6)

def test_csv_round_trip(folder, tmp_path):
    preds = tiny_predictor().predict_folder(folder, skip_bad=True)
    preds.to_csv(tmp_path/'p.csv', details=True, topk=3)
    with open(tmp_path/'p.csv', newline='', encoding='utf-8') as f: rows = list(csv.DictReader(f))
    assert [r['file_name'] for r in rows] == preds.files
    assert 'sub/new\nline.jpg' in preds.files and 'a, "b" é.jpg' in preds.files
    assert [r['id'] for r in rows] == preds.ids

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from flower_tl.predict import atomic_open
    print(os.getpid(), flush=True)
    with atomic_open(sys.argv[1], overwrite=True) as f:
        f.write('half of a new file')
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
""")

def test_killed_while_writing_keeps_the_old_file(tmp_path):
    target = tmp_path/'out.csv'
    target.write_text('file_name,id\nold.jpg,1\n')
    r = subprocess.run([sys.executable, '-c', KILLED_WRITER, str(target)], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL
    assert target.read_text() == 'file_name,id\nold.jpg,1\n'      # the old file, whole
    # a killed process cannot tidy up: its temporary file, hidden and named after it, is left and never replaced the target
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f'.out.csv.{r.stdout.strip()}.tmp', 'out.csv'])
    with atomic_open(target, overwrite=True) as f: f.write('new')   # the next write to that file tidies it away
    assert [p.name for p in tmp_path.iterdir()] == ['out.csv'] and target.read_text() == 'new'

def test_error_while_writing_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path/'new.csv') as f: f.write('partial'); raise RuntimeError('boom')
    assert list(tmp_path.iterdir()) == []

def test_tta_bench_scores_what_evaluate_scores():
    "`bench/test_tta.py`'s centre view is `evaluate`'s photo and its mirror `evaluate`'s flip TTA: same photos, same order."
    import importlib
    from tests.conftest import ROOT
    sys.path.insert(0, str(ROOT/'bench'))
    try: test_tta = importlib.import_module('test_tta')
    finally: sys.path.remove(str(ROOT/'bench'))
    p = tiny_predictor()
    probs, targets = test_tta.view_probs(p, SAMPLE/'valid', bs=8)
    assert set(probs) == {v for vs in test_tta.SETS.values() for v in vs}
    plain, flip = (p.evaluate(SAMPLE/'valid', tta=t, progress=False) for t in (False, True))
    assert torch.equal(targets, plain.targets)
    assert torch.allclose(probs['centre'], plain.preds.probs, atol=1e-6)
    assert torch.allclose((probs['centre'] + probs['centre~'])/2, flip.preds.probs, atol=1e-6)
    scores = test_tta.score(probs, targets)
    assert scores['centre'] == round(100*plain.accuracy, 2) and scores['centre+flip'] == round(100*flip.accuracy, 2)
