#!/usr/bin/env python3
"""Build the docs site from the notebooks: nbdev's notebook processors, then MkDocs with the Material theme.

    python tools/build_docs.py               # the site into _docs/ (doc_path in settings.ini)
    python tools/build_docs.py --out DIR     # into DIR
    mkdocs serve -f _proc/mkdocs.yml         # after a build: a live preview of the pages it wrote

Nothing is executed: the pages show the outputs saved in the notebooks (they are run separately). The glue here:
1. nbdev's docs processors (`nbdev.processors`) apply the directives: `#| hide` cells go, the `# Title` / `> tagline`
   cell becomes the page's title and subtitle, a `show_doc` cell is added after each exported definition, etc.
2. `show_doc(...)` is rendered to markdown by `nbdev.showdoc` from the imported module, without a kernel. Each API
   heading gets the anchor `flower_tl/_modidx.py` links to (`train.html#learner.fit`), once per page.
3. `#| export` cells follow their show_doc as an "Exported source" block (folded when long).
4. Each notebook becomes `<page>.md` in _proc/docs/: outputs as code blocks, figures as image files, TeX as
   MathML, progress bars at their last state; backticked names link to their docs, outside code only.
5. MkDocs builds the site with mkdocs.yml. Problems are listed at the end and make the exit status 1 (the site is
   built all the same): MkDocs' warnings (a broken link or anchor), a stored error output, a show_doc that cannot be
   rendered, a notebook that cannot be read.
"""
from __future__ import annotations

import argparse, ast, base64, importlib, inspect, logging, os, re, shutil, sys, time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FOLD_LINES = 25   # "Exported source" longer than this starts folded
os.environ.setdefault('MPLBACKEND', 'Agg')


def notebooks(nbs: Path) -> list:
    "The notebooks nbdev renders (no `_` or `.` names), index first, then by path."
    from nbdev.doclinks import nbglob
    files = [Path(o) for o in nbglob(nbs, skip_folder_re=r'(?:^[_.]|^www$)', file_glob='*.ipynb')]
    return sorted(files, key=lambda p: (p.relative_to(nbs).parent.parts, p.name != 'index.ipynb', p.name))

def md_page(rel: Path) -> str:
    "The markdown page of a notebook, named as nbdev names its HTML page: `00b_data.ipynb` -> `data.md`."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(rel)).with_suffix('.md').as_posix()

def anchor(text: str) -> str:
    "Pandoc's identifier for a heading, as nbdev's links expect: `Learner.fit` -> `learner.fit`."
    s = re.sub(r'\s+', '-', ''.join(ch for ch in text.strip() if ch.isalnum() or ch in '_-. ')).lower()
    return re.sub(r'^[^a-z]+', '', s) or 'section'


# ---------------------------------------------------------------------------------------- nbdev processors
def _is_import(t): return isinstance(t, (ast.Import, ast.ImportFrom))

