#!/usr/bin/env python3
"""Open every page of the docs site in headless Chromium and check what a reader would see.

    python tools/check_docs_browser.py                  # build the offline site into a temp folder, check it
    python tools/check_docs_browser.py SITE             # check a site already built (e.g. by build_docs.py --out SITE)
    python tools/check_docs_browser.py --full-page      # screenshots of whole pages (up to 16000 px high)

For each `.html` page of the site (the site itself is only read):

1. A copy of the site goes into a temp folder, each page with a small script injected that, once the page has
   loaded (JavaScript running in the page), writes what it found into the DOM as `<pre id="browser-check">JSON</pre>`:
   every `<img>` and whether it decoded (`naturalWidth > 0`), the sidebar's links, elements of an error-output
   class, the word `Traceback` shown in a cell output (or `Traceback (most recent call last)` anywhere),
   JavaScript errors, resources that failed to load, stylesheets that did not apply, and layout problems
   (content spilling out of the text column, code blocks that need a horizontal scroll, warnings in stderr).
   `chromium --headless=new --dump-dom --virtual-time-budget=...` prints the DOM, which is parsed here.
   Links to this site's pages (and their `#fragment`s) are checked against the pages' files and ids.
2. `chromium --headless=new --screenshot` of the original page into the output folder (default scratch/docs_shots/).

One line per page: page, images loaded/total, sidebar pages linked/pages, errors; then notes (not failures).
The exit status is 1 if any page fails: an image that did not load, a page missing from the sidebar, an error
shown, a JavaScript error, a resource or stylesheet that did not load, a link to a page of this site that does
not exist (a missing `#anchor` is only a note), or Chromium failing (non-zero exit, timeout, no result).
The exit status is 2 for bad arguments or when no Chromium is found.
Pages run one after the other (each Chromium call with a timeout); only the standard library is used.
"""
from __future__ import annotations

import argparse, html, json, os, re, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome')
MAX_SHOT_HEIGHT = 16000

# Runs in the page. Results go into <pre id="browser-check"> (hidden) once `load` has fired and layout settled.
_PROBE = r"""<script>(function () {
  var jsErrors = [], failed = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) failed.push((t.tagName || '').toLowerCase() + ' ' + String(t.src || t.href).slice(0, 120));
    else jsErrors.push(String(e.message || e.error || 'error').slice(0, 200));
  }, true);
  window.addEventListener('unhandledrejection', function (e) { jsErrors.push('unhandled rejection: ' + String(e.reason).slice(0, 200)); });
  function visible(el) { var r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; }
  function snip(s, word) { var i = s.indexOf(word); return s.slice(Math.max(0, i - 60), i + 80).replace(/\s+/g, ' '); }
  function probe() {
    var R = {url: location.href, title: document.title, js_errors: jsErrors, failed_resources: failed};
    var imgs = Array.prototype.slice.call(document.images);
    R.images = imgs.length;
    R.broken_images = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
      .map(function (i) { return (i.alt || '(no alt)') + ' ' + String(i.currentSrc || i.src).slice(0, 60); });
    var sb = document.querySelector('nav.sidebar');
    R.sidebar = !!sb; R.sidebar_visible = !!sb && visible(sb);
    R.sidebar_links = sb ? Array.prototype.map.call(sb.querySelectorAll('a[href]'), function (a) { return a.href; }) : [];
    R.links = Array.prototype.map.call(document.querySelectorAll('a[href]'), function (a) { return a.href; });
    R.error_elements = Array.prototype.map.call(
      document.querySelectorAll('.cell-output-error, .output_error, [class*="output-error"], [class*="output_error"]'),
      function (e) { return (e.className + ': ' + (e.textContent || '').trim().slice(0, 100)).replace(/\s+/g, ' '); });
    R.tracebacks = [];
    Array.prototype.forEach.call(document.querySelectorAll('.cell-output, .output'), function (e) {
      var t = e.innerText || '';
      if (t.indexOf('Traceback') >= 0) R.tracebacks.push(snip(t, 'Traceback'));
    });
    var body = document.body.innerText || '';
    if (body.indexOf('Traceback (most recent call last)') >= 0 && !R.tracebacks.length)
      R.tracebacks.push(snip(body, 'Traceback (most recent call last)'));
    R.stderr_warnings = Array.prototype.filter.call(document.querySelectorAll('.cell-output-stderr'), function (e) {
      return /Warning\b/.test(e.innerText || ''); }).map(function (e) { return snip(e.innerText, 'Warning'); });
    // styles: every stylesheet link loaded, and the site's layout CSS applied
    var links = Array.prototype.slice.call(document.querySelectorAll('link[rel~="stylesheet"]'));
    R.stylesheets = links.length;
    R.missing_stylesheets = links.filter(function (l) { return !l.sheet; }).map(function (l) { return l.href; });
    var layout = document.querySelector('.page-layout');
    R.layout_css = !layout || getComputedStyle(layout).display === 'grid';
    // layout: horizontal page scroll, content wider than its column, code that needs a horizontal scroll
    var doc = document.documentElement;
    R.page_height = Math.max(doc.scrollHeight, document.body.scrollHeight);
    R.page_scrolls_x = doc.scrollWidth > window.innerWidth + 1;
    var main = document.querySelector('main') || document.body, right = main.getBoundingClientRect().right;
    R.spill = [];
    Array.prototype.forEach.call(main.querySelectorAll('table, img, figure, pre, math, svg, .cell, .cell-output, .cell-markdown > *'), function (e) {
      if (!visible(e)) return;
      for (var p = e.parentElement; p && p !== main; p = p.parentElement) {
        var ox = getComputedStyle(p).overflowX; if (ox === 'auto' || ox === 'scroll' || ox === 'hidden') return; }
      var r = e.getBoundingClientRect();
      if (r.right > right + 1) R.spill.push(e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : '') + ' +' + Math.round(r.right - right) + 'px');
    });
    R.scroll_code = Array.prototype.filter.call(main.querySelectorAll('pre'), function (e) {
      return visible(e) && e.scrollWidth > e.clientWidth + 1; }).length;
    R.code_blocks = main.querySelectorAll('pre').length;
    var pre = document.createElement('pre');
    pre.id = 'browser-check'; pre.style.display = 'none'; pre.textContent = JSON.stringify(R);
    document.body.appendChild(pre);
  }
  window.addEventListener('load', function () { setTimeout(probe, 50); });
})();</script>
"""

