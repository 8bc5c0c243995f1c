"""The docs site in a real browser, as a reader sees it: headless Chromium, driven by Selenium, opens every page of the
site that tests/test_docs.py builds, served over HTTP on 127.0.0.1. Skipped where Chromium, its driver or Selenium
is missing. `DOCS_SHOTS=DIR` also saves a screenshot of every page into DIR."""
import functools, html, http.server, json, os, re, shutil, tempfile, threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.test_docs import built_site, shared_tmp

BROWSERS, DRIVER = ('chromium', 'chromium-browser', 'google-chrome'), 'chromedriver'
WIDTHS = (1280, 390)   # a desktop with both sidebars, and a phone

# Runs in the page once its images have loaded or failed; returns what a reader would see.
PROBE = r"""
const done = arguments[arguments.length - 1];
Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; }))).then(() => {
  const art = document.querySelector('article'), prose = [], code = [];
  const w = document.createTreeWalker(art, NodeFilter.SHOW_TEXT);
  for (let n; (n = w.nextNode());) (n.parentElement.closest('pre, code, script, style') ? code : prose).push(n.nodeValue);
  const links = sel => [...document.querySelectorAll(sel)].map(a => [a.href, a.textContent.trim()]);
  done({images: [...document.images].map(i => [i.src.slice(0, 100), i.complete && i.naturalWidth > 0]),
        prose: prose.join(''), code: [...art.querySelectorAll('pre')].map(p => p.textContent),
        toc: links('.md-sidebar--secondary nav.md-nav--secondary a.md-nav__link'),
        nav: links('.md-sidebar--primary a.md-nav__link[href]').map(l => l[0]), links: links('a[href]').map(l => l[0]),
        width: [document.documentElement.scrollWidth, window.innerWidth]});
});
"""
RAW_PROSE = re.compile(r'\]\((?:https?:|#|[\w./-]+\.(?:html|md|ipynb))|\*\*|```|\{\s*[#.][\w-]|\{target=')
RAW_CODE = re.compile(r'\]\(https?:|^```', re.M)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out, r = built_site(str(shared_tmp(tmp_path_factory) / 'docs'))
    if not (out / 'index.html').exists(): pytest.fail(f'the docs build wrote no site:\n{r.stdout}\n{r.stderr[-3000:]}')
    return out

@pytest.fixture(scope='module')
def server(site):
    "The site over HTTP on 127.0.0.1 (search needs it: its index is fetched); yields the base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown()

@pytest.fixture(scope='module')
def browser():
    chromium, driver = next(filter(None, map(shutil.which, BROWSERS)), None), shutil.which(DRIVER)
    if not (chromium and driver): pytest.skip(f'no Chromium and chromedriver on the PATH (apt-get install chromium chromium-driver)')
    webdriver = pytest.importorskip('selenium.webdriver', reason='selenium is not installed (pip install selenium)')
    from selenium.webdriver.chrome.service import Service
    opts, profile = webdriver.ChromeOptions(), tempfile.mkdtemp(prefix='chromium-')
    opts.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update', '--disable-sync', f'--user-data-dir={profile}',
              f'--window-size={WIDTHS[0]},900',
              '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'):   # nothing outside this machine is asked
        opts.add_argument(a)
    b = webdriver.Chrome(options=opts, service=Service(driver))
    b.set_script_timeout(30)
    yield b
    b.quit()
    shutil.rmtree(profile, ignore_errors=True)

def _ids(path: Path) -> set:
    return {html.unescape(i) for i in re.findall(r'\sid="([^"]+)"', path.read_text())}


def test_every_page_as_a_reader_sees_it(site, server, browser):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html') if p.name != '404.html')
    shots = os.environ.get('DOCS_SHOTS')
    ids, bad = {}, []
    for k, page in enumerate(pages):
        browser.get(server + page)   # at the width the last page ended at: what is probed does not depend on it
        r = browser.execute_async_script(PROBE)
        bad += [f'{page}: image not shown: {src}' for src, ok in r['images'] if not ok]
        if m := RAW_PROSE.search(r['prose']): bad.append(f'{page}: raw markdown in the text: {r["prose"][max(0, m.start() - 60):m.end() + 60]!r}')
        for c in r['code']:
            if m := RAW_CODE.search(c): bad.append(f'{page}: raw markdown in code: {c[max(0, m.start() - 60):m.end() + 60]!r}')
        toc = [h for h, _ in r['toc']]
        bad += [f'{page}: the contents list {h} {toc.count(h)} times' for h in sorted(set(toc)) if toc.count(h) > 1]
        if not r['toc'] and '\n## ' in (site / page).read_text(): bad.append(f'{page}: no table of contents')
        linked = {urlsplit(h).path.lstrip('/') or 'index.html' for h in r['nav']}
        bad += [f'{page}: the sidebar has no link to {p}' for p in pages if p not in linked]
        for href in set(r['links']):
            u = urlsplit(href)
            if not href.startswith(server): continue
            target = unquote(u.path).lstrip('/') or 'index.html'
            if target.endswith('/'): target += 'index.html'
            if not (site / target).is_file(): bad.append(f'{page}: a link to a missing page: {target}'); continue
            if target.endswith('.html') and u.fragment:
                if target not in ids: ids[target] = _ids(site / target)
                if unquote(u.fragment) not in ids[target]: bad.append(f'{page}: a link to a missing anchor: {target}#{u.fragment}')
        for width in (WIDTHS[k % 2], WIDTHS[(k + 1) % 2]):   # long lines wrap or scroll inside their box, never the page
            if width != browser.get_window_size()['width']: browser.set_window_size(width, 900)
            sw, iw = browser.execute_script('return [document.documentElement.scrollWidth, window.innerWidth]')
            if sw > iw: bad.append(f'{page}: at {width}px the page scrolls sideways ({sw} > {iw} px)')
            if shots: browser.save_screenshot(str(Path(shots) / f'{page.replace("/", "__")[:-5]}-{width}.png'))
    assert not bad, f'{len(bad)} problems:\n' + '\n'.join(bad[:40])


def test_search_finds_lr_find(site, server, browser):
    index = json.loads((site / 'search' / 'search_index.json').read_text())
    assert any(d['location'].endswith('#learner.lr_find') for d in index['docs']), 'lr_find is not in the search index'
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.set_window_size(WIDTHS[0], 900)
    browser.get(server + 'index.html')
    box = WebDriverWait(browser, 10).until(lambda b: b.find_element(By.CSS_SELECTOR, 'input.md-search__input'))
    box.click()
    box.send_keys('lr_find')
    hits = lambda b: [urlsplit(a.get_attribute('href')) for a in b.find_elements(By.CSS_SELECTOR, '.md-search-result__link')]
    found = lambda b: any(u.path.endswith('/train.html') and u.fragment == 'learner.lr_find' for u in hits(b))
    WebDriverWait(browser, 20).until(found, f'searching lr_find did not list train.html#learner.lr_find')