def make_procs(lib: str, nb_name: str, problems: list):
    "nbdev's docs processors, with show_doc rendered from the imported module and `#| export` source kept."
    from fastcore.basics import AttrDict
    from nbdev import processors as P
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import Processor

    class render_show_docs(Processor):
        "Fill each `show_doc(...)` cell's output from the imported module (`lib.<default_exp>` and the notebook's imports)."
        def begin(self): self.ns = None
        def namespace(self):
            if self.ns is None:
                from nbdev.showdoc import show_doc
                self.ns, exp = {'show_doc': show_doc}, P._default_exp(self.nb)
                try: self.ns.update(vars(importlib.import_module(f'{lib}.{exp}')) if exp else {})
                except Exception as e: problems.append(f'{nb_name}: cannot import {lib}.{exp}: {e!r}')
                for t in [t for c in self.nb.cells if c.cell_type == 'code' for t in (c.parsed_() or [])]:
                    if _is_import(t):
                        try: exec(compile(ast.Module([t], []), nb_name, 'exec'), self.ns)
                        except Exception: pass   # a show_doc that needs it fails below, and says so
            return self.ns
        def __call__(self, cell):
            calls = P._show_docs(cell.parsed_() or []) if cell.cell_type == 'code' else []
            if not calls: return
            cell.outputs = []
            for call in calls:
                run = lambda e: eval(compile(ast.Expression(e), nb_name, 'eval'), self.namespace())
                try: sd, sym = run(call.value), run(call.value.args[0]) if call.value.args else None
                except Exception as e:
                    problems.append(f'{nb_name}: cannot render {ast.unparse(call)}: {e!r}')
                    continue
                md = sd._repr_markdown_()
                qn = getattr(sym, '__qualname__', '')   # a method shows as `Learner.fit`, as _modidx.py names it
                if qn and '<' not in qn: md = re.sub(rf'^(#+) +{re.escape(qn.rpartition(".")[2])} *$', rf'\1 {qn}', md, count=1, flags=re.M)
                if '#LNone' in md:   # nbdev 2.4.14 misses the line number of some objects
                    try: md = md.replace('#LNone', f'#L{inspect.getsourcelines(inspect.unwrap(sd.sym))[1]}')
                    except Exception: md = md.replace('#LNone', '')
                cell.outputs.append(AttrDict(output_type='display_data', metadata={}, data=AttrDict({'text/markdown': md})))

    def keep_export_source(cell):
        "Like nbdev's `rm_export`, but `#| export(s)` code stays, as an 'Exported source' block; imports alone go."
        d = cell.get('directives_') or {}
        if d.keys() & {'exporti', 'hide', 'default_exp'}: del cell['source']
        elif d.keys() & {'export', 'exports'}:
            trees = cell.parsed_()
            if trees is not None and all(_is_import(t) for t in trees): del cell['source']
            else: cell.fold_ = len(cell.source.strip().splitlines()) > FOLD_LINES

    class mv_export_source(Processor):
        "Put the `show_doc` cells that follow an exported definition before its source, as nbdev's `mv_exports` does."
        def begin(self):
            cells, out, i = list(self.nb.cells), [], 0
            is_sd = lambda c: c.cell_type == 'code' and (c.get('has_sd') or bool(P._is_showdoc(c)))
            while i < len(cells):
                j = i + 1
                if hasattr(cells[i], 'fold_'):
                    while j < len(cells) and is_sd(cells[j]): j += 1
                out += cells[i+1:j] + [cells[i]]
                i = j
            self.nb.cells = out

    return [FrontmatterProc, P.populate_language, P.add_show_docs, P.strip_ansi, P.hide_line, P.filter_stream_,
            P.rm_header_dash, P.clean_show_doc, render_show_docs, keep_export_source, P.clean_magics, P.hide_,
            mv_export_source, P.strip_hidden_metadata]


# ----------------------------------------------------------------------------------------------- markdown
def _text(v) -> str: return ''.join(v) if isinstance(v, list) else (v or '')

def fence(text: str, lang: str = '{ .text .output }') -> str:
    "`text` as a fenced code block, its fence longer than any run of backticks in it."
    ticks = '`' * max([3] + [len(m) + 1 for m in re.findall('`{3,}', text)])
    return f'{ticks}{lang}\n{text.rstrip()}\n{ticks}'

def outside_code(md: str, f) -> str:
    "`md` with `f` applied to its text outside fenced code blocks and inline code spans."
    parts = re.split(r'(^[ \t]*(?:```|~~~)[^\n]*\n.*?^[ \t]*(?:```|~~~)[ \t]*$|(`+).+?\2)', md, flags=re.M | re.S)
    return ''.join(f(p) if i % 3 == 0 else p if i % 3 == 1 else '' for i, p in enumerate(parts))

_re_display_math = re.compile(r'\$\$(.+?)\$\$', re.S)
_re_inline_math = re.compile(r'(?<![\\$\w])\$(?![\s$])((?:\\\$|[^$\n])+?)(?<![\s\\])\$(?!\d)')   # Pandoc's rule

def tex_to_mathml(md: str) -> str:
    "`$...$` and `$$...$$` outside code as MathML, which browsers render with no script or network."
    from latex2mathml.converter import convert
    def conv(display):
        def f(m):
            try: return convert(m.group(1).strip(), display=display)
            except Exception: return m.group(0)
        return f
    return outside_code(md, lambda t: _re_inline_math.sub(conv('inline'), _re_display_math.sub(conv('block'), t)))

_re_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def split_options(src: str):
    "Quarto's `#| key: value` cell options at the top of `src` (as nbdev leaves them), and the code."
    lines, opts = src.splitlines(), {}
    while lines and (m := _re_opt.match(lines[0])):
        opts[m.group(1)] = m.group(2).strip('"\'')
        lines.pop(0)
    return opts, '\n'.join(lines).strip('\n')

def merged_outputs(outs) -> list:
    "Outputs with consecutive streams of one name merged and progress bars (`\\r`) at their last state."
    res = []
    for o in outs or []:
        o = dict(o, text=_text(o.get('text'))) if o.get('output_type') == 'stream' else o
        if res and o.get('output_type') == 'stream' and res[-1].get('output_type') == 'stream' and res[-1]['name'] == o['name']:
            res[-1]['text'] += o['text']
        else: res.append(o)
    for o in res:
        if 'text' in o: o['text'] = re.sub(r'[^\n]*\r(?!\n)', '', o['text'])
    return res

_images = (('image/png', 'png'), ('image/jpeg', 'jpg'), ('image/svg+xml', 'svg'))

