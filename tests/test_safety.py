"""Input and output safety of the `flower_tl` command (issue 17), run as a user would run it: one subprocess per case.

Every refused run must exit with status 2, print exactly one line on stderr and no traceback, and leave every file
and folder as it was: the whole test folder is hashed before and after (files by content, links by target)."""
import ctypes, hashlib, json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

from flower_tl.photos import sample_path
from tests.conftest import ROOT, ctrl_c_delivered

SAMPLE = sample_path()
FAST = ['--arch', 'efficientnet_lite0', '--size', '32', '--bs', '4', '--workers', '0', '--device', 'cpu']


def _without_root_powers():
    "Run as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so that folder permissions hold for this process too."
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0: raise OSError(ctypes.get_errno(), 'PR_CAPBSET_DROP')   # PR_CAPBSET_DROP

def cli(*args, cwd, unprivileged=False, timeout=300, module='flower_tl'):
    "`python -m MODULE ARGS` in `cwd`, as a separate process (with root's override of permissions dropped if asked)."
    env = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    drop = unprivileged and os.geteuid() == 0
    def setup():
        ctrl_c_delivered()
        if drop: _without_root_powers()
    kw = dict(cwd=cwd, env=env, text=True, preexec_fn=setup)
    cmd = [sys.executable, '-m', module, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)

def snapshot(root:Path) -> dict:
    "Every file, link and folder under `root`: files by the hash of their content, links by their target."
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):   # links to folders are listed, not entered
        for n in dirnames + filenames:
            p = Path(dirpath)/n
            rel = p.relative_to(root).as_posix()
            if p.is_symlink(): out[rel] = 'link to ' + os.readlink(p)
            elif p.is_dir(): out[rel] = 'folder'
            elif p.is_file(): out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else: out[rel] = 'special'
    return out

def refused(r, *needles, absent=()):
    "Status 2, one line on stderr naming `needles` (and none of `absent`), no traceback, nothing on stdout."
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err and err.startswith('flower_tl '), err
    for n in needles: assert n in err, (n, err)
    for n in absent: assert n not in err, (n, err)
    assert r.stdout == '', r.stdout
    return err

def tiny_data(root:Path, test:int=0) -> Path:
    "Two of the sample's classes: 3 training and 1 validation photo each (and `test` unlabelled photos)."
    for cat in ('1', '50'):
        for split, n in (('train', 3), ('valid', 1)):
            (root/split/cat).mkdir(parents=True)
            for f in sorted((SAMPLE/split/cat).iterdir())[:n]: shutil.copy(f, root/split/cat/f.name)
    if test:
        (root/'test').mkdir()
        for f in sorted((SAMPLE/'test').iterdir())[:test]: shutil.copy(f, root/'test'/f.name)
    return root

def dead_pid() -> int:
    "The id of a process that has ended."
    p = subprocess.Popen([sys.executable, '-c', 'pass']); p.wait()
    return p.pid

class Evil:
    "Unpickles by calling a function: what a safe load must refuse (harmless here: it only prints)."
    def __reduce__(self): return (print, ('a safe load would never print this',))

@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """A real (untrained) 2-class checkpoint with the training state of a run interrupted after 1 of its 3 epochs of stage 1
    (without its recipe, as older versions saved it), the same with its recipe, that of a finished run, and an evil one."""
    from dataclasses import asdict
    from flower_tl.models import create_model, save_checkpoint
    from flower_tl.fine_tune import recipe
    d = tmp_path_factory.mktemp('ckpt')
    model = create_model('efficientnet_lite0', 2, seed=0)
    r = recipe('cpu', 'efficientnet_lite0').replace(bs=4, freeze_epochs=3)   # what FAST and --freeze-epochs 3 make
    ts = dict(stage='frozen', fit_epochs=3, fit_epoch=1)
    save_checkpoint(d/'last.pth', model, classes=['1', '50'], size=32, train_state=ts)
    save_checkpoint(d/'recipe_last.pth', model, classes=['1', '50'], size=32, train_state=dict(ts, recipe=asdict(r)))
    save_checkpoint(d/'done_last.pth', model, classes=['1', '50'], size=32,   # both stages done: 3 epochs, then 2
                    train_state=dict(stage='partial', fit_epochs=2, fit_epoch=2, recipe=asdict(r.replace(epochs=2))))
    save_checkpoint(d/'best.pth', model, classes=['1', '50'], size=32)
    torch.save(dict(format=1, model=Evil()), d/'evil.pth')
    return d

