"""Your own photos, safely, as a user meets them: one subprocess per case, through the `flower_tl` command
(or `python -c` for the cases of the Python API), on small folders made from the bundled sample.

Every case hashes the whole folder it works in before and after (`tree`: every path under a root, each file by the
sha256 of its content), and checks the exit status and what stderr says: a refusal is exactly one line, with no
traceback, that names the file or the option and what to do, in the command line's words (`--bs 4`, never `bs=4`).
`tests/test_own_photos.py` tests the library functions behind these cases.

Training runs are tiny (32 px, 3 photos a class, one epoch of the head); the tests that only need a checkpoint share
one (`finished`), those that resume share one interrupted run (`interrupted`), each copied before it is changed."""
import csv, json, os, re, shlex, shutil, subprocess, sys, textwrap, time, unicodedata
from pathlib import Path

import pytest
from PIL import Image

from flower_tl.photos import escape_name, sample_path, unescape_name
from tests.conftest import ROOT, ctrl_c_delivered
from tests.test_safety import snapshot

SAMPLE = sample_path()
ENV = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
FAST = ['--arch', 'efficientnet_lite0', '--size', '32', '--bs', '4', '--workers', '0', '--device', 'cpu', '--lr', '0.01']
ONE = [*FAST, '--freeze-epochs', '1', '--epochs', '0']     # one epoch of the head: a run of a few seconds
THREE = [*FAST, '--freeze-epochs', '3', '--epochs', '0']   # the interrupted run's settings
RUN_FILES = {'best.pth', 'last.pth', 'curves.png', 'epochs.png', 'metrics.json'}
# Python's words where a command-line user needs a flag: bs=8, names=False, sizes=[64, ...], create_model(..., find_bad_images(folder)
PYTHON_WORDS = re.compile(r"\b[a-z_]+=(True|False|None|\d|\[|'|\")|\b[a-z]+_[a-z_]+\(|\bfit\(|\(\.\.\.")


# ---------------------------------------------------------------- helpers

def tree(root:Path) -> dict:
    "Every path under `root` (its keys: the set of paths), each file by the sha256 of its content; links by their target."
    return snapshot(root)

def flower(*args, cwd, timeout=300, module='flower_tl') -> subprocess.CompletedProcess:
    "`python -m flower_tl ARGS` run in `cwd`, as a user runs it, on one thread."
    return subprocess.run([sys.executable, '-m', module, *map(str, args)], capture_output=True, text=True,
                          errors='backslashreplace', timeout=timeout, cwd=cwd, env=ENV, preexec_fn=ctrl_c_delivered)

def python(script:str, *args, cwd, timeout=300) -> subprocess.CompletedProcess:
    "`python -c SCRIPT ARGS` run in `cwd`."
    return subprocess.run([sys.executable, '-c', textwrap.dedent(script), *map(str, args)], capture_output=True, text=True,
                          errors='backslashreplace', timeout=timeout, cwd=cwd, env=ENV)

def _progress(line:str) -> bool:
    "A progress line that a slow phase writes on stderr when it is not a terminal (`flower_tl.core.LogProgress`)."
    return bool(re.search(r': \d+(/\d+)? \S+.* so far|: done, \d+ ', line)) and not line.startswith('flower_tl ')

def one_line(r, status:int, *needles, absent=(), kind='error') -> str:
    "Exit `status`; stderr exactly one line, flower_tl's `kind` line ('error' or 'warning') naming every needle in the command's words."
    assert r.returncode == status, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    lines = [l for l in r.stderr.splitlines() if not _progress(l)]
    assert len(lines) == 1, lines
    line = lines[0]
    assert re.match(rf'flower_tl [a-z-]+: {kind}: ', line) and 'Traceback' not in line, line
    for n in needles: assert n in line, (n, line)
    for n in absent: assert n not in line, (n, line)
    assert not PYTHON_WORDS.search(line), f"Python's words on the command line: {line}"
    return line

def refused(r, *needles, absent=()) -> str:
    "Status 2, one error line naming `needles`, and nothing on stdout: refused before any work."
    line = one_line(r, 2, *needles, absent=absent)
    assert r.stdout == '', r.stdout[-2000:]
    return line

def clean(r) -> subprocess.CompletedProcess:
    "Status 0 and nothing on stderr but progress lines."
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert not [l for l in r.stderr.splitlines() if not _progress(l)], r.stderr
    return r

def photos(split:str, cat:str, n:int, skip:int=0) -> list:
    return sorted((SAMPLE/split/cat).glob('*.jpg'))[skip:skip + n]

def make_data(root:Path, cats=('1', '50'), train:int=3, valid:int=1, valid_name:str='valid', test:int=0) -> Path:
    "A data folder of the sample's `cats`: `train` training and `valid` validation photos each (and `test` unlabelled photos)."
    for cat in cats:
        for split, n, name in (('train', train, 'train'), ('valid', valid, valid_name)):
            (root/name/cat).mkdir(parents=True)
            for f in photos(split, cat, n): shutil.copy(f, root/name/cat/f.name)
    if test:
        (root/'test').mkdir()
        for f in sorted((SAMPLE/'test').glob('*.jpg'))[:test]: shutil.copy(f, root/'test'/f.name)
    return root