class Page:
    "One notebook as a markdown page: `md`, its image `files` and the API `anchors` it defines."
    def __init__(self, nb, rel: Path, nb_dir: Path, problems: list, lookup):
        self.rel, self.path, self.files, self.anchors, self.problems = rel, md_page(rel), {}, set(), problems
        self.nb_dir = nb_dir
        self.stem, self.lookup = Path(self.path).with_suffix('').name, lookup
        fm = getattr(nb, 'frontmatter_', None) or {}
        self.title = str(fm.get('title', rel.stem))
        parts = [f'# {self.title}']
        if fm.get('description'): parts.append(f'{lookup.linkify(str(fm["description"]))}\n{{ .subtitle }}')
        for i, c in enumerate(nb.cells):
            if c.cell_type == 'markdown': parts.append(self.markdown(c, i))
            elif c.cell_type == 'code': parts += self.code(c, i)
        self.md = '\n\n'.join(p.strip('\n') for p in parts if p and p.strip()) + '\n'

    def markdown(self, c, i) -> str:
        md = c.source
        for name, data in (c.get('attachments') or {}).items():   # pasted images
            self.files[f'{self.stem}_files/{name}'] = base64.b64decode(next(iter(data.values())))
            md = md.replace(f'attachment:{name}', f'{self.stem}_files/{name}')
        for src in re.findall(r'!\[[^\]]*\]\(([^)\s]+)|<img\s[^>]*src="([^"]+)"', md):   # images beside the notebook
            src = ''.join(src)
            if not re.match(r'^[a-z]+:|^/|.*\.\.', src) and (self.nb_dir / src).is_file(): self.files[src] = (self.nb_dir / src).read_bytes()
        return tex_to_mathml(self.lookup.linkify(md))

    def code(self, c, i) -> list:
        opts, src = split_options(c.source)
        off = lambda k: opts.get(k, '').lower() == 'false'
        if off('include'): return []
        outs = [] if off('output') or off('eval') else merged_outputs(c.get('outputs'))
        res = []
        if src.strip() and not off('echo'):
            code = fence(src, (c.get('metadata') or {}).get('language') or 'python')
            if hasattr(c, 'fold_'):
                n = len(src.splitlines())
                code = f'???{"" if c.fold_ else "+"} abstract "Exported source ({n} lines)"\n\n' + re.sub('(?m)^(?=.)', '    ', code)
            res.append(code)
        seen = set()
        for j, o in enumerate(outs):
            kind, d = o.get('output_type'), o.get('data') or {}
            if kind == 'stream': res.append(fence(o['text']))
            elif kind == 'error':
                self.problems.append(f'{self.rel}: cell {i}: stored error output {o.get("ename")}: {o.get("evalue")}')
                res.append(fence(re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(o.get('traceback') or []))))
            elif 'text/markdown' in d: res.append(self.api_doc(_text(d['text/markdown'])) if opts.get('output') == 'asis'
                                                  else self.lookup.linkify(_text(d['text/markdown'])))
            elif any(m in d for m, _ in _images):
                mime, ext = next((m, e) for m, e in _images if m in d)
                if _text(d[mime]) in seen: continue   # the same figure shown twice by one cell
                seen.add(_text(d[mime]))
                name = f'{self.stem}_files/cell-{i}-output-{j}.{ext}'
                self.files[name] = _text(d[mime]).encode() if ext == 'svg' else base64.b64decode(_text(d[mime]))
                res.append(f'![{opts.get("fig-cap", "")}]({name})')
            elif 'text/html' in d: res.append(f'<div class="nb-output" markdown="0">\n{_text(d["text/html"])}\n</div>')
            elif 'text/plain' in d: res.append(fence(_text(d['text/plain'])))
        return res

    def api_doc(self, md: str) -> str:
        "A show_doc's markdown: its heading gets the anchor nbdev links to; a name documented twice shows once."
        m = re.search(r'^(#{1,6}) +(.+?) *$', md, re.M)
        if not m: return self.lookup.linkify(md)
        name, a = m.group(2), anchor(m.group(2))
        if a in self.anchors: return ''
        self.anchors.add(a)
        escaped = name.replace('_', r'\_')   # `__init__` is a name, not bold "init"
        head = f'{m.group(1)} {escaped} {{ #{a} }}'
        return self.lookup.linkify(md[:m.start()] + head + md[m.end():])


