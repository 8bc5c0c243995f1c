"The package installs, imports without nbdev, and its command answers --help and --version."
import subprocess, sys, configparser
from tests.conftest import ROOT, run_cli

MODULES = ['flower_tl', 'flower_tl.core', 'flower_tl.photos', 'flower_tl.data', 'flower_tl.flowers102', 'flower_tl.lookahead', 'flower_tl.loop',
           'flower_tl.clr', 'flower_tl.distributed', 'flower_tl.models', 'flower_tl.cache', 'flower_tl.callbacks', 'flower_tl.plots',
           'flower_tl.train', 'flower_tl.fine_tune', 'flower_tl.predict', 'flower_tl.interpret', 'flower_tl.cli', 'flower_tl.all']

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
    from flower_tl.photos import sample_path
    p = sample_path()
    assert sorted(d.name for d in (p/'train').iterdir()) == ['1', '10', '2', '50', '77', '84']
    assert sum(1 for _ in p.rglob('*.jpg')) == 6*(16+4+2)
    size = sum(f.stat().st_size for f in p.rglob('*') if f.is_file())
    assert size < 5e6, f"bundled sample is {size/1e6:.1f} MB; keep it to a few MB"

def test_demo_runs(tmp_path):
    r = run_cli('demo', '--out', tmp_path/'demo')
    assert r.returncode == 0, r.stderr
    assert 'train: 96 images in 6 classes' in r.stdout and 'test accuracy: ' in r.stdout
    assert (tmp_path/'demo'/'train'/'best.pth').is_file() and (tmp_path/'demo'/'test_predictions.csv').is_file()

def test_user_error_is_one_line():
    r = run_cli('demo', '--data', 'no/such/folder')
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and 'no/such/folder' in r.stderr and 'Traceback' not in r.stderr

def _modules_in_notebook_order() -> list:
    "The modules the notebooks export (`#| default_exp`), in the order of the notebooks' file names."
    import json, re
    out = []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            m = re.search(r'^\s*#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
            if c['cell_type'] == 'code' and m: out.append(m.group(1)); break
    return out

def test_each_module_imports_only_earlier_notebooks():
    "The layering: a module imports flower_tl modules from notebooks before its own, never from later ones."
    import re
    order = _modules_in_notebook_order()
    assert order.index('core') == 0 and len(order) == len(set(order))
    for i, mod in enumerate(order):
        src = (ROOT/'flower_tl'/(mod.replace('.', '/') + '.py')).read_text()
        used = set(re.findall(r'^\s*from \.(\w+) import', src, re.M)) | set(re.findall(r'^\s*from \. import (\w+)', src, re.M))
        later = sorted(u for u in used if u in order and order.index(u) >= i)
        assert not later, f"flower_tl.{mod} imports {later}, from its own or later notebooks"

def test_no_test_hook_in_the_library():
    "Faults for the tests are injected from tests/fault_hooks.py; nothing in flower_tl can make a run exit or hang."
    for f in (ROOT/'flower_tl').glob('*.py'):
        src = f.read_text()
        assert 'os._exit' not in src and 'FLOWER_TL_FAULT' not in src, f.name
