"The package installs, imports without nbdev, and its command answers --help and --version."
import subprocess, sys, configparser
from tests.conftest import ROOT, run_cli

MODULES = ['flower_tl', 'flower_tl.data', 'flower_tl.lookahead', 'flower_tl.clr', 'flower_tl.train',
           'flower_tl.predict', 'flower_tl.cli']

def test_imports_without_nbdev():
    # `sys.modules['x'] = None` makes any `import x` fail, as if x were not installed
    code = "import sys; sys.modules['nbdev'] = None\n" + "".join(f"import {m}\n" for m in MODULES)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_version_matches_settings():
    import flower_tl
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    assert flower_tl.__version__ == cfg['DEFAULT']['version']
    r = run_cli('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'flower_tl {flower_tl.__version__}'

def test_help():
    r = run_cli('--help')
    assert r.returncode == 0 and 'demo' in r.stdout

def test_console_script_installed():
    from pathlib import Path
    exe = Path(sys.executable).parent/'flower_tl'
    assert exe.exists(), f"the flower_tl console script is not installed beside {sys.executable}: pip install -e ."
    r = subprocess.run([str(exe), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and 'usage: flower_tl' in r.stdout

def test_sample_is_bundled():
    from flower_tl.data import sample_path
    p = sample_path()
    assert sorted(d.name for d in (p/'train').iterdir()) == ['1', '10', '2', '50', '77', '84']
    assert sum(1 for _ in p.rglob('*.jpg')) == 6*(16+4+2)
    size = sum(f.stat().st_size for f in p.rglob('*') if f.is_file())
    assert size < 5e6, f"bundled sample is {size/1e6:.1f} MB; keep it to a few MB"

def test_demo_runs(tmp_path):
    r = run_cli('demo', '--out', tmp_path/'demo')
    assert r.returncode == 0, r.stderr
    assert 'train: 96 images in 6 classes' in r.stdout and 'test accuracy: ' in r.stdout
    assert (tmp_path/'demo'/'best.pth').is_file() and (tmp_path/'demo'/'test_predictions.csv').is_file()

def test_user_error_is_one_line():
    r = run_cli('demo', '--data', 'no/such/folder')
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and 'no/such/folder' in r.stderr and 'Traceback' not in r.stderr