_re_result = re.compile(r'<pre id="browser-check"[^>]*>(.*?)</pre>', re.S)
_re_id = re.compile(r'\sid="([^"]*)"')


def find_chromium(explicit: str | None = None) -> str | None:
    "The Chromium/Chrome binary: `explicit`, $CHROMIUM, or the first of BROWSERS on the PATH."
    for c in ([explicit] if explicit else []) + ([os.environ['CHROMIUM']] if os.environ.get('CHROMIUM') else []) + list(BROWSERS):
        p = shutil.which(c) or (c if os.path.isfile(c) and os.access(c, os.X_OK) else None)
        if p: return p
    return None


def inject(page_html: str) -> str:
    "`page_html` with the probe script as early in <head> as possible (after <meta charset>), so it sees every error."
    m = re.search(r'<meta charset=[^>]*>', page_html, re.I) or re.search(r'<head[^>]*>', page_html, re.I)
    if m: return page_html[:m.end()] + '\n' + _PROBE + page_html[m.end():]
    return _PROBE + page_html


def run_chromium(cmd: list, timeout: float):
    "Run Chromium in its own process group; on timeout kill that group. Returns (rc or None on timeout, stdout, stderr)."
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')
    except subprocess.TimeoutExpired:
        try: os.killpg(p.pid, signal.SIGKILL)
        except OSError: pass
        out, err = p.communicate()
        return None, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')


def _stderr_tail(err: str, n: int = 3) -> str:
    "The last lines of Chromium's stderr, without its D-Bus noise."
    lines = [l for l in err.splitlines() if l.strip() and 'dbus' not in l.lower()]
    return ' | '.join(lines[-n:])[-400:]


def build_site(dest: Path) -> tuple:
    "Build the offline docs site into `dest` with tools/build_docs.py; returns (exit status, its stderr)."
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_docs.py'), '--offline', '--quiet', '--out', str(dest)],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, MPLBACKEND='Agg'))
    return r.returncode, r.stderr


def site_targets(site: Path, pages: list) -> dict:
    "For each page (relative posix path), the set of element ids in it (to check `page.html#id` links)."
    return {p: set(_re_id.findall((site / p).read_text(encoding='utf-8', errors='replace'))) for p in pages}


def _local(url: str, root_uri: str):
    "A `file://` URL under the copied site as (page, fragment), or None for anything else."
    if not url.startswith(root_uri): return None
    parts = urlsplit(url)
    return unquote(url[len(root_uri):].split('#')[0].split('?')[0]), unquote(parts.fragment)


