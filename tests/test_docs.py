"""The docs site: `tools/build_docs.py` builds it offline (nbdev processors + MkDocs), every notebook has a page, every
exported name is on its page with the anchor `_modidx.py` links to, and nbdev's directives apply without executing
anything. tests/test_docs_browser.py looks at the same site in a browser."""
import base64, contextlib, fcntl, functools, importlib, importlib.util, inspect, io, json, os, re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'build_docs.py'
NBS = ROOT / 'nbs'


@functools.lru_cache(maxsize=None)
def built_site(base: str, nbs: str = None):
    """Build the site into `base` once, in this process (its imports are shared with the tests, so it is fast);
    both docs test files, and pytest-xdist's workers, share it. Returns the site folder and the tool's result."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another worker may be building it now
        done = base / 'result.json'
        if not done.exists():
            spec = importlib.util.spec_from_file_location('build_docs', TOOL)
            tool = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(tool)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = tool.main(['--out', str(base / 'site'), '--proc', str(base / 'proc')] + (['--nbs', nbs] if nbs else []))
            done.write_text(json.dumps(dict(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())))
        return base / 'site', SimpleNamespace(**json.loads(done.read_text()))

def shared_tmp(tmp_path_factory) -> Path:
    "A folder all processes of this test session share (xdist's workers each have their own basetemp below it)."
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    return built_site(str(shared_tmp(tmp_path_factory) / 'docs'))

def notebooks():
    "The notebooks nbdev renders (as nbglob finds them: no `_`/`.` names or folders)."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def page_of(nb: Path) -> str:
    rel = nb.relative_to(NBS)
    return str(rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())).with_suffix('.html'))


def test_build_succeeds_offline(site):
    out, r = site
    assert r.returncode == 0, f'docs build failed:\n{r.stdout}\n{r.stderr[-5000:]}'
    assert (out / 'index.html').exists() and (out / 'search' / 'search_index.json').exists()


def test_every_notebook_has_a_page(site):
    out, _ = site
    pages = [page_of(nb) for nb in notebooks()]
    assert 'index.html' in pages
    for p in pages: assert (out / p).exists(), f'no page {p}'


def test_every_exported_name_has_its_anchor(site):
    "Each public function and class of a module (`__all__`) has the heading `_modidx.py` links to; its public methods are on the page."
    out, _ = site
    from flower_tl import _modidx
    for mod, syms in _modidx.d['syms'].items():
        m = importlib.import_module(mod)
        public = set(getattr(m, '__all__', []))
        for sym, (url, _) in syms.items():
            name = sym[len(mod) + 1:]
            cls, _, meth = name.partition('.')
            if cls not in public or meth.startswith('_'): continue
            page, _, anchor = url.partition('#')
            html = (out / page).read_text()
            o = getattr(m, cls)
            if not meth and (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == mod:
                assert f'id="{anchor}"' in html, f'{sym} has no API entry (#{anchor}) on {page}'
            else: assert re.search(rf'\b{re.escape(meth or cls)}\b', html), f'{sym} is not on {page}'


def test_no_error_and_no_machine_path_in_pages(site):
    out, _ = site
    for nb in notebooks():
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            for o in c.get('outputs', []):
                assert o['output_type'] != 'error', f'{nb.name} cell {i}: stored error {o.get("ename")}: {o.get("evalue")}'
    paths = re.compile(r'(?<![\w.~-])/(?:work|tmp|root)/')
    for p in [*out.rglob('*.html'), out / 'search' / 'search_index.json']:
        text = p.read_text()
        assert 'Traceback (most recent call last)' not in text, f'{p.name} shows a traceback'
        hit = paths.search(text)
        assert not hit, f'{p.name}: a machine path: {text[max(0, hit.start() - 80):hit.end() + 80]!r}'


# ------------------------------------------------------------------------------- directives, on a fixture
def _png_of_a_flower() -> str:
    "A real photo from the bundled sample, as base64 PNG (what a notebook stores for a figure)."
    from PIL import Image
    from flower_tl.photos import sample_path
    img = Image.open(sorted((sample_path() / 'train' / '1').iterdir())[0]).convert('RGB')
    img.thumbnail((96, 96))
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    return base64.b64encode(buf.getvalue()).decode()

def _nb(*cells):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata.kernelspec = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    return nb

def md(s): return nbformat.v4.new_markdown_cell(s)
def code(s, *outputs): return nbformat.v4.new_code_cell(s, outputs=list(outputs))
def stream(text, name='stdout'): return nbformat.v4.new_output('stream', name=name, text=text)

@pytest.fixture(scope='module')
def fixture_site(tmp_path_factory):
    nbs = tmp_path_factory.mktemp('nbs')
    png = {'image/png': _png_of_a_flower(), 'text/plain': '<Figure>'}
    demo = _nb(
        md('# Demo page\n\n> The tagline of the demo page'),
        md('Intro prose: see [the broken page](01_broken.ipynb), `sample_path` and $\\alpha$.\n\n![A flower](flower.png)'),
        code('#| hide\nfrom nbdev.showdoc import show_doc\nfrom flower_tl.photos import sample_path\nHIDDEN_MARKER = 1'),
        code('#| export\ndef sample_path(): # never run by the docs build\n    "Exported body."\n    raise RuntimeError("executed")'),
        code('#| exporti\nEXPORTI_MARKER = 2'),
        code('#| echo: false\nECHO_FALSE_MARKER = 3', nbformat.v4.new_output('display_data', data=png)),
        code('#| output: false\nOUTPUT_FALSE_CODE = 4', stream('OUTPUT_FALSE_MARKER\n')),
        code('print("hello")', stream('STREAM_MARKER\n')),
        code('for i in tqdm(range(10)): pass', stream(' 0%| | 0/10\r 50%|# | 5/10\r100%|##| 10/10 PROGRESS_DONE\n', 'stderr')),
        code('open("EXECUTED", "w").write("x")'),
        md('## A section `with code`'),
    )
    broken = _nb(md('# Broken\n\n> Has an error'),
                 code('1/0', nbformat.v4.new_output('error', ename='ZeroDivisionError', evalue='division by zero',
                                                    traceback=['Traceback (most recent call last)', 'ZeroDivisionError'])))
    index = _nb(md('# fixture_lib\n\n> One line about it'), md('Some prose.'))
    (nbs / 'flower.png').write_bytes(base64.b64decode(png['image/png']))
    for name, nb in [('00_demo.ipynb', demo), ('01_broken.ipynb', broken), ('index.ipynb', index)]:
        nbformat.write(nb, nbs / name)
    out, r = built_site(str(nbs.parent / (nbs.name + '_build')), str(nbs))
    return nbs, out, r


def test_fixture_reports_the_stored_error_and_nothing_else(fixture_site):
    nbs, out, r = fixture_site
    assert r.returncode == 1
    problems = [l for l in r.stderr.splitlines() if l.startswith('PROBLEM')]
    assert problems and all('01_broken.ipynb' in l for l in problems), r.stderr
    assert (out / 'broken.html').exists()


def test_fixture_directives(fixture_site):
    nbs, out, _ = fixture_site
    html = (out / 'demo.html').read_text()
    assert re.search(r'<h1[^>]*>Demo page', html) and '<title>Demo page - flower_tl</title>' in html
    assert re.search(r'<p class="subtitle">The tagline of the demo page</p>', html)
    for gone in ('HIDDEN_MARKER', 'EXPORTI_MARKER', 'ECHO_FALSE_MARKER', 'OUTPUT_FALSE_MARKER'): assert gone not in html, gone
    assert 'OUTPUT_FALSE_CODE' in html and 'STREAM_MARKER' in html
    assert '10/10 PROGRESS_DONE' in html and '5/10' not in html   # a progress bar shows its last state
    assert len(re.findall(r'<img [^>]*src="demo_files/[^"]+\.png"', html)) == 1   # the figure output
    assert re.search(r'<img [^>]*src="flower.png"', html) and (out / 'flower.png').exists()   # an image beside the notebook
    assert 'Exported source (3 lines)' in html and 'never run by the docs build' in html
    # show_doc rendered from the imported module, with nbdev's anchor, before the exported source
    assert 'id="sample_path"' in html and 'bundled with flower_tl' in html
    assert html.index('id="sample_path"') < html.index('Exported source')
    assert 'href="broken.html"' in html and 'id="a-section-with-code"' in html and '<math' in html
    assert not (nbs / 'EXECUTED').exists() and not (ROOT / 'EXECUTED').exists()


def test_deploy_workflow_runs_the_same_build():
    deploy = yaml.safe_load((ROOT / '.github' / 'workflows' / 'deploy.yaml').read_text())
    steps = deploy['jobs']['deploy']['steps']
    assert not any('quarto' in s.get('uses', '') for s in steps)
    assert any(s.get('run', '').strip() == 'python tools/build_docs.py' for s in steps)
    assert any(s.get('with', {}).get('publish_dir') == './_docs' for s in steps)


# -------------------------------------------------------------------------------- the notebooks' outputs
def _output_texts(nb):
    "Every text a notebook's saved outputs show: streams, results, displays, tracebacks."
    for cell in nb.cells:
        for o in cell.get('outputs', []):
            if 'text' in o: yield cell, o['text']
            for k, v in o.get('data', {}).items():
                if k.startswith('text/') and isinstance(v, str): yield cell, v
            for line in o.get('traceback', []): yield cell, line


def test_no_machine_paths_in_saved_outputs():
    "Committed outputs show no absolute path of the machine that ran them (tools/run_nb.py writes placeholders)."
    import sys, tempfile
    here = {str(ROOT), str(ROOT.resolve()), sys.prefix, str(Path.home()), os.path.realpath(tempfile.gettempdir())}
    here = {p for p in here if len(p) > 1}
    generic = re.compile(r"(?<![\w<.~-])/(?:work|root|home|tmp|Users|var/folders|private/var|mnt|content|kaggle/working)/[\w.-]")
    bad = []
    for fn in sorted((ROOT/'nbs').glob('*.ipynb')):
        for cell, text in _output_texts(nbformat.read(fn, as_version=4)):
            hits = [p for p in here if re.search(re.escape(p) + r'(?![\w.-])', text)] + generic.findall(text)
            if hits: bad.append(f"{fn.name}: {hits[0]!r} in the output of: {cell.source.splitlines()[0][:60]}")
    assert not bad, "machine paths in saved outputs (re-run with tools/run_nb.py):\n" + '\n'.join(bad[:20])


def test_path_check_catches_a_leak():
    "The check above fails for a real leak: this checkout's path, or a temporary folder, in an output."
    import tempfile
    leak = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x', outputs=[
        nbformat.v4.new_output('stream', name='stdout', text=f'wrote {tempfile.gettempdir()}/tmpab12/run\n')])])
    texts = [t for _, t in _output_texts(leak)]
    generic = re.compile(r"(?<![\w<.~-])/(?:work|root|home|tmp|Users|var/folders|private/var|mnt|content|kaggle/working)/[\w.-]")
    assert any(generic.search(t) or os.path.realpath(tempfile.gettempdir()) in t for t in texts)
