import os, shutil, signal, sys, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (`pytest -n 2`, as the README and CI run the tests) each worker, and every process a test starts,
# runs on one thread unless OMP_NUM_THREADS says otherwise. Two workers of two threads each on two cores made the
# suite slower than one worker (1020 s against 814 to 898 s); one thread each took 574 s.
if os.environ.get('PYTEST_XDIST_WORKER') and 'OMP_NUM_THREADS' not in os.environ:
    os.environ['OMP_NUM_THREADS'] = '1'

def ctrl_c_delivered():
    "`preexec_fn` for a child that a test interrupts: SIGINT back to its default, as a terminal's Ctrl-C finds it."
    # a shell's background job (`cmd &`) ignores SIGINT, its children inherit that, and Python then never raises KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.SIG_DFL)

def run_cli(*args, timeout=600, env=None):
    "Run `python -m flower_tl ARGS` in a subprocess and return the CompletedProcess."
    e = dict(os.environ, MPLBACKEND='Agg', **(env or {}))
    return subprocess.run([sys.executable, '-m', 'flower_tl', *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=ROOT)

@pytest.fixture
def cli(): return run_cli

@pytest.fixture(scope='module', autouse=True)
def _module_folders(request, tmp_path_factory):
    "The folders a test file's fixtures made (runs, checkpoints, data) go when its tests end, unless one failed: the temp folder stays small."
    base = tmp_path_factory.getbasetemp()
    before, failed = set(base.iterdir()), request.session.testsfailed
    yield
    if request.session.testsfailed != failed: return   # kept to look at, as pytest keeps a failed test's folder
    for p in set(base.iterdir()) - before:
        if p.is_symlink() or not p.is_dir(): p.unlink(missing_ok=True)
        else: shutil.rmtree(p, ignore_errors=True)