@pytest.fixture
def world(tmp_path, checkpoints):
    "A user's folder: data, runs (interrupted, the same, interrupted with its recipe, finished), a read-only folder, a plain file, a link, an existing CSV."
    w = tmp_path/'w'
    tiny_data(w/'data', test=2)
    for name, last in (('run', 'last.pth'), ('other', 'last.pth'), ('recent', 'recipe_last.pth'), ('done', 'done_last.pth')):
        (w/name).mkdir(parents=True)
        shutil.copy(checkpoints/'best.pth', w/name/'best.pth'); shutil.copy(checkpoints/last, w/name/'last.pth')
        (w/name/'metrics.json').write_text(json.dumps({'run': name}))
    shutil.copy(checkpoints/'evil.pth', w/'evil.pth')
    (w/'notes.txt').write_text('precious')
    (w/'existing.csv').write_text('file_name,id\nold.jpg,1\n')
    (w/'link.csv').symlink_to('notes.txt')
    (w/'linked_run').mkdir(); (w/'linked_run'/'notes.txt').write_text('mine'); (w/'linked_run'/'best.pth').symlink_to('notes.txt')
    for name, text in (('bad_json', '{"1": "pink primrose",'), ('list_json', '["pink primrose", "english marigold"]')):
        tiny_data(w/name); (w/name/'cat_to_name.json').write_text(text)
    (w/'bad_images').mkdir(); shutil.copy(SAMPLE/'test'/'image_00249.jpg', w/'bad_images'); (w/'bad_images'/'broken.jpg').write_bytes(b'')
    (w/'ro').mkdir(); (w/'ro'/'kept.txt').write_text('kept'); (w/'ro').chmod(0o555)
    yield w
    (w/'ro').chmod(0o755)


# Each case: the arguments (W/ is the world's folder), what the one line must say, and what it must not say.
CASES = {
    'lr 0':                  (['train', '--data', 'W/data', *FAST, '--lr', '0', '--out', 'W/new'], ['--lr must be a number > 0'], []),
    'lr nan':                (['train', '--data', 'W/data', *FAST, '--lr', 'nan', '--out', 'W/new'], ['--lr must be a number > 0'], []),
    'size 10':               (['train', '--data', 'W/data', *FAST, '--size', '10', '--out', 'W/new'], ['--size 10 is too small', '32'], []),
    'size 100000':           (['train', '--data', 'W/data', *FAST, '--size', '100000', '--out', 'W/new'],
                              ['--size 100000 with --bs 4 needs at least', 'GB of memory'], []),
    'no epochs':             (['train', '--data', 'W/data', *FAST, '--freeze-epochs', '0', '--epochs', '0', '--out', 'W/new'],
                              ['nothing to train: --freeze-epochs and --epochs are both 0'], []),
    'device xpu':            (['train', '--data', 'W/data', *FAST, '--device', 'xpu', '--out', 'W/new'], ['--device xpu', 'not on xpu'], []),
    'device meta':           (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', 'W/p.csv',
                               '--device', 'meta'], ['--device meta', 'not on meta'], []),
    'device cuda, no GPU':   (['train', '--data', 'W/data', *FAST, '--device', 'cuda', '--out', 'W/new'], ['no CUDA GPU'], []),
    'freeze-to -1':          (['train', '--data', 'W/data', *FAST, '--freeze-to', '-1', '--out', 'W/new/deeper'], ['--freeze-to -1'], []),
    'out in read-only':      (['train', '--data', 'W/data', *FAST, '--out', 'W/ro/run'], ['cannot write into', 'ro: permission denied'], []),
    'out under a file':      (['train', '--data', 'W/data', *FAST, '--out', 'W/notes.txt/run'], ['notes.txt is a file, not a folder'], []),
    'out in /proc':          (['train', '--data', 'W/data', *FAST, '--out', '/proc/self/run'], ['cannot write into /proc/self'], []),
    'out holds a link':      (['train', '--data', 'W/data', *FAST, '--out', 'W/linked_run', '--overwrite'],
                              ['best.pth is a symbolic link, not a regular file'], ['--overwrite']),
    'csv in read-only':      (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', 'W/ro/p.csv'],
                              ['cannot write into', 'ro: permission denied'], []),
    'csv under a file':      (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', 'W/notes.txt/p.csv'],
                              ['notes.txt is a file, not a folder'], []),
    'csv in /proc':          (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', '/proc/p.csv'],
                              ['cannot write into /proc'], []),
    'csv /dev/stdout':       (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', '/dev/stdout'],
                              ['/dev/stdout is a symbolic link'], ['--overwrite']),
    'csv /dev/full':         (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', '/dev/full', '--overwrite'],
                              ['/dev/full is a device, not a regular file'], ['--overwrite']),
    'csv a link':            (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', 'W/link.csv', '--overwrite'],
                              ['link.csv is a symbolic link'], ['--overwrite']),
    'csv a folder':          (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', 'W/data', '--overwrite'],
                              ['is a folder'], ['--overwrite']),
    'csv exists':            (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/data/test', '--csv', 'W/existing.csv'],
                              ['existing.csv already exists; pass --overwrite'], ['overwrite=True']),
    'unreadable image':      (['predict', '--checkpoint', 'W/run/best.pth', '--images', 'W/bad_images', '--csv', 'W/p.csv'],
                              ['broken.jpg', 'pass --skip-bad'], ['skip_bad=True']),
    'unsafe checkpoint':     (['predict', '--checkpoint', 'W/evil.pth', '--images', 'W/data/test', '--csv', 'W/p.csv'],
                              ['evil.pth'], ['weights_only=False']),
    'names not JSON':        (['demo', '--data', 'W/bad_json', '--size', '32', '--workers', '0', '--device', 'cpu'],
                              ['cat_to_name.json is not valid JSON'], []),
    'names not a dict':      (['demo', '--data', 'W/list_json', '--size', '32', '--workers', '0', '--device', 'cpu'],
                              ['cat_to_name.json holds a JSON list, not a mapping'], []),
    'resume into other run': (['train', '--data', 'W/data', *FAST, '--freeze-epochs', '3', '--resume', 'W/run/last.pth',
                               '--out', 'W/other'], ['other is not empty; pass --overwrite', '--out'], []),
    'resume, other epochs':  (['train', '--data', 'W/data', *FAST, '--freeze-epochs', '2', '--resume', 'W/run/last.pth'],
                              ['is from a run with --freeze-epochs 3', 'resume with --freeze-epochs 3'], []),
    'resume, other bs':      (['train', '--data', 'W/data', *FAST, '--freeze-epochs', '3', '--bs', '8', '--resume', 'W/recent/last.pth'],
                              ['is from a run with --bs 4, not --bs 8', 'resume with --bs 4'], []),
    'resume best.pth':       (['train', '--data', 'W/data', *FAST, '--resume', 'W/run/best.pth'], ['holds no training state'], []),
}