def image_folder(root:Path, names, src:Path=None) -> Path:
    "A folder of copies of one sample photo under `names` (`str` or `bytes`)."
    src = src or sorted((SAMPLE/'test').glob('*.jpg'))[0]
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        p = root/os.fsdecode(n); p.parent.mkdir(parents=True, exist_ok=True); shutil.copy(src, p)
    return root

def csv_rows(path:Path) -> list:
    with open(path, newline='', encoding='utf-8') as f: return list(csv.DictReader(f))   # strict UTF-8

def checkpoint_classes(path:Path) -> list:
    from flower_tl.models import read_checkpoint
    return list(read_checkpoint(path)['classes'])

def consistent_run(out:Path, data:Path) -> dict:
    "The run folder `out` holds every file of one run on `data`: metrics.json's classes are those of best.pth and last.pth."
    assert RUN_FILES <= {p.name for p in out.iterdir()}, sorted(p.name for p in out.iterdir())
    m = json.loads((out/'metrics.json').read_text())
    assert m['data'] == str(data), (m['data'], data)
    assert checkpoint_classes(out/'best.pth') == checkpoint_classes(out/'last.pth') == m['classes'], out
    return m

GATED = """
    import os, sys, time
    from pathlib import Path
    gate, clock, *argv = sys.argv[1:]
    from flower_tl.cli import main   # torch and flower_tl imported first, so that the jobs themselves start together
    if clock:   # every run in the same second, where a default folder's name is made
        real = time.strftime
        time.strftime = lambda fmt, *t: clock if fmt == '%Y%m%d-%H%M%S' and not t else real(fmt, *t)
    Path(gate, f'ready.{os.getpid()}').touch()
    while not Path(gate, 'go').exists(): time.sleep(0.002)
    sys.exit(main(argv))
"""

def together(cwd:Path, gate:Path, *argvs, clock:str='', timeout:int=300) -> list:
    "One `flower_tl` process per item of `argvs`, released together once all have started; their `CompletedProcess`es."
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, '-c', textwrap.dedent(GATED), str(gate), clock, *map(str, a)], cwd=cwd, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors='backslashreplace')
             for a in argvs]
    deadline = time.time() + timeout
    while not all((gate/f'ready.{p.pid}').exists() for p in procs):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    (gate/'go').touch()
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, *o) for p, o in zip(procs, outs)]


# ---------------------------------------------------------------- shared runs

