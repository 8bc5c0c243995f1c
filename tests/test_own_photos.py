"""The library side of "your own photos, safely": the functions the `flower_tl` command calls to claim a run folder,
refuse an output that is an input, write without clobbering (a full disk included), and read every photo or name it.

Races run in separate processes started together; where a function promises to change nothing, the whole folder
is hashed before and after (`tests.test_safety.snapshot`: files by content, links by target)."""
import csv, os, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from flower_tl.core import (RUN_LOCK, UserError, atomic_open, check_not_input, claim_folder, command_line,
                            fresh_folder)
from flower_tl.data import FlowerData
from flower_tl.photos import load_rgb, sample_path, unescape_name
from flower_tl.predict import Predictions, Predictor, csv_accuracy
from tests.conftest import ROOT
from tests.test_safety import snapshot

SAMPLE = sample_path()
PHOTOS = sorted((SAMPLE/'test').glob('*.jpg'))
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))


def tiny_predictor(classes=('1', '10', '2', '50', '77', '84')):
    "A predictor around a tiny deterministic model (mean colour -> classes): fast, and enough for the plumbing."
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, len(classes)))
    return Predictor(model, list(classes), None, (0.5,)*3, (0.5,)*3, 32, device='cpu')

def copy_photo(dst:Path, src:Path=PHOTOS[0]) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True); dst.write_bytes(src.read_bytes()); return dst