@pytest.mark.parametrize('case', list(CASES))
def test_refused_before_any_work(case, world):
    args, needles, absent = CASES[case]
    if case == 'device cuda, no GPU' and torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    if case == 'out in /proc' and not os.path.isdir('/proc/self'): pytest.skip('no /proc here')
    if case.endswith('read-only') and os.geteuid() == 0:
        try: subprocess.run([sys.executable, '-c', ''], preexec_fn=_without_root_powers, check=True)
        except (OSError, subprocess.SubprocessError): pytest.skip("root here cannot give up its override of permissions")
    before, dev = snapshot(world.parent), os.stat('/dev/full')
    r = cli(*[a.replace('W/', f'{world}/', 1) if a.startswith('W/') else a for a in args], cwd=world.parent,
            unprivileged=case.endswith('read-only'))
    refused(r, *needles, absent=absent)
    assert snapshot(world.parent) == before, "a refused run changed, added or removed a file or folder"
    assert (os.stat('/dev/full').st_mode, os.stat('/dev/full').st_rdev) == (dev.st_mode, dev.st_rdev)


def test_resuming_a_finished_run_writes_nothing(world):
    "A finished run's last.pth: the command says there is nothing to resume, exits 0, and leaves every file as it was."
    before = snapshot(world.parent)
    r = cli('train', '--data', world/'data', *FAST, '--freeze-epochs', '3', '--epochs', '2', '--resume', world/'done'/'last.pth',
            cwd=world.parent)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert 'finished all its epochs: nothing to resume' in r.stdout and r.stderr == '', (r.stdout, r.stderr)
    assert snapshot(world.parent) == before

def test_a_live_runs_folder_is_refused_even_with_overwrite(world):
    "A run's folder is claimed while it runs: a second run into it is refused, even with --overwrite, and changes nothing."
    from flower_tl.core import claim_folder
    with claim_folder(world/'busy'):   # this process: a live run
        before = snapshot(world.parent)
        r = cli('train', '--data', world/'data', *FAST, '--out', world/'busy', '--overwrite', cwd=world.parent)
        refused(r, 'is in use by another flower_tl run', f'(process {os.getpid()})', '--overwrite never takes a live run')
        assert snapshot(world.parent) == before


# ---------------------------------------------------------------- links to folders: followed never, named always