@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    "A finished one-epoch run of the classes 1 and 50 (its data has 2 test photos): `(data, run folder)`."
    root = tmp_path_factory.mktemp('finished')
    data = make_data(root/'data', test=2)
    r = flower('train', '--data', data, *ONE, '--out', root/'run', cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return data, root/'run'

@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
    "A run of 3 epochs stopped by Ctrl-C in its second (a real SIGINT): its last.pth holds epoch 1. `(data, run folder)`."
    root = tmp_path_factory.mktemp('interrupted')
    data = make_data(root/'data')
    r = flower('0:2:1:sigint', 'train', '--data', data, *THREE, '--out', root/'run', cwd=root, module='tests.fault_hooks')
    assert r.returncode == 130 and (root/'run'/'last.pth').is_file(), (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return data, root/'run'

def copy_run(src:Path, dst:Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ---------------------------------------------------------------- 1. a run owns its folder

def test_two_trains_into_one_out_one_refused_at_once(tmp_path):
    "Two runs into one --out, started together, on data of 2 and of 3 classes: one is refused at once, the other's folder is its own."
    two, three = make_data(tmp_path/'two'), make_data(tmp_path/'three', cats=('2', '77', '84'))
    out, data_before = tmp_path/'runs'/'run', (tree(two), tree(three))
    res = together(tmp_path, tmp_path/'gate', ['train', '--data', two, *ONE, '--out', out],
                   ['train', '--data', three, *ONE, '--out', out])
    assert sorted(r.returncode for r in res) == [0, 2], [(r.returncode, r.stderr[-2000:]) for r in res]
    (won, data), (lost, _) = sorted(zip(res, (two, three)), key=lambda x: x[0].returncode)
    refused(lost, f'output folder {out} is in use by another flower_tl run', 'give another --out',
            '--overwrite never takes a live run')
    m = consistent_run(out, data)
    assert len(m['classes']) == (2 if data == two else 3) and f"writing into {out}" in won.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)   # no lock, no temporary file left
    assert (tree(two), tree(three)) == data_before

def test_two_trains_with_default_out_get_two_folders(tmp_path):
    "Two runs without --out in the same second (the clock stopped): two folders, runs/<arch>-<time> and ...-2, each one run's."
    two, three = make_data(tmp_path/'two'), make_data(tmp_path/'three', cats=('2', '77', '84'))
    work, data_before = tmp_path/'work', (tree(two), tree(three))
    work.mkdir()
    res = together(work, tmp_path/'gate', ['train', '--data', two, *ONE], ['train', '--data', three, *ONE],
                   clock='20260101-120000')
    for r in res: assert r.returncode == 0, r.stderr[-3000:]
    stem = 'efficientnet_lite0-20260101-120000'
    assert sorted(p.name for p in (work/'runs').iterdir()) == [stem, stem + '-2']
    wrote = {re.search(r'writing into (\S+)', r.stdout).group(1) for r in res}
    assert wrote == {f'runs/{stem}', f'runs/{stem}-2'}, wrote
    datas = set()
    for name in (stem, stem + '-2'):
        d = json.loads((work/'runs'/name/'metrics.json').read_text())['data']
        consistent_run(work/'runs'/name, Path(d)); datas.add(d)
    assert datas == {str(two), str(three)} and (tree(two), tree(three)) == data_before


# ---------------------------------------------------------------- 2. resume checks what it resumes, before writing

@pytest.mark.parametrize('where', ['in place', 'into a new --out'])
def test_resume_onto_other_classes_refused_before_writing(interrupted, tmp_path, where):
    "Data of other classes, the same count: refused before anything is written; both folders, and the new --out, as they were."
    _, src = interrupted
    run, other = copy_run(src, tmp_path/'run'), make_data(tmp_path/'other', cats=('2', '77'))
    new = ['--out', tmp_path/'new'] if where != 'in place' else []
    before = tree(tmp_path)
    r = flower('train', '--data', other, *THREE, '--resume', run/'last.pth', *new, cwd=tmp_path)
    refused(r, str(run/'last.pth'), 'other classes', str(other), 'resume with the data it was trained on')
    assert tree(tmp_path) == before and not (tmp_path/'new').exists()

@pytest.mark.parametrize('case', ['other --size', 'other --arch', 'other names'])
def test_resume_with_other_settings_refused_in_their_words(interrupted, tmp_path, case):
    "Size, architecture, class names: each mismatch is one line that says what to resume with (tests/test_safety.py: epochs, bs)."
    data, src = interrupted
    run = copy_run(src, tmp_path/'run')
    data = shutil.copytree(data, tmp_path/'data')
    args, needles = {'other --size': (['--size', '64'], ['--size 32, not --size 64', 'resume with --size 32']),
                     'other --arch': (['--arch', 'resnet18', '--offline'],
                                      ['--arch efficientnet_lite0, not --arch resnet18', 'resume with --arch efficientnet_lite0']),
                     'other names': ([], ['other classes', 'resume with the data it was trained on'])}[case]
    if case == 'other names': (data/'cat_to_name.json').write_text('{"1": "pink primrose", "50": "common dandelion"}')
    before = tree(tmp_path)
    r = flower('train', '--data', data, *THREE, *args, '--resume', run/'last.pth', cwd=tmp_path)
    refused(r, str(run/'last.pth'), *needles)
    assert tree(tmp_path) == before

def test_resume_with_another_bs_refused_then_resumes(interrupted, tmp_path):
    "Another --bs: refused before any work with the --bs to give; last.pth is unchanged, and resuming with that --bs finishes the run."
    data, src = interrupted
    run, data_before = copy_run(src, tmp_path/'run'), tree(data)
    before = tree(tmp_path)
    r = flower('train', '--data', data, *THREE, '--bs', '8', '--resume', run/'last.pth', cwd=tmp_path)
    refused(r, str(run/'last.pth'), 'is from a run with --bs 4, not --bs 8', 'resume with --bs 4')
    assert tree(tmp_path) == before
    r = clean(flower('train', '--data', data, *THREE, '--resume', run/'last.pth', cwd=tmp_path))
    m = consistent_run(run, data)
    assert tree(data) == data_before
    assert [h['epoch'] for h in m['history']] == [1, 2, 3] and 'best validation accuracy' in r.stdout

@pytest.mark.parametrize('change', ['4 more photos', 'a broken photo'])
def test_refused_resume_into_a_new_out_leaves_nothing_there(interrupted, tmp_path, change):
    "A resume into a new --out refused once it has started (the data has changed since): no best.pth, no folder, left there."
    data, src = interrupted
    run, data = copy_run(src, tmp_path/'run'), shutil.copytree(data, tmp_path/'data')
    if change == 'a broken photo': next((data/'train'/'50').iterdir()).write_bytes(b'')
    else:
        for f in photos('train', '1', 4, skip=3): shutil.copy(f, data/'train'/'1'/f.name)
    before = tree(tmp_path)
    r = flower('train', '--data', data, *THREE, '--resume', run/'last.pth', '--out', tmp_path/'new', cwd=tmp_path)
    one_line(r, 2)
    assert not (tmp_path/'new').exists(), sorted(p.name for p in (tmp_path/'new').iterdir())
    assert tree(tmp_path) == before

@pytest.mark.parametrize('where', ['in place', 'into a new --out'])
def test_resuming_a_finished_run_writes_nothing(finished, tmp_path, where):
    "A finished run's last.pth: it says the run is finished, exits 0, writes nothing and claims no file."
    data, src = finished
    run = copy_run(src, tmp_path/'run')
    before = tree(tmp_path)
    new = ['--out', tmp_path/'new'] if where != 'in place' else []
    r = clean(flower('train', '--data', data, *ONE, '--resume', run/'last.pth', *new, cwd=tmp_path))
    assert 'finished all its epochs: nothing to resume' in r.stdout and 'wrote' not in r.stdout, r.stdout
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- 3. no output replaces an input

# Each case: the arguments (C: the finished run's folder, D: its data, P: a photo in it, I: a folder of photos, T: this
# test's folder)
# and what the one line says.
INPUTS = {
    'evaluate --json the checkpoint':  (['evaluate', '--checkpoint', 'C/best.pth', '--data', 'D', '--json', 'C/best.pth', '--overwrite'],
                                        ['--json', 'is --checkpoint']),
    'evaluate --json a hard link to it': (['evaluate', '--checkpoint', 'C/best.pth', '--data', 'D', '--json', 'T/hard.json', '--overwrite'],
                                        ['--json', 'is the same file as --checkpoint']),
    'evaluate --json a photo':         (['evaluate', '--checkpoint', 'C/best.pth', '--data', 'D', '--json', 'P', '--overwrite'],
                                        ['--json', 'is inside --data']),
    'predict --csv a photo':           (['predict', '--checkpoint', 'C/best.pth', '--images', 'I', '--csv', 'I/photo.jpg', '--overwrite'],
                                        ['--csv', 'is inside --images']),
    'predict --csv a hard link to a photo': (['predict', '--checkpoint', 'C/best.pth', '--images', 'I', '--csv', 'T/hard.csv', '--overwrite'],
                                        ['--csv', 'hard.csv', 'is the same file as', 'in --images', '(a hard link)']),
    'predict --csv into the images':   (['predict', '--checkpoint', 'C/best.pth', '--images', 'I', '--csv', 'I/preds.csv'],
                                        ['--csv', 'is inside --images']),
    'train --out inside --data':       (['train', '--data', 'D', *ONE, '--out', 'D/run'], ['--out', 'is inside --data']),
    'train --out the data':            (['train', '--data', 'D', *ONE, '--out', 'D', '--overwrite'], ['--out', 'is --data']),
    'lr-find --plot inside --data':    (['lr-find', '--data', 'D', *FAST[:-2], '--plot', 'D/valid/lr.png'], ['--plot', 'is inside --data']),
}

@pytest.mark.parametrize('case', list(INPUTS))
def test_no_output_replaces_an_input(finished, tmp_path, case):
    "An output that is an input, or inside one, by path or by hard link: refused, --overwrite or not, and nothing changes."
    data, run = finished
    c, d = copy_run(run, tmp_path/'run'), shutil.copytree(data, tmp_path/'data')
    i = image_folder(tmp_path/'images', ['photo.jpg', 'sub/other.jpg'])
    os.link(c/'best.pth', tmp_path/'hard.json'); os.link(i/'photo.jpg', tmp_path/'hard.csv')
    where = dict(C=c, D=d, P=sorted((d/'valid'/'1').iterdir())[0], I=i, T=tmp_path)
    args, needles = INPUTS[case]
    args = [str(where[a[0]]) + a[1:] if a[:1] in where and a[1:2] in ('', '/') else a for a in args]
    before = tree(tmp_path)
    r = flower(*args, cwd=tmp_path)
    refused(r, *needles, 'never writes over what it reads, with --overwrite or without')
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- 4. every file read or named

def test_a_name_that_is_not_utf8_is_written_escaped(finished, tmp_path):
    "A photo whose name is not UTF-8 (from a Windows zip): predicted, its name in the CSV in escape_name's reversible form."
    _, run = finished
    raw = [b'caf\xe9.jpg', b'ok.jpg', b'sub\xff/inner.jpg']
    images = image_folder(tmp_path/'images', raw)
    before = tree(images)
    r = flower('predict', '--checkpoint', run/'best.pth', '--images', images, '--csv', tmp_path/'p.csv', cwd=tmp_path)
    one_line(r, 0, 'not UTF-8', kind='warning')
    written = [row['file_name'] for row in csv_rows(tmp_path/'p.csv')]
    assert sorted(written) == sorted(escape_name(os.fsdecode(b)) for b in raw), written
    assert r'caf\xe9.jpg' in written and sorted(unescape_name(n) for n in written) == sorted(raw)
    assert tree(images) == before

def _save_as(src:Path, dst:Path):
    fmt = {'.tif': 'TIFF', '.tiff': 'TIFF', '.gif': 'GIF', '.jfif': 'JPEG', '.jpg': 'JPEG'}[dst.suffix.lower()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert('RGB').save(dst, format=fmt)

def test_tif_gif_jfif_are_trained_on_and_the_rest_named(tmp_path):
    """Photos in .tif, .gif and .jfif are read in training; a loose photo beside the class folders, an unknown extension,
    a HEIC and a pipe named x.jpg are named in one warning line with their count (the pipe never opened)."""
    data = make_data(tmp_path/'data')
    for cat in ('1', '50'):
        for k, ext in enumerate(('.tif', '.gif', '.jfif')):
            _save_as(photos('train', cat, 1, skip=5 + k)[0], data/'train'/cat/f'extra{ext}')
        _save_as(photos('valid', cat, 1, skip=1)[0], data/'valid'/cat/'extra.tiff')
    shutil.copy(photos('train', '1', 1, skip=9)[0], data/'train'/'loose.jpg')
    (data/'train'/'1'/'notes.xyz').write_text('not a photo')
    (data/'train'/'50'/'phone.heic').write_bytes(b'\0\0\0\x18ftypheic')
    os.mkfifo(data/'train'/'50'/'x.jpg')
    before = tree(data)
    r = flower('train', '--data', data, *ONE, '--out', tmp_path/'run', cwd=tmp_path, timeout=120)
    line = one_line(r, 0, 'skipped 4 files', 'loose.jpg', 'notes.xyz', 'phone.heic', 'x.jpg', kind='warning')
    assert 'pipe' in line, line
    assert '12 training and 4 validation images in 2 classes' in r.stdout, r.stdout
    assert tree(data) == before

def test_tif_gif_jfif_get_rows_in_predict(finished, tmp_path):
    "predict reads every format Pillow opens (a row each in the CSV), and names what it does not read in one warning line."
    _, run = finished
    images = tmp_path/'images'
    for k, ext in enumerate(('.tif', '.tiff', '.gif', '.jfif', '.jpg')):
        _save_as(sorted((SAMPLE/'test').glob('*.jpg'))[k % 4], images/f'p{ext}')
    (images/'notes.xyz').write_text('not a photo')
    before = tree(images)
    r = flower('predict', '--checkpoint', run/'best.pth', '--images', images, '--csv', tmp_path/'p.csv', cwd=tmp_path)
    one_line(r, 0, 'skipped 1 file', 'notes.xyz', kind='warning')
    assert [row['file_name'] for row in csv_rows(tmp_path/'p.csv')] == ['p.gif', 'p.jfif', 'p.jpg', 'p.tif', 'p.tiff']
    assert tree(images) == before

def test_a_pipe_named_like_a_photo_never_hangs_predict(finished, tmp_path):
    "A pipe named x.jpg among the photos: never opened (which would wait for a writer for ever), named in one warning line."
    _, run = finished
    images = image_folder(tmp_path/'images', ['a.jpg'])
    os.mkfifo(images/'x.jpg')
    before = tree(tmp_path)
    r = flower('predict', '--checkpoint', run/'best.pth', '--images', images, '--csv', tmp_path/'p.csv', cwd=tmp_path, timeout=60)
    one_line(r, 0, 'skipped 1 file', 'x.jpg (a pipe, never opened)', kind='warning')
    assert [row['file_name'] for row in csv_rows(tmp_path/'p.csv')] == ['a.jpg']
    after = tree(tmp_path); after.pop('p.csv')
    assert after == before

def test_formula_names_one_warning_names_exact(finished, tmp_path):
    "CSV names starting with =, +, - or @: one warning line; the names are written exactly, as Kaggle wants them."
    _, run = finished
    names = ['+a.jpg', '-b.jpg', '=1+2.jpg', '@c.jpg', 'd.jpg']
    images = image_folder(tmp_path/'images', names)
    before = tree(images)
    r = flower('predict', '--checkpoint', run/'best.pth', '--images', images, '--csv', tmp_path/'p.csv', cwd=tmp_path)
    one_line(r, 0, 'begin with =, +, - or @', kind='warning')
    assert [row['file_name'] for row in csv_rows(tmp_path/'p.csv')] == names and tree(images) == before


# ---------------------------------------------------------------- 5. at least 2 classes; missing test files reported

def test_one_class_refused(tmp_path):
    "Training on one class (which would score 100% and answer that class for every photo): refused in one line, nothing made."
    data = make_data(tmp_path/'data', cats=('1',))
    before = tree(tmp_path)
    r = flower('train', '--data', data, *ONE, '--out', tmp_path/'run', cwd=tmp_path)
    refused(r, 'all of one category', 'at least 2', 'add a folder of photos of another category')
    assert tree(tmp_path) == before

def test_demo_reports_labelled_test_files_missing(tmp_path):
    "test_labels.csv lists a photo that is not in test/: the demo says so, and scores the others; its training is under <out>/train/."
    data = make_data(tmp_path/'data', test=2)
    labels = (SAMPLE/'test_labels.csv').read_text().splitlines()
    present = {p.name for p in (data/'test').iterdir()}
    (data/'test_labels.csv').write_text('\n'.join([labels[0], *[l for l in labels[1:] if l.split(',')[0] in present],
                                                   'gone.jpg,50']) + '\n')
    before = tree(data)
    out = tmp_path/'demo'
    r = flower('demo', '--data', data, '--out', out, '--size', '32', '--freeze-epochs', '1', '--epochs', '0',
               '--workers', '0', '--device', 'cpu', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r'test accuracy: \d/2 ', r.stdout) and '1 labelled files are not in test/' in r.stdout, r.stdout
    one_line(r, 0, 'gone.jpg', kind='warning')
    assert RUN_FILES <= {p.name for p in (out/'train').iterdir()} and (out/'test_predictions.csv').is_file()
    assert tree(data) == before

def test_evaluate_reports_labelled_photos_it_could_not_score(finished, tmp_path):
    "A labelled photo that cannot be read, with --skip-bad: evaluate names it and scores the others, and says how many."
    data, run = finished
    data = shutil.copytree(data, tmp_path/'data')
    bad = sorted((data/'valid'/'1').iterdir())[0]; bad.write_bytes(b'')
    before = tree(data)
    r = clean(flower('evaluate', '--checkpoint', run/'best.pth', '--data', data, '--skip-bad', '--json', tmp_path/'e.json',
                     '--plot', tmp_path/'e.png', cwd=tmp_path))
    assert f'skipped 1 unreadable: 1/{bad.name} (empty file (0 bytes))' in r.stdout, r.stdout
    assert json.loads((tmp_path/'e.json').read_text())['n_images'] == 1
    assert tree(data) == before


# ---------------------------------------------------------------- 6. atomic writes: full disk, races, closed stdout

@pytest.fixture
def tiny_disk(tmp_path):
    "A real 64 KiB file system (tmpfs) at tmp_path/disk, where a root user may mount one; skipped elsewhere."
    d = tmp_path/'disk'; d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(d)], capture_output=True, text=True)
    if r.returncode != 0: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try: yield d
    finally:
        if subprocess.run(['umount', str(d)]).returncode != 0: subprocess.run(['umount', '-l', str(d)], check=True)

def fill(disk:Path):
    "Fill `disk` to the last byte."
    with open(disk/'filler', 'wb', buffering=0) as f:
        try:
            while True: f.write(b'\0'*4096)
        except OSError: pass

FULL = {   # what is on the disk first, the arguments (K: the checkpoint, D: the data, X: the disk), what the line says
    'predict, a new CSV':      ('full', ['predict', '--checkpoint', 'K', '--images', 'D/test', '--csv', 'X/p.csv'],
                                ['cannot write X/p.csv: No space left on device', 'no p.csv was left there']),
    'predict, over a CSV':     ('old csv, full', ['predict', '--checkpoint', 'K', '--images', 'D/test', '--csv', 'X/p.csv', '--overwrite'],
                                ['cannot write X/p.csv: No space left on device', 'the existing p.csv there is untouched']),
    'evaluate, the JSON':      ('full', ['evaluate', '--checkpoint', 'K', '--data', 'D', '--json', 'X/e.json', '--plot', 'X/e.png'],
                                ['cannot write X/e.json: No space left on device', 'no e.json was left there']),
    'train, a checkpoint':     ('empty', ['train', '--data', 'D', *ONE, '--out', 'X/run'],
                                ['cannot write X/run/', '.pth: No space left on device', '.pth was left there']),
    'train, a full disk':      ('full', ['train', '--data', 'D', *ONE, '--out', 'X/run'], ['X/run', 'No space left on device']),
}

@pytest.mark.parametrize('case', list(FULL))
def test_full_disk_is_one_line(finished, tiny_disk, tmp_path, case):
    "A full disk: one line that names the file and says what is intact; the disk's files as they were, no temporary file left."
    data, run = finished
    first, args, needles = FULL[case]
    if 'old csv' in first: (tiny_disk/'p.csv').write_text('file_name,id\nold.jpg,1\n')
    if 'full' in first: fill(tiny_disk)
    where = dict(K=str(run/'best.pth'), D=str(data), X=str(tiny_disk))
    sub = lambda a: where[a[0]] + a[1:] if a[:1] in where and a[1:2] in ('', '/') else a
    before = tree(tmp_path)
    r = flower(*map(sub, args), cwd=tmp_path)
    one_line(r, 2, *(n.replace('X/', f'{tiny_disk}/') for n in needles))
    assert tree(tmp_path) == before

def test_two_predicts_to_one_csv_one_wins(finished, tmp_path):
    "Two predicts to one new CSV at once, without --overwrite: exactly one writes it, whole; the other is refused in one line."
    data, run = finished
    images = image_folder(tmp_path/'images', [f'p{i}.jpg' for i in range(6)])
    out = tmp_path/'out'; out.mkdir()
    args = ['predict', '--checkpoint', run/'best.pth', '--images', images, '--csv', out/'p.csv']
    res = together(tmp_path, tmp_path/'gate', args, args)
    assert sorted(r.returncode for r in res) == [0, 2], [(r.returncode, r.stderr[-2000:]) for r in res]
    won, lost = sorted(res, key=lambda r: r.returncode)
    line = one_line(lost, 2, str(out/'p.csv'))
    assert 'appeared while it was being written' in line or 'already exists' in line, line
    assert f"wrote {out/'p.csv'} (6 rows)" in won.stdout
    assert [row['file_name'] for row in csv_rows(out/'p.csv')] == [f'p{i}.jpg' for i in range(6)]
    assert [p.name for p in out.iterdir()] == ['p.csv']   # no temporary file left

def test_train_into_a_closed_pipe(tmp_path):
    "`flower_tl train ... | head -2`: no traceback, exit 0, and the run folder complete."
    data = make_data(tmp_path/'data')
    out, status, data_before = tmp_path/'run', tmp_path/'status', tree(data)
    cmd = shlex.join(map(str, [sys.executable, '-m', 'flower_tl', 'train', '--data', data, *ONE, '--out', out]))
    r = subprocess.run(['bash', '-c', f'set +o pipefail; {cmd} | head -2; echo ${{PIPESTATUS[0]}} > {status}'],
                       capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert r.stdout.startswith('training efficientnet_lite0') and len(r.stdout.splitlines()) == 2, r.stdout
    assert 'Traceback' not in r.stderr and 'BrokenPipe' not in r.stderr and 'Exception ignored' not in r.stderr, r.stderr
    assert status.read_text().strip() == '0', (status.read_text(), r.stderr[-3000:])
    m = consistent_run(out, data)
    assert [h['epoch'] for h in m['history']] == [1] and tree(data) == data_before


# ---------------------------------------------------------------- 7. messages

def test_checkpoint_a_folder_suggests_its_best_pth(finished, tmp_path):
    "A run's folder as --checkpoint: the line names the best.pth inside it (never 'not found')."
    data, run = finished
    before = tree(tmp_path)
    r = flower('predict', '--checkpoint', run, '--images', data/'test', '--csv', tmp_path/'p.csv', cwd=tmp_path)
    refused(r, f'checkpoint {run} is a folder', str(run/'best.pth'), absent=['not found'])
    assert tree(tmp_path) == before

@pytest.mark.parametrize('kind', ['csv', 'png'])
def test_a_file_that_is_not_a_checkpoint_is_called_that(finished, tmp_path, kind):
    "A CSV or a PNG as --checkpoint: 'not a PyTorch file', never a warning about dangerous Python objects."
    data, run = finished
    f = tmp_path/f'model.{kind}'
    if kind == 'csv': f.write_text('file_name,id\na.jpg,1\n')
    else: shutil.copy(run/'curves.png', f)
    before = tree(tmp_path)
    r = flower('predict', '--checkpoint', f, '--images', data/'test', '--csv', tmp_path/'p.csv', cwd=tmp_path)
    refused(r, str(f), 'is not a PyTorch file', absent=['Python objects', 'safe load', 'pickle', 'unless you made it'])
    assert tree(tmp_path) == before

def test_a_missing_flower_name_is_told_in_flags(tmp_path):
    "cat_to_name.json without a name for a class: one line that a command-line user can act on (no Python arguments)."
    data = make_data(tmp_path/'data')
    (data/'cat_to_name.json').write_text('{"1": "pink primrose"}')
    before = tree(tmp_path)
    r = flower('train', '--data', data, *ONE, '--out', tmp_path/'run', cwd=tmp_path)
    refused(r, 'cat_to_name.json', 'no name for category 50')
    assert tree(tmp_path) == before

def test_a_broken_photo_in_training_is_named_in_flags(tmp_path):
    "A photo that cannot be read, found once training reads it: one line naming it, in words a command-line user can act on; no folder left."
    data = make_data(tmp_path/'data')
    bad = sorted((data/'train'/'50').iterdir())[0]; bad.write_bytes(b'')
    before = tree(tmp_path)
    r = flower('train', '--data', data, *ONE, '--out', tmp_path/'run', cwd=tmp_path)
    one_line(r, 2, bad.name, 'empty file (0 bytes)')
    assert tree(tmp_path) == before

def test_nfd_folders_match_nfc_names_with_a_bom(tmp_path):
    "Class folders named in NFD (as macOS writes them), cat_to_name.json in NFC with a UTF-8 byte-order mark: accepted, names matched."
    nfc_id = 'rosé'
    nfd_id = unicodedata.normalize('NFD', nfc_id)
    assert nfd_id != nfc_id
    data = tmp_path/'data'
    for split, n in (('train', 3), ('valid', 1)):
        for src, cat in (('1', nfd_id), ('50', 'lys')):
            (data/split/cat).mkdir(parents=True)
            for f in photos(split, src, n): shutil.copy(f, data/split/cat/f.name)
    (data/'cat_to_name.json').write_text('\ufeff' + json.dumps({nfc_id: 'Rose', 'lys': 'Lily'}, ensure_ascii=False), encoding='utf-8')
    before = tree(data)
    clean(flower('train', '--data', data, *ONE, '--out', tmp_path/'run', cwd=tmp_path))
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert dict(zip(m['classes'], m['names'])) == {'lys': 'Lily', nfc_id: 'Rose'}, (m['classes'], m['names'])
    assert tree(data) == before


# ---------------------------------------------------------------- 8. the Python API, and --valid

def test_a_lone_val_folder_is_used_saying_so(tmp_path):
    "The PyTorch tutorial's layout, train/ and val/: val/ is the validation set, said in one line."
    data = make_data(tmp_path/'data', valid_name='val')
    before = tree(data)
    r = flower('train', '--data', data, *ONE, '--out', tmp_path/'run', cwd=tmp_path)
    one_line(r, 0, 'no valid/ folder', 'val/', kind='warning')
    assert '6 training and 2 validation images' in r.stdout, r.stdout
    assert tree(data) == before

def test_valid_val_names_the_validation_folder(tmp_path):
    "--valid val: that folder, not valid/ (here of one class only, which would be refused), with no word."
    data = make_data(tmp_path/'data', valid_name='val')
    (data/'valid'/'1').mkdir(parents=True); shutil.copy(photos('valid', '1', 1)[0], data/'valid'/'1')
    before = tree(data)
    r = clean(flower('train', '--data', data, *ONE, '--valid', 'val', '--out', tmp_path/'run', cwd=tmp_path))
    assert '6 training and 2 validation images' in r.stdout, r.stdout
    assert tree(data) == before

API = """
    import json, os, sys, warnings
    import numpy as np
    from pathlib import Path
    from PIL import Image, ImageOps
    from flower_tl.core import UserError
    from flower_tl.predict import Predictor
    ckpt, photo, data, val_data = map(Path, sys.argv[1:5])
    p = Predictor.from_checkpoint(ckpt, 'cpu')
    out = {}
    def case(name, f):
        try: out[name] = f()
        except Exception as e: out[name] = f"{type(e).__name__}: {e}"
    probs = lambda r: [t['prob'] for t in r['topk']]
    by_path = p.predict(photo)
    same = lambda r: max(abs(a - b) for a, b in zip(probs(r), probs(by_path))) < 1e-6 and r['id'] == by_path['id']
    upright = np.asarray(ImageOps.exif_transpose(Image.open(photo)).convert('RGB'))
    case('PIL image', lambda: same(p.predict(Image.open(photo))))
    case('str path', lambda: same(p.predict(str(photo))))
    case('bytes path', lambda: same(p.predict(os.fsencode(photo))))
    case('array', lambda: same(p.predict(upright)))
    case('array differs from the unturned photo', lambda: not same(p.predict(np.asarray(Image.open(photo).convert('RGB')))))
    def learner():
        from flower_tl.models import create_model
        from flower_tl.train import Learner
        try: Learner(str(data), create_model('efficientnet_lite0', 2, seed=0))
        except UserError as e: return f"UserError: {e}"
        return 'accepted'
    case('Learner(folder, model)', learner)
    def valid_val():
        from flower_tl.data import FlowerData
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            fd = FlowerData.from_folder(val_data, valid='val', num_workers=0)
        return [len(fd.train_ds), len(fd.valid_ds), [str(m.message) for m in w]]
    case("FlowerData.from_folder(valid='val')", valid_val)
    print(json.dumps(out))
"""

@pytest.fixture(scope='module')
def api(finished, tmp_path_factory):
    "What the Python API does with each kind of photo and argument, in one `python -c` run."
    root = tmp_path_factory.mktemp('api')
    data, run = finished
    src = sorted((SAMPLE/'test').glob('*.jpg'))[0]
    img = Image.open(src).convert('RGB').transpose(Image.Transpose.ROTATE_90)   # stored on its side,
    exif = Image.Exif(); exif[0x0112] = 8                                        # with the EXIF tag that turns it back
    img.save(root/'phone.jpg', exif=exif, quality=95)
    assert Image.open(root/'phone.jpg').size[0] != Image.open(root/'phone.jpg').size[1]
    val_data = make_data(root/'val_data', valid_name='val')
    before = tree(root)
    r = python(API, run/'best.pth', root/'phone.jpg', data, val_data, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert tree(root) == before
    return json.loads(r.stdout.splitlines()[-1])

@pytest.mark.parametrize('how', ['PIL image', 'str path', 'bytes path', 'array'])
def test_predict_takes_a_photo_however_passed(api, how):
    "Predictor.predict: a PIL image gets the EXIF rotation its path gets, the same result; str, bytes and an upright array too."
    assert api[how] is True, api[how]
    assert api['array differs from the unturned photo'] is True   # the photo's rotation matters to the model

def test_learner_given_a_folder_says_what_it_needs(api):
    said = api['Learner(folder, model)']
    assert said.startswith('UserError: Learner needs the data as a FlowerData') and 'FlowerData.from_folder(' in said, said

def test_from_folder_valid_val(api):
    n_train, n_valid, warned = api["FlowerData.from_folder(valid='val')"]
    assert (n_train, n_valid, warned) == (6, 2, []), api