# ---------------------------------------------------------------------------------------------- the site
def fix_links(page: Page, pages: dict, site: str) -> str:
    "Links to this site's pages (`site/x.html#a`, `x.ipynb`, `x.html`) as links to their `.md` pages."
    by_md = {p.path: p for p in pages.values()}
    def sub(m):
        url = m.group(1)
        path, _, frag = (url[len(site) + 1:] if url.startswith(site + '/') else url).partition('#')
        if url.startswith(site + '/') or re.match(r'^[^:/]+\.html$', path): target = path[:-len('.html')] + '.md'
        elif path.endswith('.ipynb'):
            nb = pages.get(Path(os.path.normpath(page.rel.parent / path)))
            target = nb.path if nb else None
        else: return m.group(0)
        if target not in by_md: return m.group(0)
        if frag and url.startswith(site + '/') and frag not in by_md[target].anchors:   # e.g. a method shown with its class
            frag = next((f for f in [frag.rpartition('.')[0]] if f in by_md[target].anchors), '')
        rel = os.path.relpath(target, os.path.dirname(page.path) or '.')
        return f']({rel}{"#" + frag if frag else ""})'
    return outside_code(page.md, lambda t: re.sub(r'\]\(([^)\s]+)\)', sub, t))

def build(nbs: Path, out: Path, proc: Path) -> list:
    "Write the pages into `proc`/docs and MkDocs' site into `out`; returns the problems found."
    from execnb.nbio import read_nb
    from nbdev.config import get_config
    from nbdev.doclinks import NbdevLookup
    from nbdev.process import NBProcessor
    cfg, problems, pages = get_config(path=ROOT), [], {}
    site, lookup = (cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')).rstrip('/'), NbdevLookup()
    for p in notebooks(nbs):
        rel = p.relative_to(nbs)
        try:
            nb = read_nb(p)
            nb.path_ = str(p)
            NBProcessor(nb=nb, procs=make_procs(cfg.lib_name, str(rel), problems)).process()
            pages[rel] = Page(nb, rel, p.parent, problems, lookup)
        except Exception as e: problems.append(f'{rel}: cannot be rendered: {e!r}')
    docs = proc / 'docs'
    shutil.rmtree(docs, ignore_errors=True)
    nav, sections = [], {}
    for rel, page in pages.items():
        (docs / page.path).parent.mkdir(parents=True, exist_ok=True)
        (docs / page.path).write_text(fix_links(page, pages, site), encoding='utf-8')
        for name, data in page.files.items():
            (docs / page.path).parent.joinpath(name).parent.mkdir(parents=True, exist_ok=True)
            (docs / page.path).parent.joinpath(name).write_bytes(data)
        where = nav
        for k in range(len(rel.parent.parts)):   # a section for each sub-folder of nbs/
            key = rel.parent.parts[:k + 1]
            if key not in sections: sections[key] = []; where.append({key[-1]: sections[key]})
            where = sections[key]
        where.append({page.title.replace('`', ''): page.path})   # the sidebar shows titles as plain text
    if (nbs / 'styles.css').exists(): shutil.copy(nbs / 'styles.css', docs / 'styles.css')
    conf = dict(INHERIT=os.path.relpath(ROOT / 'mkdocs.yml', proc), site_name=cfg.title, site_description=cfg.description,
                site_url=site + '/', repo_url=cfg.git_url, docs_dir='docs', site_dir=str(out.resolve()), nav=nav,
                extra_css=['styles.css'] if (docs / 'styles.css').exists() else [])
    (proc / 'mkdocs.yml').write_text(yaml.safe_dump(conf, sort_keys=False, allow_unicode=True), encoding='utf-8')
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    class Warnings(logging.Handler):   # MkDocs' warnings are problems too
        def emit(self, record): problems.append(f'mkdocs: {record.getMessage()}')
    log, handler = logging.getLogger('mkdocs'), Warnings(logging.WARNING)
    log.addHandler(handler)
    try: mkdocs_build(load_config(str(proc / 'mkdocs.yml')))
    finally: log.removeHandler(handler)
    return problems

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', type=Path, help='the site folder (default: doc_path in settings.ini, _docs)')
    ap.add_argument('--nbs', type=Path, help='the notebooks folder (default: nbs_path in settings.ini, nbs)')
    ap.add_argument('--proc', type=Path, default=ROOT / '_proc', help='where the markdown pages go (default: _proc)')
    args = ap.parse_args(argv)
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    out, nbs = (args.out or cfg.doc_path).resolve(), (args.nbs or cfg.nbs_path).resolve()
    if out.is_dir() and any(out.iterdir()) and not (out / 'sitemap.xml').exists() and out != cfg.doc_path.resolve():
        ap.error(f'--out {out} holds files that are not a site built here; give a new or empty folder')
    logging.getLogger('mkdocs').setLevel(logging.WARNING)
    start = time.time()
    problems = build(nbs, out, args.proc.resolve())
    for p in problems: print('PROBLEM:', p, file=sys.stderr)
    print(f'built {out} in {time.time() - start:.1f}s ({"with problems" if problems else "ok"})')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