def test_predict_skips_folder_links(world, tmp_path):
    imgs = tmp_path/'imgs'; shutil.copytree(world/'data'/'test', imgs/'sub')
    (imgs/'sub'/'loop').symlink_to('..')                      # imgs/sub/loop/sub/loop/... : the images again, for ever
    (imgs/'again.jpg').symlink_to(imgs/'sub'/'image_00249.jpg')   # a link to an image is that image, once more
    r = cli('predict', '--checkpoint', world/'run'/'best.pth', '--images', imgs, '--csv', tmp_path/'p.csv', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (tmp_path/'p.csv').read_text().splitlines()
    assert [l.split(',')[0] for l in rows[1:]] == ['again.jpg', 'sub/image_00249.jpg', 'sub/image_00250.jpg']
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'warning: skipped 1 link to a folder' in err and '(sub/loop)' in err, err

@pytest.fixture(scope='module')
def looped_run(tmp_path_factory):
    "`flower_tl train` on data whose folders hold links back up, into a folder where a killed run left temporary files."
    root = tmp_path_factory.mktemp('looped')
    data = tiny_data(root/'data')
    (data/'train'/'1'/'loop').symlink_to('..')   # train/1/loop -> train/: 60 photos became 2460, all of class 1
    (data/'train'/'all').symlink_to('..')        # a "category" that is the whole data folder
    out, pid = root/'run', dead_pid()
    out.mkdir()
    stale = [out/f'.last.pth.{pid}.tmp', out/f'.curves.png.{pid}.tmp']
    kept = [out/f'.last.pth.{os.getpid()}.tmp', out/f'.notes.txt.{pid}.tmp']   # a live process's; not one of ours
    for p in stale + kept: p.write_bytes(b'half a file')
    r = cli('train', '--data', data, *FAST, '--freeze-epochs', '1', '--epochs', '0', '--lr', '0.01', '--out', out,
            '--overwrite', cwd=root)
    return r, out, stale, kept

def test_train_skips_folder_links(looped_run):
    r, out, *_ = looped_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert '6 training and 2 validation images in 2 classes' in r.stdout, r.stdout
    lines = r.stderr.strip().splitlines()
    assert any('skipped 1 link to a folder' in l and '(loop)' in l for l in lines), lines
    assert any('skipped all in' in l for l in lines) and all(l.startswith('flower_tl train: warning: ') for l in lines), lines
    assert json.loads((out/'metrics.json').read_text())['classes'] == ['1', '50']

def test_stale_temporary_files_removed_at_start(looped_run):
    r, out, stale, kept = looped_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert 'removed 2 temporary file(s) that a killed run left in' in r.stdout


# ---------------------------------------------------------------- Ctrl-C, and resuming elsewhere

EPOCHS = 4   # cached epochs of 6 photos take milliseconds

@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
    "A run stopped by Ctrl-C: a real SIGINT, which the process sends itself at epoch 2's first step, after epoch 1 is saved."
    root = tmp_path_factory.mktemp('interrupted')
    data, out = tiny_data(root/'data'), root/'run'
    # a SIGINT sent from here once last.pth appears raced the run: on a busy machine all the epochs could end first
    r = cli('0:2:1:sigint', 'train', '--data', data, *FAST, '--freeze-epochs', str(EPOCHS), '--epochs', '0', '--lr', '0.01',
            '--out', out, cwd=root, module='tests.fault_hooks')
    return r.returncode, r.stdout, r.stderr, data, out

def test_interrupted_run_says_how_to_resume(interrupted):
    rc, stdout, stderr, _, out = interrupted
    assert rc == 130, (rc, stdout[-2000:], stderr[-2000:])
    err = stderr.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err, err
    assert err.startswith('flower_tl train: interrupted') and f"--resume {out/'last.pth'}" in err, err
    assert 'fit(' not in err

def test_interrupted_run_prints_no_python_call(interrupted):
    "Learner.fit's own hint on stdout speaks the command line's words too."
    assert 'fit(' not in interrupted[1] and '--resume' in interrupted[1]

def test_resume_into_a_new_folder_leaves_the_run_alone(interrupted, tmp_path):
    rc, _, _, data, out = interrupted
    before = snapshot(out)
    new = tmp_path/'continued'
    r = cli('train', '--data', data, *FAST, '--freeze-epochs', str(EPOCHS), '--epochs', '0', '--lr', '0.01',
            '--resume', out/'last.pth', '--out', new, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert snapshot(out) == before, "resuming into another folder changed the interrupted run's folder"
    assert {'best.pth', 'last.pth', 'metrics.json', 'curves.png', 'epochs.png'} <= {p.name for p in new.iterdir()}
    assert len(json.loads((new/'metrics.json').read_text())['history']) == EPOCHS


# ---------------------------------------------------------------- a run refused once it has started leaves no folder

def test_refused_mid_run_leaves_no_folder(tmp_path):
    data = tiny_data(tmp_path/'data')
    (data/'train'/'50'/'broken.jpg').write_bytes(b'')   # found only when the photos are read, after the checks
    before = snapshot(tmp_path)
    r = cli('train', '--data', data, *FAST, '--freeze-epochs', '1', '--epochs', '0', '--lr', '0.01',
            '--out', tmp_path/'new'/'run', cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err and 'broken.jpg' in err, err
    assert snapshot(tmp_path) == before, "the refused run left its output folder (or something else) behind"
