"""The docs site: `tools/build_docs.py` builds it offline (no Quarto), every exported name is on its page, no page
shows an error, and nbdev's processing directives are applied without executing any cell."""
import base64, configparser, contextlib, importlib.util, inspect, io, json, os, re
from types import SimpleNamespace
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'build_docs.py'
NBS = ROOT / 'nbs'


def _tool():
    spec = importlib.util.spec_from_file_location('build_docs', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

def build(*args):
    "Run the docs tool's `main` in this process (the imports are shared, so it is fast); returns rc, stdout, stderr."
    tool, cwd, out, err = _tool(), os.getcwd(), io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = tool.main([str(a) for a in args])
    finally: os.chdir(cwd)
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())

def notebooks():
    "The notebooks nbdev renders (as nbglob finds them: no `_`/`.` names or folders)."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def page_of(nb: Path) -> str:
    rel = nb.relative_to(NBS)
    return str(rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())).with_suffix('.html'))

def default_exp(nb: Path):
    for c in json.loads(nb.read_text())['cells']:
        m = re.search(r'^\s*#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
        if c['cell_type'] == 'code' and m: return m.group(1)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    r = build('--offline', '--out', out)
    return out, r


def test_offline_build_succeeds(site):
    out, r = site
    assert r.returncode == 0, f'docs build failed:\n{r.stdout}\n{r.stderr}'
    assert 'PROBLEM' not in r.stderr
    assert (out / 'index.html').exists() and (out / 'site.css').exists() and (out / 'styles.css').exists()


def test_every_notebook_has_a_page_linked_from_every_page(site):
    out, _ = site
    pages = [page_of(nb) for nb in notebooks()]
    assert 'index.html' in pages
    for p in pages:
        html = (out / p).read_text()
        for q in pages: assert f'href="{q}"' in html, f'{p} does not link to {q}'


def test_every_exported_name_is_documented(site):
    "Each module's `__all__` names are on its page (functions and classes with an API entry), and so are the public methods _modidx.py lists for them."
    out, _ = site
    from flower_tl import _modidx
    mod_page = {f'flower_tl.{default_exp(nb)}': page_of(nb) for nb in notebooks() if default_exp(nb)}
    for mod, syms in _modidx.d['syms'].items():
        m = importlib.import_module(mod)
        public = set(getattr(m, '__all__', []))
        html = (out / mod_page[mod]).read_text()
        for name in public:
            assert re.search(rf'\b{re.escape(name)}\b', html), f'{mod}.{name} is not on {mod_page[mod]}'
            o = getattr(m, name)
            if (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == mod:
                assert f'id="{name.lower()}"' in html, f'{mod}.{name} has no API entry (#{name.lower()}) on {mod_page[mod]}'
        for sym, (url, _) in syms.items():
            cls, _, meth = sym[len(mod) + 1:].partition('.')
            if cls in public and meth and not meth.startswith('_'):
                page = url.partition('#')[0]
                assert re.search(rf'\b{re.escape(meth)}\b', (out / page).read_text()), f'{sym} is not on {page}'


def test_no_page_shows_an_error(site):
    out, _ = site
    for nb in notebooks():
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            for o in c.get('outputs', []):
                assert o['output_type'] != 'error', f'{nb.name} cell {i}: stored error {o.get("ename")}: {o.get("evalue")}'
                if o['output_type'] == 'stream':
                    assert 'Traceback' not in ''.join(o['text']), f'{nb.name} cell {i}: traceback in {o["name"]}'
    for p in out.rglob('*.html'):
        html = p.read_text()
        assert 'cell-output-error' not in html and 'Traceback (most recent call last)' not in html, p.name


def test_images_are_embedded(site):
    out, _ = site
    for p in out.rglob('*.html'):
        for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', p.read_text()):
            assert src.startswith(('data:image/', 'https://')), f'{p.name}: image not embedded: {src[:80]}'


# ------------------------------------------------------------------------------- directives, on a fixture
def _png_of_a_flower() -> str:
    "A real photo from the bundled sample, as base64 PNG (what a notebook stores for a figure)."
    from PIL import Image
    from flower_tl.data import sample_path
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
def display(data): return nbformat.v4.new_output('display_data', data=data)

@pytest.fixture(scope='module')
def fixture_site(tmp_path_factory):
    nbs = tmp_path_factory.mktemp('nbs')
    png = _png_of_a_flower()
    demo = _nb(
        md('# Demo page\n\n> The tagline of the demo page'),
        md('Intro prose. See [the broken page](01_broken.ipynb) and `sample_path`.\n\n'
           '::: {.callout-note}\nA callout with **bold** text.\n:::'),
        code('#| hide\nfrom nbdev.showdoc import show_doc\nfrom flower_tl.data import sample_path\n'
             'HIDDEN_MARKER = 1'),
        code('#| export\ndef sample_path(): # never run by the docs build\n    "Exported body."\n'
             '    raise RuntimeError("executed")'),
        code('#| exporti\nEXPORTI_MARKER = 2'),
        code('#| echo: false\nECHO_FALSE_MARKER = 3', display({'image/png': png, 'text/plain': '<Figure>'})),
        code('#| output: false\nOUTPUT_FALSE_CODE = 4', stream('OUTPUT_FALSE_MARKER\n')),
        code('#| fig-cap: A flower from the sample\nshow_flower()',
             nbformat.v4.new_output('execute_result', data={'image/png': png, 'text/plain': '<Figure>'})),
        code('RESULT_CODE', nbformat.v4.new_output('execute_result', data={'text/plain': "'RESULT_MARKER'"})),
        code('print("hello")', stream('STREAM_MARKER\n')),
        code('for i in tqdm(range(10)): pass', stream(' 0%| | 0/10\r 50%|# | 5/10\r100%|##| 10/10 PROGRESS_DONE\n', 'stderr')),
        code('open("EXECUTED", "w").write("x")'),
        md('## A section `with code`\n\nMore prose: $\\alpha$ of it, at $5 or $10, and `$x$` in code.\n\n$$\\phi \\leftarrow \\phi$$'),
    )
    broken = _nb(md('# Broken\n\n> Has an error'),
                 code('1/0', nbformat.v4.new_output('error', ename='ZeroDivisionError', evalue='division by zero',
                                                    traceback=['Traceback (most recent call last)', 'ZeroDivisionError'])))
    index = _nb(md('# fixture_lib\n\n> One line about it'), code('#| hide\nfrom flower_tl.data import sample_path'),
                md('Some prose.'), code('1 + 1', nbformat.v4.new_output('execute_result', data={'text/plain': '2'})))
    for name, nb in [('00_demo.ipynb', demo), ('01_broken.ipynb', broken), ('index.ipynb', index)]:
        nbformat.write(nb, nbs / name)
    out = nbs.parent / (nbs.name + '_site')
    r = build('--nbs', nbs, '--out', out)
    readme = nbs.parent / (nbs.name + '_readme') / 'README.md'
    rr = build('--nbs', nbs, '--readme', readme)
    return nbs, out, r, readme, rr


def test_fixture_reports_the_stored_error_and_nothing_else(fixture_site):
    nbs, out, r, *_ = fixture_site
    assert r.returncode == 1
    problems = [l for l in r.stderr.splitlines() if l.startswith('PROBLEM')]
    assert problems and all('01_broken.ipynb' in l for l in problems), r.stderr
    assert (out / 'broken.html').exists() and 'cell-output-error' in (out / 'broken.html').read_text()


def test_fixture_directives(fixture_site):
    nbs, out, *_ = fixture_site
    html = (out / 'demo.html').read_text()
    assert '<h1 class="title">Demo page</h1>' in html
    assert 'The tagline of the demo page' in html.split('</header>', 2)[1]   # the subtitle, in the title block
    assert '<title>Demo page – ' in html
    for gone in ('HIDDEN_MARKER', 'EXPORTI_MARKER', 'ECHO_FALSE_MARKER', 'OUTPUT_FALSE_MARKER'): assert gone not in html, gone
    assert 'OUTPUT_FALSE_CODE' in html and 'STREAM_MARKER' in html
    assert '100%|##| 10/10 PROGRESS_DONE' in html and '5/10' not in html   # a progress bar shows its last state
    assert re.search(r'class="cell-output cell-output-display"><pre><code>[^<]*RESULT_MARKER', html)
    assert html.count('src="data:image/png;base64,') == 2
    assert '<figcaption>A flower from the sample</figcaption>' in html
    assert 'Exported source (3 lines)' in html and 'never run by the docs build' in html
    # show_doc rendered from the imported module: signature, docments and docstring; before the exported source
    assert 'id="sample_path"' in html and 'bundled with flower_tl' in html
    assert html.index('id="sample_path"') < html.index('Exported source')
    assert 'href="broken.html"' in html and 'href="data.html#sample_path"' in html
    assert 'class="callout callout-note"' in html and '<strong>bold</strong>' in html
    assert 'id="a-section-with-code"' in html
    assert html.count('<math ') == 2 and 'at $5 or $10' in html and '<code>$x$</code>' in html   # TeX as MathML
    assert not (nbs / 'EXECUTED').exists() and not (ROOT / 'EXECUTED').exists()


def test_fixture_readme(fixture_site):
    *_, readme, rr = fixture_site
    assert rr.returncode == 0, rr.stderr
    assert readme.read_text() == '# fixture_lib\n\nOne line about it\n\nSome prose.\n\n```python\n1 + 1\n```\n\n```\n2\n```\n'


# ----------------------------------------------------------------------------------- the nbdev setup
def test_quarto_files_are_what_nbdev_writes():
    from nbdev.quarto import _quarto_yml, _nbdev_yml
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'settings.ini')
    d = cfg['DEFAULT']
    assert (NBS / '_quarto.yml').read_text() == _quarto_yml
    vals = {k: d[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    assert (NBS / 'nbdev.yml').read_text() == _nbdev_yml.format(doc_path=Path(d['doc_path']).name, **vals)


def test_readme_is_what_index_makes():
    r = build('--readme', '--check')
    assert r.returncode == 0, f'README.md is stale: run python tools/build_docs.py --readme\n{r.stdout}{r.stderr}'


def test_workflows():
    wf = ROOT / '.github' / 'workflows'
    test = yaml.safe_load((wf / 'test.yaml').read_text())
    steps = [s.get('run', '') for s in test['jobs']['test']['steps']]
    assert any('.ci/run' in s for s in steps)
    deploy = yaml.safe_load((wf / 'deploy.yaml').read_text())
    dsteps = deploy['jobs']['deploy']['steps']
    assert any('quarto' in s.get('uses', '') for s in dsteps)
    assert any('tools/build_docs.py' in s.get('run', '') for s in dsteps)
    assert any(s.get('with', {}).get('publish_dir') == './_docs' for s in dsteps)


def test_quarto_runs_nbdev_docs(monkeypatch, tmp_path):
    "Where Quarto is installed the tool runs nbdev's own nbdev_docs / nbdev_readme, unless --offline is given."
    tool, calls, cwd = _tool(), [], os.getcwd()
    monkeypatch.setattr(tool.shutil, 'which', lambda name: '/usr/local/bin/quarto' if name == 'quarto' else None)
    monkeypatch.setattr(tool.subprocess, 'call', lambda cmd, **kw: calls.append(cmd) or 0)
    try:
        assert tool.main([]) == 0 and tool.main(['--readme']) == 0
        assert [Path(c[0]).name for c in calls] == ['nbdev_docs', 'nbdev_readme']
        nbs = tmp_path / 'nbs'
        nbs.mkdir()
        nbformat.write(_nb(md('# tiny\n\n> A tiny site')), nbs / 'index.ipynb')
        with contextlib.redirect_stdout(io.StringIO()):
            assert tool.main(['--offline', '--nbs', str(nbs), '--out', str(tmp_path / 'site')]) == 0
    finally: os.chdir(cwd)
    assert len(calls) == 2 and (tmp_path / 'site' / 'index.html').exists()


def test_out_folder_with_other_files_is_left_alone(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    r = build('--offline', '--out', tmp_path / 'mine')
    assert r.returncode == 2 and 'already holds other files' in r.stderr
    assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'keep me'


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