def run_together(where:Path, script:str, args:list, timeout:int=120) -> list:
    "`(status, stdout, stderr)` of one process per item of `args` running `script`, released together once all have started."
    go = where/'.go'
    procs = [subprocess.Popen([sys.executable, '-c', textwrap.dedent(script), str(go), *map(str, a)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in args]
    deadline = time.time() + timeout
    while not all((go.parent/f'.ready.{p.pid}').exists() for p in procs):   # all imported torch and flower_tl
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    go.touch()
    out = [(p.wait(timeout=timeout), *p.communicate()) for p in procs]
    go.unlink()
    for p in procs: (go.parent/f'.ready.{p.pid}').unlink()
    return out

READY = """
    import os, sys, time
    from pathlib import Path
    go = Path(sys.argv[1]); (go.parent/f'.ready.{os.getpid()}').touch()
    while not go.exists(): time.sleep(0.002)
"""


# ---------------------------------------------------------------- one run, one folder

CLAIM = READY + """
    from flower_tl.core import UserError, claim_folder
    target, hold = sys.argv[2], float(sys.argv[3])
    try:
        with claim_folder(target, overwrite=True) as out:
            (out/'owner.txt').write_text(str(os.getpid()))
            print('claimed', flush=True); time.sleep(hold)
    except UserError as e: print(e); sys.exit(2)
"""

def test_two_runs_into_one_folder_one_refused_at_once(tmp_path):
    target = tmp_path/'runs'/'run'
    res = run_together(tmp_path, CLAIM, [(target, 4), (target, 4)])
    codes = sorted(r[0] for r in res)
    assert codes == [0, 2], res
    winner = next(r for r in res if r[0] == 0)
    loser = next(r for r in res if r[0] == 2)
    assert 'in use by another flower_tl run (process' in loser[1] and "overwrite=True never takes a live run's folder" in loser[1]
    assert [p.name for p in target.iterdir()] == ['owner.txt'] and winner[1].startswith('claimed')

def test_refused_claim_changes_nothing(tmp_path):
    "While a run holds its folder, another claim of it (overwrite or not) and a claim by the same path through a link change nothing."
    target = tmp_path/'run'
    holder = subprocess.Popen([sys.executable, '-c', textwrap.dedent(CLAIM), str(tmp_path/'.go'), str(target), '30'],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        while not (tmp_path/f'.ready.{holder.pid}').exists(): time.sleep(0.02)
        (tmp_path/'.go').touch()
        assert holder.stdout.readline().startswith('claimed')
        (tmp_path/'link').symlink_to(target)
        before = snapshot(tmp_path)
        assert (target/RUN_LOCK).read_text().strip() == str(holder.pid)
        for path, overwrite in [(target, True), (target, False), (tmp_path/'link', True)]:
            with pytest.raises(UserError, match=f'in use by another flower_tl run \\(process {holder.pid}\\)'):
                with claim_folder(path, overwrite=overwrite): pass
        assert snapshot(tmp_path) == before
    finally: holder.kill(); holder.wait()

def test_a_killed_runs_lock_is_taken_over(tmp_path):
    target = tmp_path/'run'
    script = "from flower_tl.core import claim_folder\nimport os, signal, sys\n" \
             "with claim_folder(sys.argv[1]) as out: (out/'best.pth').write_text('half'); os.kill(os.getpid(), signal.SIGKILL)"
    r = subprocess.run([sys.executable, '-c', script, str(target)], env=ENV, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL and (target/RUN_LOCK).exists()   # a killed process cannot tidy up
    with pytest.raises(UserError, match='is not empty; pass overwrite=True'):   # its files are there: not without overwrite
        with claim_folder(target): pass
    with claim_folder(target, overwrite=True) as out:   # but its lock holds nothing any more
        assert (out/RUN_LOCK).read_text().strip() == str(os.getpid())
    assert sorted(p.name for p in target.iterdir()) == ['best.pth']
    (target/'best.pth').unlink(); (target/RUN_LOCK).write_text('999999\n')    # only a stale lock left: an empty folder
    with claim_folder(target): pass
    assert list(target.iterdir()) == []

FRESH = READY + """
    import time as _t
    _t.strftime = lambda fmt: '20260101-120000'   # every process in the same second
    from flower_tl.core import fresh_folder
    with fresh_folder(sys.argv[2], 'lite0-') as out:
        (out/'owner.txt').write_text(str(os.getpid())); print(out.name, flush=True); time.sleep(0.5)
"""

def test_fresh_folders_started_in_one_second_differ(tmp_path):
    res = run_together(tmp_path, FRESH, [(tmp_path/'runs',)]*4)
    assert [r[0] for r in res] == [0]*4, res
    names = sorted(r[1].strip() for r in res)
    assert names == ['lite0-20260101-120000', 'lite0-20260101-120000-2', 'lite0-20260101-120000-3', 'lite0-20260101-120000-4']
    owners = {(tmp_path/'runs'/n/'owner.txt').read_text() for n in names}
    assert len(owners) == 4 and not any((tmp_path/'runs'/n/RUN_LOCK).exists() for n in names)

def test_claim_refusals_name_the_flag(tmp_path):
    (tmp_path/'full').mkdir(); (tmp_path/'full'/'metrics.json').write_text('{}'); (tmp_path/'file').write_text('x')
    before = snapshot(tmp_path)
    with command_line():
        with pytest.raises(UserError, match='is not empty; pass --overwrite to write into it, or give another --out'):
            with claim_folder(tmp_path/'full'): pass
        with pytest.raises(UserError, match='is a file; give a folder as --out'):
            with claim_folder(tmp_path/'file'): pass
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- no output replaces an input

def test_check_not_input(tmp_path):
    w = tmp_path
    copy_photo(w/'images'/'photo.jpg'); copy_photo(w/'images'/'sub'/'deep.jpg'); (w/'run').mkdir()
    (w/'run'/'best.pth').write_bytes(b'weights'); (w/'data'/'train'/'1').mkdir(parents=True)
    os.link(w/'run'/'best.pth', w/'hard.json'); (w/'soft.json').symlink_to(w/'run'/'best.pth')
    (w/'img_link').symlink_to(w/'images')
    before = snapshot(w)
    inputs = {'checkpoint': w/'run'/'best.pth', ('folder', '--images'): w/'images', 'data': w/'data'}
    refused = {'run/best.pth': 'is --checkpoint', 'hard.json': 'is the same file as --checkpoint',
               'soft.json': 'is the same file as --checkpoint', 'images/photo.jpg': 'is inside --images',
               'images/sub/deep.jpg': 'is inside --images', 'images/new.csv': 'is inside --images',
               'images/sub': 'is inside --images', 'images': 'is --images', 'img_link/photo.jpg': 'is inside --images',
               'img_link': 'is the same file as --images', 'data/train/1': 'is inside --data', 'data': 'is --data',
               'run/../images/x.csv': 'is inside --images'}
    with command_line():
        for out, says in refused.items():
            with pytest.raises(UserError, match='never writes over what it reads, with --overwrite or without') as e:
                check_not_input(w/out, 'csv', inputs)
            assert says in str(e.value) and '\n' not in str(e.value), (out, str(e.value))
        for out in ['p.csv', 'run/evaluation.json', 'images.csv', 'run']:   # beside an input, or a folder holding one
            assert check_not_input(w/out, 'csv', inputs) == w/out
    assert snapshot(w) == before

def test_folder_to_csv_never_writes_over_its_inputs(tmp_path):
    images = tmp_path/'images'
    for f in PHOTOS[:2]: copy_photo(images/f.name, f)
    p = tiny_predictor(); p.checkpoint = tmp_path/'best.pth'; p.checkpoint.write_bytes(b'weights')
    before = snapshot(tmp_path)
    for out in [images/PHOTOS[0].name, images/'preds.csv', p.checkpoint]:
        with pytest.raises(UserError, match='never writes over what it reads'): p.folder_to_csv(images, out, overwrite=True)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- writes that refuse to clobber, in one step

WRITER = READY + """
    from flower_tl.core import UserError, atomic_open
    try:
        with atomic_open(sys.argv[2]) as f:
            f.write(f'written by {os.getpid()}'); f.flush(); time.sleep(1)   # both are writing at once
        print('wrote', flush=True)
    except UserError as e: print(e); sys.exit(2)
"""

def test_two_writers_of_one_new_file(tmp_path):
    target = tmp_path/'p.csv'
    res = run_together(tmp_path, WRITER, [(target,), (target,)])
    assert sorted(r[0] for r in res) == [0, 2], res
    winner = next(r for r in res if r[0] == 0)
    loser = next(r for r in res if r[0] == 2)
    # released together, both are writing when the first one links its file: the second is refused in that step
    # (on a machine so busy that it started after the first had finished, the check before writing refuses it)
    assert 'p.csv appeared while it was being written' in loser[1] or 'p.csv already exists' in loser[1], loser
    assert target.read_text().startswith('written by ') and sorted(p.name for p in tmp_path.iterdir()) == ['p.csv']

@pytest.fixture
def tiny_disk(tmp_path):
    "A real 64 KiB file system (tmpfs), where a root user may mount one; skipped elsewhere."
    d = tmp_path/'disk'; d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(d)], capture_output=True, text=True)
    if r.returncode != 0: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try: yield d
    finally: subprocess.run(['umount', str(d)], check=True)

def test_full_disk_is_one_line_and_keeps_the_old_file(tiny_disk):
    old = tiny_disk/'preds.csv'; old.write_text('file_name,id\nold.jpg,1\n')
    n = 4000
    preds = Predictions(tiny_disk, [f'photo_{i:05d}.jpg' for i in range(n)], torch.rand(n, 6).softmax(1), list('abcdef'), list('abcdef'))
    before = snapshot(tiny_disk)
    with pytest.raises(UserError) as e: preds.to_csv(old, details=True, topk=3, overwrite=True)
    msg = str(e.value)
    assert msg == (f"cannot write {old}: No space left on device; the existing preds.csv there is untouched. "
                   "Free some space, or write elsewhere, and run again"), msg
    with pytest.raises(UserError, match=r'No space left on device; no model.pth was left there'):
        with atomic_open(tiny_disk/'model.pth', binary=True) as f: torch.save(torch.zeros(100_000), f)   # torch's RuntimeError
    assert snapshot(tiny_disk) == before   # the old CSV whole, and no temporary file left


# ---------------------------------------------------------------- every file read or named

def _frames(path:Path, fmt:str):
    "A two-frame file: red, then blue."
    red, blue = Image.new('RGB', (40, 30), (255, 0, 0)), Image.new('RGB', (40, 30), (0, 0, 255))
    red.save(path, format=fmt, save_all=True, append_images=[blue])

def test_every_format_read_the_same_in_training_predict_and_evaluate(tmp_path):
    photo = Image.open(PHOTOS[0]).convert('RGB')
    exts = ['.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.jfif', '.webp', '.ppm', '.JPG', '.TIFF']
    data = tmp_path/'data'
    for split in ('train', 'valid'):
        for cat in ('1', '2'):
            (data/split/cat).mkdir(parents=True)
            for ext in exts: photo.save(data/split/cat/f'p{ext}', format=Image.registered_extensions()[ext.lower()])
    fd = FlowerData.from_folder(data, size=32, num_workers=0)
    assert len(fd.train_ds) == len(fd.valid_ds) == 2*len(exts)
    p = tiny_predictor(['1', '2'])
    preds = p.predict_folder(data/'valid', progress=False)
    ev = p.evaluate(data/'valid', progress=False)
    names = sorted(f.relative_to(data/'valid').as_posix() for f in fd.valid_ds.files)
    assert preds.files == names and ev.preds.files == names
    for ext in ('.gif', '.tiff'):   # several frames: the first is read
        _frames(tmp_path/f'two{ext}', {'.gif': 'GIF', '.tiff': 'TIFF'}[ext])
        assert load_rgb(tmp_path/f'two{ext}').getpixel((0, 0)) == (255, 0, 0)

def test_a_pipe_named_like_a_photo_never_hangs_predict(tmp_path):
    images = tmp_path/'images'; copy_photo(images/'a.jpg'); os.mkfifo(images/'x.jpg')
    script = textwrap.dedent(f"""
        import warnings, torch
        from torch import nn
        from flower_tl.predict import Predictor
        warnings.simplefilter('always')
        model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
        p = Predictor(model, ['1', '2'], None, (0.5,)*3, (0.5,)*3, 32, device='cpu')
        print(p.folder_to_csv({str(images)!r}, {str(tmp_path/'p.csv')!r}, progress=False).files)
        try: p.predict({str(images/'x.jpg')!r})
        except Exception as e: print(type(e).__name__, e)
    """)
    r = subprocess.run([sys.executable, '-c', script], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0] == "['a.jpg']"
    assert 'BadImageError' in r.stdout and 'x.jpg: a pipe, not a file: never read' in r.stdout
    assert 'skipped 1 file in' in r.stderr and 'x.jpg (a pipe, never opened)' in r.stderr
    assert [l.split(',')[0] for l in (tmp_path/'p.csv').read_text().splitlines()] == ['file_name', 'a.jpg']

def test_names_that_are_not_utf8_are_written_escaped(tmp_path):
    images = tmp_path/'images'; images.mkdir()
    raw = [b'caf\xe9.jpg', b'\xff\xfe.png', b'ok.jpg', b'back\\slash.jpg', rb'typed\xe9.jpg', b'sub\xe9/inner.jpg']
    for b in raw: copy_photo(images/os.fsdecode(b))
    before = snapshot(images)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        preds = tiny_predictor().folder_to_csv(images, tmp_path/'p.csv', progress=False)
    with open(tmp_path/'p.csv', newline='', encoding='utf-8') as f: rows = list(csv.DictReader(f))   # strict UTF-8
    assert len(rows) == len(raw) and [r['id'] for r in rows] == preds.ids
    written = [r['file_name'] for r in rows]
    assert 'ok.jpg' in written and 'back\\slash.jpg' in written                  # UTF-8 names: exact
    assert r'caf\xe9.jpg' in written and r'\xff\xfe.png' in written and r'sub\xe9/inner.jpg' in written
    assert r'typed\x5cxe9.jpg' in written                                         # spells an escape: escaped too
    assert sorted(unescape_name(n) for n in written) == sorted(raw)               # every name comes back, byte for byte
    for n in written: assert (images/os.fsdecode(unescape_name(n))).is_file()
    said = [str(m.message) for m in w]
    assert any(s.startswith('4 file names are not UTF-8 (or spell an escape)') and 'unescape_name' in s for s in said), said
    assert '\udce9' not in preds.summary() and snapshot(images) == before


# ---------------------------------------------------------------- names, labels and missing files

def test_evaluate_matches_nfd_folders_to_nfc_classes(tmp_path):
    import unicodedata
    nfc, nfd = 'rosé', unicodedata.normalize('NFD', 'rosé')
    for cat in (nfd, 'lys'): copy_photo(tmp_path/'valid'/cat/'a.jpg')
    ev = tiny_predictor([nfc, 'lys']).evaluate(tmp_path/'valid', progress=False)
    assert ev.n == 2 and set(ev.per_class) == {nfc, 'lys'}

def test_csv_accuracy_names_missing_labelled_files(tmp_path):
    (tmp_path/'labels.csv').write_text('\ufefffile_name,id\na.jpg,1\nb.jpg,2\nc.jpg,1\ngone.jpg,2\n', encoding='utf-8')
    (tmp_path/'preds.csv').write_text('file_name,id\na.jpg,1\nb.jpg,1\nc.jpg,1\nextra.jpg,2\n', encoding='utf-8')
    before = snapshot(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        acc = csv_accuracy(tmp_path/'preds.csv', tmp_path/'labels.csv')
    assert acc == dict(accuracy=2/3, correct=2, n=3, missing=['gone.jpg'], unlabelled=['extra.jpg'])
    assert len(w) == 1 and '1 of the 4 labelled files' in str(w[0].message) and 'gone.jpg' in str(w[0].message)
    assert snapshot(tmp_path) == before

def test_formula_names_get_one_warning_and_stay_exact(tmp_path):
    names = ['=1+2.jpg', '+a.jpg', '-b.jpg', '@c.jpg', 'd.jpg']
    preds = Predictions(tmp_path, names, torch.rand(5, 2).softmax(1), ['1', '2'], ['=cmd', 'fine'])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        preds.to_csv(tmp_path/'p.csv')
    assert len(w) == 1 and 'begin with =, +, - or @' in str(w[0].message)
    with open(tmp_path/'p.csv', newline='') as f: assert [r['file_name'] for r in csv.DictReader(f)] == names