def check_page(page: str, copy_root: Path, site: Path, ids: dict, chromium: str, profile: Path, args) -> dict:
    "Load the injected copy of `page`, evaluate what the probe found, then screenshot the original page."
    base = [chromium, '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
            '--no-default-browser-check', '--disable-extensions', '--mute-audio',
            f'--user-data-dir={profile}', f'--window-size={args.width},{args.height}']
    res = dict(page=page, failures=[], notes=[], images=0, loaded=0, linked=0, shot=None)
    root_uri = copy_root.resolve().as_uri() + '/'
    t = time.time()
    rc, out, err = run_chromium(base + ['--dump-dom', f'--virtual-time-budget={args.budget_ms}',
                                        (copy_root / page).resolve().as_uri()], args.timeout)
    res['seconds'] = time.time() - t
    m = _re_result.search(out)
    if rc is None: res['failures'].append(f'chromium timed out after {args.timeout}s loading the page')
    elif rc != 0: res['failures'].append(f'chromium exited {rc}: {_stderr_tail(err)}')
    if not m:
        if rc == 0: res['failures'].append(f'no result from the page (the load event never fired?) {_stderr_tail(err)}')
        R = None
    else:
        try: R = json.loads(html.unescape(m.group(1)))
        except ValueError as e:
            res['failures'].append(f'cannot parse the page result: {e}')
            R = None
    if R is not None:
        F, N = res['failures'].append, res['notes'].append
        res['images'], res['loaded'] = R['images'], R['images'] - len(R['broken_images'])
        for b in R['broken_images']: F(f'image not loaded: {b}')
        if not R['sidebar']: F('no sidebar (nav.sidebar)')
        elif not R['sidebar_visible']: F('the sidebar is not visible')
        linked = {p for p, _ in filter(None, (_local(u, root_uri) for u in R['sidebar_links']))}
        res['linked'] = len(linked & set(ids))
        for p in sorted(set(ids) - linked): F(f'sidebar does not link to {p}')
        for e in R['error_elements']: F(f'error output shown: {e}')
        for tb in R['tracebacks']: F(f'traceback shown: {tb}')
        for e in R['js_errors']: F(f'JavaScript error: {e}')
        for r in R['failed_resources']: F(f'resource failed to load: {r}')
        for s in R['missing_stylesheets']: F(f'stylesheet not loaded: {s}')
        if not R['layout_css']: F('the site CSS did not apply (.page-layout is not a grid)')
        broken, no_anchor = set(), set()
        for u in R['links']:
            loc = _local(u, root_uri)
            if loc is None:
                if u.startswith('file:'): broken.add(f'{u} (a file outside the site)')
                continue
            target, frag = loc
            target = target or page
            if target.endswith('/'): target += 'index.html'
            if target not in ids: broken.add(f'{target} (no such page)')
            elif frag and frag not in ids[target]: no_anchor.add(f'{target}#{frag}')
        for b in sorted(broken): F(f'broken link: {b}')
        if no_anchor: N(f'link(s) to an anchor the page lacks (the page opens at its top): {", ".join(sorted(no_anchor))}')
        if R['page_scrolls_x']: N('the page scrolls sideways at this window width')
        if R['spill']: N(f'{len(R["spill"])} element(s) wider than the text column: ' + ', '.join(R['spill'][:5]))
        if R['scroll_code']: N(f'{R["scroll_code"]} of {R["code_blocks"]} code/output blocks need a horizontal scroll')
        for w in R['stderr_warnings'][:3]: N(f'warning shown in an output: {w}')
        res['height'] = R['page_height']
    if args.no_screenshots: return res
    shots = Path(args.out)
    shot = shots / (page[:-len('.html')].replace('/', '__') + '.png')
    h = args.height
    if args.full_page and res.get('height'): h = max(args.height, min(int(res['height']) + 20, MAX_SHOT_HEIGHT))
    cmd = [c if not c.startswith('--window-size=') else f'--window-size={args.width},{h}' for c in base]
    if shot.exists(): shot.unlink()
    rc, out, err = run_chromium(cmd + [f'--screenshot={shot.resolve()}', f'--virtual-time-budget={args.budget_ms}',
                                       (site / page).resolve().as_uri()], args.timeout)
    if rc is None: res['failures'].append(f'chromium timed out after {args.timeout}s taking the screenshot')
    elif rc != 0 or not shot.exists() or shot.stat().st_size == 0:
        res['failures'].append(f'screenshot failed (exit {rc}): {_stderr_tail(err)}')
    else: res['shot'] = shot
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='check_docs_browser.py', description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='\n'.join(__doc__.split('\n')[1:]))
    ap.add_argument('site', nargs='?', type=Path, help='a built site folder (default: build the offline site into a temp folder)')
    ap.add_argument('--out', type=Path, default=ROOT / 'scratch' / 'docs_shots', help='screenshot folder (default: scratch/docs_shots)')
    ap.add_argument('--chromium', help='the browser binary (default: $CHROMIUM, or chromium/chromium-browser/google-chrome on the PATH)')
    ap.add_argument('--width', type=int, default=1280, help='window width in px (default 1280)')
    ap.add_argument('--height', type=int, default=2400, help='window (screenshot) height in px (default 2400)')
    ap.add_argument('--full-page', action='store_true', help=f'screenshots as high as each page (at most {MAX_SHOT_HEIGHT} px)')
    ap.add_argument('--no-screenshots', action='store_true', help='only the in-page checks')
    ap.add_argument('--timeout', type=float, default=90, help='seconds each Chromium call may take (default 90)')
    ap.add_argument('--budget-ms', type=int, default=10000, help="Chromium's --virtual-time-budget per page (default 10000)")
    ap.add_argument('--pages', nargs='+', metavar='PAGE', help='check only these pages (e.g. index.html train.html)')
    args = ap.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if not chromium:
        print(f'check_docs_browser.py: error: no Chromium/Chrome found (tried {", ".join(BROWSERS)}; set --chromium or $CHROMIUM)',
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix='docs-browser-'))
    try:
        build_failed = False
        if args.site is None:
            site = work / 'site'
            t = time.time()
            rc, err = build_site(site)
            print(f'built the offline site into {site} in {time.time() - t:.0f}s (build_docs.py exit {rc})', flush=True)
            if err.strip(): print(err.rstrip(), file=sys.stderr)
            build_failed = rc != 0
            if not (site / 'index.html').exists():
                print('check_docs_browser.py: error: the build made no site', file=sys.stderr)
                return 1
        else:
            site = args.site.resolve()
            if not (site / 'index.html').is_file():
                print(f'check_docs_browser.py: error: {site} has no index.html; give a folder built by tools/build_docs.py',
                      file=sys.stderr)
                return 2
        pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html'))
        pages = ['index.html'] + [p for p in pages if p != 'index.html']
        todo = pages
        if args.pages:
            unknown = [p for p in args.pages if p not in pages]
            if unknown:
                print(f'check_docs_browser.py: error: no such page(s) in {site}: {", ".join(unknown)}', file=sys.stderr)
                return 2
            todo = [p for p in pages if p in args.pages]
        ids = site_targets(site, pages)
        copy_root = work / 'probe'
        shutil.copytree(site, copy_root)
        for p in pages:
            f = copy_root / p
            f.write_text(inject(f.read_text(encoding='utf-8', errors='replace')), encoding='utf-8')
        if not args.no_screenshots: args.out.mkdir(parents=True, exist_ok=True)
        profile = work / 'profile'
        w = max(len(p) for p in todo) + 2
        print(f'{"page":<{w}}{"images":>9}{"sidebar":>10}{"errors":>8}{"secs":>6}  {chromium}', flush=True)
        results = []
        for p in todo:
            r = check_page(p, copy_root, site, ids, chromium, profile, args)
            results.append(r)
            print(f'{p:<{w}}{r["loaded"]:>5}/{r["images"]:<3}{r["linked"]:>6}/{len(pages):<3}{len(r["failures"]):>8}'
                  f'{r["seconds"]:>6.1f}  {"ok" if not r["failures"] else "FAIL"}', flush=True)
            for f in r['failures']: print(f'    FAIL: {f}', flush=True)
            for n in r['notes']: print(f'    note: {n}', flush=True)
        bad = [r['page'] for r in results if r['failures']]
        shots = [r['shot'] for r in results if r['shot']]
        if shots: print(f'{len(shots)} screenshot(s) in {args.out}')
        if build_failed: print('the docs build reported problems (see above)')
        print(f'{len(results) - len(bad)}/{len(results)} page(s) passed' + (f'; failed: {", ".join(bad)}' if bad else ''))
        return 1 if bad or build_failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
