#!/usr/bin/env python3
"""Build the flower_tl docs site, with or without Quarto.

    python tools/build_docs.py                  # the site into _docs/ (nbdev_docs where Quarto is installed)
    python tools/build_docs.py --offline        # the offline build even where Quarto is installed
    python tools/build_docs.py --out DIR        # the offline build into DIR
    python tools/build_docs.py --readme         # README.md from nbs/index.ipynb
    python tools/build_docs.py --readme --check # exit 1 if README.md is not what nbs/index.ipynb makes

Where `quarto` is on the PATH (and `--offline` is not given) this runs nbdev's own `nbdev_docs` (or
`nbdev_readme` for `--readme`), exactly as an nbdev project does.

Without Quarto it builds a static site itself, from the notebooks as they are saved (with the outputs of
the authors' real runs):

1. Each notebook goes through nbdev's own docs processors (`nbdev.processors`): the `# Title` / `> tagline`
   cell becomes the title and subtitle, `show_doc` cells are added after exported definitions, `#| hide`,
   `#| exporti` and `#| default_exp` cells are dropped, backticked names are linked to their docs, and so on.
2. Two processors differ from nbdev's, so that nothing is executed:
   - nbdev's `exec_show_docs` runs the notebook's imports, exported cells and `show_doc` cells in a kernel.
     Here `show_doc(...)` calls are evaluated against the *imported* module (`flower_tl.<default_exp>`, plus
     the notebook's own import statements) and rendered with `nbdev.showdoc.show_doc` to markdown; every other
     cell keeps its stored outputs. A `show_doc` that cannot be evaluated keeps its stored output, if any.
   - nbdev's `rm_export` hides `#| export` cells; here they stay visible as an "Exported source" block after
     their `show_doc` (as nbdev does for `#| exports`): open up to FOLD_LINES lines, folded (one click away)
     beyond. Import-only export cells are dropped.
3. Quarto's cell options are applied: `echo: false` hides the code, `output: false` and `eval: false` the
   outputs, `include: false` the cell, `code-fold`/`code-summary` fold the code, `fig-cap` captions a figure.
   Progress bars in stream outputs show their last state; a figure output twice in one cell is shown once;
   `::: {.callout-note}` blocks become callouts; TeX math becomes MathML (latex2mathml), so it renders offline.
4. nbconvert's HTML exporter renders the cells (with a small template that emits Quarto's class names, so
   `nbs/styles.css` applies to both builds); images are embedded as data URIs. Each page gets a navbar, a
   sidebar listing every page, and an "On this page" contents list; heading ids follow Pandoc's rules, so the
   `page.html#name` links in `flower_tl/_modidx.py` work.
5. Problems are reported at the end, and the exit status is 1 if there was any: stored error outputs, a
   traceback in a stream output, a notebook that cannot be read or processed, a `show_doc` that could not be
   rendered, an exported name missing from its page.
"""
from __future__ import annotations

import argparse, ast, base64, difflib, html, importlib, inspect, json, mimetypes, os, re, shutil, subprocess, sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLD_LINES = 25   # an `#| export` cell longer than this shows its source folded (a click opens it)
os.environ.setdefault('MPLBACKEND', 'Agg')


# ---------------------------------------------------------------------------------------------- settings
def get_cfg():
    "nbdev's config for this repo (settings.ini)."
    from nbdev.config import get_config
    return get_config(path=ROOT)

def site_url(cfg) -> str:
    "The published site's URL, e.g. https://user.github.io/repo (no trailing slash)."
    return (cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')).rstrip('/')

def nb_page(rel: Path) -> Path:
    "The page a notebook renders to, as nbdev/Quarto name it: `00_data.ipynb` -> `data.html`."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(rel))

def find_notebooks(nbs: Path) -> list:
    "The notebooks nbdev renders, in nbdev_sidebar's order (index first, then by path)."
    from nbdev.doclinks import nbglob
    files = [Path(o) for o in nbglob(nbs, skip_folder_re=r'(?:^[_.]|^www\$)', file_glob='*.ipynb')]
    def key(p):
        rel = p.relative_to(nbs)
        return (rel.parent.parts, '00' if rel.name.startswith('index.') else rel.name)
    return sorted(files, key=key)


class Report:
    "Problems (they make the build fail) and notes (printed only) found while building."
    def __init__(self): self.problems, self.notes = [], []
    def problem(self, msg): self.problems.append(msg)
    def note(self, msg): self.notes.append(msg)


# --------------------------------------------------------------------------- stored errors in notebooks
def stored_errors(nb_path: Path) -> list:
    "Error outputs and tracebacks in stream outputs stored in the notebook at `nb_path`, as messages."
    try: nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    except (OSError, ValueError) as e: return [f'{nb_path.name}: cannot read the notebook: {e!r}']
    res = []
    for i, c in enumerate(nb.get('cells', [])):
        for o in c.get('outputs', []) or []:
            if o.get('output_type') == 'error':
                res.append(f'{nb_path.name} cell {i}: stored error output {o.get("ename")}: {o.get("evalue")}')
            elif o.get('output_type') == 'stream':
                txt = o.get('text', '')
                if 'Traceback' in (''.join(txt) if isinstance(txt, list) else txt):
                    res.append(f'{nb_path.name} cell {i}: a traceback in the {o.get("name")} output')
    return res


# ------------------------------------------------------------------------------ notebook processing
_re_pandoc_link = re.compile(r'\[([^\]\n]+)\]\(([^)\s]+)\)\{([^}\n]*)\}')

def _pandoc_attrs(s: str) -> str:
    'Pandoc attributes `{#id .cls key="v"}` as HTML attributes.'
    ids = re.findall(r'(?:^|\s)#([\w-]+)', s)
    classes = re.findall(r'(?:^|\s)\.([\w-]+)', s)
    kvs = re.findall(r'([\w-]+)=(?:"([^"]*)"|(\S+))', s)
    res = [f'id="{html.escape(ids[0])}"'] if ids else []
    if classes: res.append(f'class="{html.escape(" ".join(classes))}"')
    res += [f'{k}="{html.escape(a or b)}"' for k, a, b in kvs]
    return ' '.join(res)

def pandoc_links_to_html(md: str) -> str:
    "`[text](url){attrs}` (Pandoc link attributes, as in show_doc's source link) to an HTML `<a>`."
    return _re_pandoc_link.sub(lambda m: f'<a href="{html.escape(m.group(2))}" {_pandoc_attrs(m.group(3))}>'
                                         f'{m.group(1)}</a>', md)

def pandoc_links_to_md(md: str) -> str:
    "`[text](url){attrs}` to a plain markdown link (GitHub shows Pandoc attributes as text)."
    return _re_pandoc_link.sub(r'[\1](\2)', md)

def _is_import(t): return isinstance(t, (ast.Import, ast.ImportFrom))

def make_procs(lib_name: str, report: Report, nb_name: str):
    "nbdev's docs processors, with `exec_show_docs` and `rm_export` replaced by versions that execute nothing."
    from nbdev.process import Processor
    from nbdev.frontmatter import FrontmatterProc
    from nbdev import processors as P
    from fastcore.basics import str2bool

    class render_show_docs(Processor):
        "Fill each `show_doc(...)` cell's output from the imported module instead of running the notebook."
        def begin(self):
            fm = getattr(self.nb, 'frontmatter_', {}) or {}
            self.skip, self.ns = str2bool(fm.get('skip_showdoc', False)), None

        def _namespace(self):
            if self.ns is not None: return self.ns
            from nbdev.showdoc import show_doc
            ns = {'__name__': '__flower_tl_docs__', 'show_doc': show_doc}
            exp = next((c.directives_['default_exp'][0] for c in self.nb.cells
                        if c.cell_type == 'code' and c.get('directives_', {}).get('default_exp')), None)
            if exp:
                try: ns.update({k: v for k, v in vars(importlib.import_module(f'{lib_name}.{exp}')).items()
                                if not k.startswith('__')})
                except Exception as e: report.problem(f'{nb_name}: cannot import {lib_name}.{exp}: {e!r}')
            for c in self.nb.cells:
                if c.cell_type != 'code' or P.cell_lang(c) != 'python': continue
                for t in (c.parsed_() or []):
                    if not _is_import(t): continue
                    try: exec(compile(ast.Module([t], []), f'<{nb_name}>', 'exec'), ns)
                    except Exception as e: report.note(f'{nb_name}: import failed ({ast.unparse(t)}): {e!r}')
            self.ns = ns
            return ns

        def _render(self, call):
            r = eval(compile(ast.Expression(call.value), f'<{nb_name}>', 'eval'), self._namespace())
            if r is None: return None
            md = r._repr_markdown_() if hasattr(r, '_repr_markdown_') else str(r)
            if '#LNone' in md:  # nbdev 2.4.14 looks the line up under the wrong key: find it ourselves
                try: line = inspect.getsourcelines(inspect.unwrap(r.sym))[1]
                except Exception: line = None
                md = md.replace('#LNone', f'#L{line}' if line else '')
            return md

        def __call__(self, cell):
            if self.skip or cell.cell_type != 'code': return
            calls = P._show_docs(cell.parsed_() or [])
            if not calls: return
            from fastcore.basics import AttrDict
            outs = []
            for call in calls:
                try: md = self._render(call)
                except Exception as e:
                    stored = [o for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {})]
                    if stored:
                        report.note(f'{nb_name}: {ast.unparse(call)} kept its stored output ({e!r})')
                        return
                    report.problem(f'{nb_name}: cannot render {ast.unparse(call)} (no stored output either): {e!r}')
                    continue
                if md: outs.append(AttrDict(output_type='display_data', metadata={},
                                            data=AttrDict({'text/markdown': md.splitlines(True)})))
            cell.outputs = outs

    _drop = {'exporti', 'hide', 'default_exp'}
    def keep_export_source(cell):
        "Like nbdev's `rm_export`, but `#| export` code stays visible, as an 'Exported source' block (folded if long)."
        d = cell.get('directives_') or {}
        if not d: return
        if d.keys() & _drop: del cell['source']; return
        if 'export' in d:
            trees = cell.parsed_()
            if trees is not None and all(_is_import(t) for t in trees): del cell['source']; return
            n = len(cell.source.strip().splitlines())
            fold = 'show' if n <= FOLD_LINES else 'true'   # long definitions start folded, one click away
            cell.source = f'#| code-fold: {fold}\n#| code-summary: "Exported source ({n} lines)"\n' + cell.source
            cell.export_src_ = True

    def _only_show_docs(c):
        if c.cell_type != 'code': return False
        if c.get('has_sd'): return True
        trees = c.parsed_()
        return bool(trees) and len(P._show_docs(trees)) == len(trees)

    class mv_export_source(Processor):
        "Put the `show_doc` cells right after an `#| export` cell before its source, as nbdev's `mv_exports` does."
        def begin(self):
            cells, out, i = list(self.nb.cells), [], 0
            while i < len(cells):
                c = cells[i]
                if c.get('export_src_'):
                    j = i + 1
                    while j < len(cells) and _only_show_docs(cells[j]): j += 1
                    out += cells[i+1:j] + [c]
                    i = j
                else: out.append(c); i += 1
            self.nb.cells = out

    procs = [FrontmatterProc, P.populate_language, P.add_show_docs, P.strip_ansi, P.hide_line, P.filter_stream_,
             P.rm_header_dash, P.clean_show_doc, render_show_docs, keep_export_source, P.ai_magics, P.clean_magics,
             P.hide_, P.add_links, P.add_fold, P.mv_exports, mv_export_source, P.strip_hidden_metadata]
    cfg = get_cfg()
    skip = set(cfg.get('skip_procs', '').split(','))
    procs = [p for p in procs if p.__name__ not in skip]
    for o in cfg.get('procs', '').split():
        mod, nm = o.split(':')
        procs.append(getattr(importlib.import_module(mod), nm))
    return procs

def _leftover_title_text(src: str) -> str:
    "Text in the `# Title` cell besides the title, the `> tagline` and `- key: value` lines (nbdev drops it)."
    keep = [l for l in src.splitlines() if l.strip() and not re.match(r'^(#\s|>\s|-\s+\S.*:)', l.strip())]
    return '\n'.join(keep)

def process_notebook(path: Path, report: Report, lib_name: str):
    "`path` read and run through the docs processors; returns (notebook, frontmatter) or None on failure."
    from execnb.nbio import read_nb
    from nbdev.process import NBProcessor
    try: nb = read_nb(path)
    except Exception as e:
        report.problem(f'{path.name}: cannot read the notebook: {e!r}')
        return None
    first_md = next((c for c in nb.cells if c.cell_type == 'markdown'), None)
    if first_md is not None and re.search(r'^#\s+\S', first_md.source, re.M) and _leftover_title_text(first_md.source):
        report.note(f'{path.name}: the title cell holds more than `# title` and `> tagline`; nbdev drops that text '
                    f'from the docs, so move it to a cell of its own')
    nb.path_ = str(path)
    try: NBProcessor(nb=nb, procs=make_procs(lib_name, report, path.name)).process()
    except Exception as e:
        report.problem(f'{path.name}: nbdev processing failed: {e!r}')
        return None
    return nb, dict(getattr(nb, 'frontmatter_', {}) or {})


# -------------------------------------------------------------------------------------- cell options
_re_qopt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def split_cell_options(src: str):
    "Quarto's `#| key: value` lines at the top of `src` as a dict, and the rest of the code."
    import yaml
    lines, opts, i = (src or '').splitlines(), {}, 0
    while i < len(lines) and (m := _re_qopt.match(lines[i])):
        try: v = yaml.safe_load(m.group(2))
        except Exception: v = m.group(2)
        opts[m.group(1)] = v
        i += 1
    return opts, '\n'.join(lines[i:]).strip('\n')

def _is_false(v): return v is False or str(v).lower() == 'false'

def _join(v): return ''.join(v) if isinstance(v, list) else v

_re_cr = re.compile(r'[^\n]*\r(?!\n)')

def norm_outputs(outs) -> list:
    "Stored outputs as plain nbformat dicts (multi-line strings joined, metadata present, consecutive streams merged)."
    res = []
    for o in outs or []:
        o = json.loads(json.dumps(o))
        if 'text' in o: o['text'] = _join(o['text'])
        if (o.get('output_type') == 'stream' and res and res[-1].get('output_type') == 'stream'
                and res[-1].get('name') == o.get('name')):
            res[-1]['text'] += o['text']   # one block per stream, as Jupyter shows it (each print() may be its own output)
            continue
        if 'data' in o: o['data'] = {k: _join(v) if k.startswith(('text/', 'image/svg')) or isinstance(v, list) else v
                                     for k, v in o['data'].items()}
        if o.get('output_type') in ('display_data', 'execute_result'): o.setdefault('metadata', {})
        if o.get('output_type') == 'execute_result': o.setdefault('execution_count', None)
        res.append(o)
    for o in res:
        if 'text' in o: o['text'] = _re_cr.sub('', o['text'])   # progress bars: keep what a terminal shows
    return res

_img_types = ('image/png', 'image/jpeg', 'image/svg+xml')

def _dedupe_images(outs, report, where):
    "Drop an image output identical to an earlier one in the same cell (a figure shown twice)."
    seen, res = set(), []
    for o in outs:
        imgs = tuple(o.get('data', {}).get(t) for t in _img_types if t in o.get('data', {}))
        if imgs and imgs in seen:
            report.note(f'{where}: the same figure is output twice; showing it once (close the figure or end the '
                        f'line with `;`)')
            continue
        if imgs: seen.add(imgs)
        res.append(o)
    return res

def prepare_cells(nb, report: Report, nb_name: str):
    "The processed notebook's cells as nbformat cells for rendering, with Quarto's cell options applied."
    import nbformat, nbformat.v4 as v4
    cells = []
    for c in nb.cells:
        if c.cell_type == 'raw':
            if re.match(r'^---\s*\n', c.source or ''): continue   # the frontmatter nbdev inserted
            cells.append(v4.new_raw_cell(c.source, metadata=dict(c.get('metadata', {}))))
        elif c.cell_type == 'markdown':
            if not (c.source or '').strip(): continue
            cell = v4.new_markdown_cell(c.source)
            if c.get('attachments'): cell.attachments = json.loads(json.dumps(c.attachments))
            cells.append(cell)
        elif c.cell_type == 'code':
            opts, src = split_cell_options(c.source)
            if _is_false(opts.get('include', True)): continue
            outs = norm_outputs(c.get('outputs'))
            if _is_false(opts.get('output', True)) or _is_false(opts.get('eval', True)): outs = []
            outs = _dedupe_images(outs, report, f'{nb_name}, the cell `{src.strip().splitlines()[0] if src.strip() else ""}`')
            md = {}
            if _is_false(opts.get('echo', True)) or not src.strip(): md['transient'] = {'remove_source': True}
            fold = opts.get('code-fold')
            if fold not in (None, False) and not _is_false(fold):
                md['fold'] = 'show' if str(fold).lower() == 'show' else 'hide'
                md['fold_summary'] = str(opts.get('code-summary', 'Code'))
            if opts.get('fig-cap'): md['fig_cap'] = str(opts['fig-cap'])
            if str(opts.get('output', '')).lower() == 'asis': md['asis'] = True
            lang = (c.get('metadata') or {}).get('language')
            if lang and lang != 'python': md['magics_language'] = lang
            if 'remove_source' in md.get('transient', {}) and not outs: continue
            cells.append(v4.new_code_cell(src, outputs=[nbformat.from_dict(o) for o in outs], metadata=md))
    return cells


# ------------------------------------------------------------------------------------------ HTML
_TEMPLATE = r"""{%- extends 'display_priority.j2' -%}
{%- block codecell scoped -%}
<div class="cell">
{{ super() }}
</div>
{%- endblock codecell -%}
{%- block input_group -%}
{%- if cell.metadata.get('fold') -%}
<details class="code-fold"{% if cell.metadata.fold == 'show' %} open{% endif %}><summary>{{ cell.metadata.fold_summary | escape_html }}</summary>
<div class="sourceCode cell-code">{{ cell.source | highlight_code(metadata=cell.metadata) }}</div>
</details>
{%- else -%}
<div class="sourceCode cell-code">{{ cell.source | highlight_code(metadata=cell.metadata) }}</div>
{%- endif -%}
{%- endblock input_group -%}
{%- block execute_result -%}
{%- block data_priority scoped -%}{{ super() }}{%- endblock data_priority -%}
{%- endblock execute_result -%}
{%- block stream_stdout -%}
<div class="cell-output cell-output-stdout"><pre><code>{{ output.text | ansi2html }}</code></pre></div>
{%- endblock stream_stdout -%}
{%- block stream_stderr -%}
<div class="cell-output cell-output-stderr"><pre><code>{{ output.text | ansi2html }}</code></pre></div>
{%- endblock stream_stderr -%}
{%- block error -%}
<div class="cell-output cell-output-error"><pre><code>{{ super() }}</code></pre></div>
{%- endblock error -%}
{%- block traceback_line -%}
{{ line | ansi2html }}
{% endblock traceback_line -%}
{%- macro figure(output, cell, src, mime) -%}
<div class="cell-output cell-output-display"><figure class="figure">
<img src="data:{{ mime }};base64,{{ src | escape_html }}"
{%- set width = output | get_metadata('width', mime) -%}{%- if width is not none %} width="{{ width | escape_html }}"{% endif -%}
{%- set height = output | get_metadata('height', mime) -%}{%- if height is not none %} height="{{ height | escape_html }}"{% endif %} alt="{{ (cell.metadata.get('fig_cap') or (output | get_metadata('alt', mime)) or 'figure output') | escape_html }}" class="figure-img">
{%- if cell.metadata.get('fig_cap') %}<figcaption>{{ cell.metadata.fig_cap | escape_html }}</figcaption>{% endif %}
</figure></div>
{%- endmacro -%}
{%- block data_png -%}{{ figure(output, cell, output.data['image/png'], 'image/png') }}{%- endblock data_png -%}
{%- block data_jpg -%}{{ figure(output, cell, output.data['image/jpeg'], 'image/jpeg') }}{%- endblock data_jpg -%}
{%- block data_svg -%}{{ figure(output, cell, output.data['image/svg+xml'] | text_base64, 'image/svg+xml') }}{%- endblock data_svg -%}
{%- block data_html -%}
<div class="cell-output cell-output-display">{{ output.data['text/html'] }}</div>
{%- endblock data_html -%}
{%- block data_markdown -%}
<div class="cell-output cell-output-display{% if cell.metadata.get('asis') %} cell-output-asis{% endif %}">{{ output.data['text/markdown'] | markdown2html }}</div>
{%- endblock data_markdown -%}
{%- block data_latex -%}
<div class="cell-output cell-output-display"><pre><code>{{ output.data['text/latex'] | escape_html }}</code></pre></div>
{%- endblock data_latex -%}
{%- block data_text -%}
<div class="cell-output cell-output-display"><pre><code>{{ output.data['text/plain'] | ansi2html }}</code></pre></div>
{%- endblock data_text -%}
{%- block data_javascript -%}{%- endblock data_javascript -%}
{%- block data_widget_view -%}{%- endblock data_widget_view -%}
{%- block markdowncell scoped -%}
<div class="cell-markdown">{{ cell.source | markdown2html | strip_files_prefix }}</div>
{%- endblock markdowncell -%}
{%- block rawcell scoped -%}
{%- if cell.metadata.get('raw_mimetype', '').lower() in ['text/html', ''] and cell.source.lstrip().startswith('<') -%}{{ cell.source }}{%- endif -%}
{%- endblock rawcell -%}
"""

_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="flower_tl tools/build_docs.py (nbdev processors + nbconvert)">
<title>{{ page_title_text }} – {{ site_title }}</title>
{%- if description %}
<meta name="description" content="{{ description_text }}">{% endif %}
<link rel="stylesheet" href="{{ rel }}site.css">
<link rel="stylesheet" href="{{ rel }}styles.css">
{%- if math %}
<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\(', '\\)']]}};</script>
<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>{% endif %}
</head>
<body>
<header class="navbar">
  <a class="navbar-title" href="{{ rel }}index.html">{{ site_title }}</a>
  <span class="navbar-description">{{ site_description }}</span>
  {%- if repo_url %}
  <a class="navbar-repo" href="{{ repo_url }}">GitHub</a>{% endif %}
</header>
<div class="page-layout">
<nav class="sidebar" aria-label="Pages">
<ul>
{%- for item in sidebar %}
{%- if item.section %}
<li class="sidebar-section">{{ item.section }}</li>
{%- else %}
<li><a href="{{ rel }}{{ item.href }}"{% if item.active %} class="active" aria-current="page"{% endif %}>{{ item.title }}</a></li>
{%- endif %}
{%- endfor %}
</ul>
</nav>
<main class="content" id="quarto-document-content">
<header id="title-block-header" class="quarto-title-block">
<h1 class="title">{{ page_title }}</h1>
{%- if description %}
<div class="description"><p>{{ description }}</p></div>{% endif %}
</header>
{{ body }}
</main>
<nav class="toc" aria-label="On this page">
{%- if toc %}
<h2 class="toc-title">On this page</h2>
<ul>
{%- for level, id, text in toc %}
<li class="toc-level-{{ level }}"><a href="#{{ id }}">{{ text }}</a></li>
{%- endfor %}
</ul>{% endif %}
{%- if repo_url %}
<a class="repo-action" href="{{ repo_url }}/issues/new">Report an issue</a>{% endif %}
</nav>
</div>
</body>
</html>
"""

_SITE_CSS = r"""
*, *::before, *::after { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; color: #212529; background: #fff; line-height: 1.55;
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
a { color: #2780e3; text-decoration: none; }
a:hover { text-decoration: underline; }
a code, p a code, li a code, td a code { color: #2780e3; }
.sidebar code { color: inherit; background: none; padding: 0; font-size: 0.9em; }
code, pre { font-family: SFMono-Regular, Menlo, Monaco, Consolas, "Liberation Mono", monospace; font-size: 0.875rem; }
p code, li code, td code, h1 code, h2 code, h3 code, .description code { color: #7d12ba; background: #f8f9fa;
  padding: 0.1em 0.25em; border-radius: 3px; }
pre { overflow-x: auto; padding: 0.6rem 0.8rem; background: #f8f9fa; border-radius: 4px; margin: 0 0 1rem; }
.navbar { position: sticky; top: 0; z-index: 10; display: flex; align-items: baseline; gap: 1.2rem;
  padding: 0.7rem 1.5rem; background: #2780e3; color: #fff; }
.navbar a { color: #fff; }
.navbar-title { font-size: 1.25rem; font-weight: 600; }
.navbar-description { opacity: 0.85; font-size: 0.9rem; flex: 1; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.page-layout { display: grid; grid-template-columns: 200px minmax(0, 1fr) 190px; gap: 1.75rem; max-width: 1400px;
  margin: 0 auto; padding: 1.5rem 1.5rem 4rem; }
.sidebar ul, .toc ul { list-style: none; margin: 0; padding: 0; }
.sidebar { position: sticky; top: 4rem; align-self: start; max-height: calc(100vh - 5rem); overflow-y: auto; }
.sidebar li a { display: block; padding: 4px 8px; border-radius: 6px; color: #343a40; font-size: 0.95rem; }
.sidebar li a.active { background: #e8effc; color: #000; font-weight: 600; }
.sidebar li a:hover { background: #f1f3f5; text-decoration: none; }
.sidebar-section { margin-top: 0.8rem; padding: 4px 8px; font-weight: 600; color: #6c757d; font-size: 0.85rem;
  text-transform: uppercase; letter-spacing: 0.03em; }
.toc { position: sticky; top: 4rem; align-self: start; max-height: calc(100vh - 5rem); overflow-y: auto; overflow-x: hidden;
  font-size: 0.85rem; border-left: 1px solid #dee2e6; padding-left: 0.8rem; }
.toc-title { font-size: 0.9rem; margin: 0 0 0.4rem; font-weight: 600; }
.toc li { padding: 2px 0; overflow-wrap: anywhere; }
.toc li.toc-level-3 { padding-left: 0.9rem; }
.toc a { color: #495057; }
.toc .repo-action { display: block; margin-top: 1rem; padding-top: 0.6rem; border-top: 1px solid #dee2e6; }
.content { min-width: 0; }
.content h1.title { font-size: 2.2rem; margin: 0 0 0.3rem; line-height: 1.2; }
.quarto-title-block { margin-bottom: 1.5rem; padding-bottom: 0.8rem; border-bottom: 1px solid #dee2e6; }
.quarto-title-block .description p { margin: 0; }
.content h2 { font-size: 1.6rem; margin: 2rem 0 0.8rem; padding-bottom: 0.3rem; border-bottom: 1px solid #dee2e6; }
.content h3 { font-size: 1.3rem; margin: 1.5rem 0 0.6rem; }
.anchor-link { visibility: hidden; margin-left: 0.3em; color: #adb5bd; font-size: 0.8em; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility: visible; }
.cell-markdown table, .cell-output table { border-collapse: collapse; margin: 0 0 1rem; font-size: 0.9rem; }
.cell-markdown th, .cell-markdown td, .cell-output th, .cell-output td { border: 1px solid #dee2e6; padding: 0.3rem 0.6rem;
  text-align: left; vertical-align: top; }
.cell-markdown thead th, .cell-output thead th { background: #f8f9fa; }
.cell-code .highlight pre { background: rgba(233, 236, 239, 0.5); border-left: 3px solid #dee2e6; }
.cell-output pre { background: none; }
.cell-output-stderr pre { border-left-color: #f0ad4e !important; color: #6c4a00; }
.cell-output-error pre { border-left-color: #dc3545 !important; color: #842029; background: #fbe9eb; }
.cell-output-display { margin: 0.3rem 0 0.8rem; }
figure.figure { margin: 0; }
figure.figure img { max-width: 100%; height: auto; }
figure.figure figcaption { font-size: 0.9rem; color: #6c757d; margin-top: 0.3rem; }
.cell-output-asis { margin: 1.5rem 0 0.5rem; }
.cell-output-asis hr { border: 0; border-top: 1px solid #dee2e6; margin: 0 0 0.6rem; }
.cell-output-asis h2, .cell-output-asis h3, .cell-output-asis h4 { margin-top: 0.2rem; border: 0; }
.cell-output-asis h3 code, .cell-output-asis h4 code { color: inherit; background: none; padding: 0; }
.cell-output-asis .highlight pre { border-left: 3px solid #2780e3; background: #f5f8fd; }
details.code-fold { margin-bottom: 0.5rem; }
details.code-fold > summary { cursor: pointer; color: #6c757d; font-size: 0.9rem; margin-bottom: 0.3rem; }
.callout { border-left: 4px solid #2780e3; background: #f5f8fd; padding: 0.6rem 1rem; margin: 1rem 0;
  border-radius: 4px; }
.callout-warning, .callout-caution { border-left-color: #f0ad4e; background: #fff8ec; }
.callout-important { border-left-color: #dc3545; background: #fcf0f1; }
.callout-tip { border-left-color: #3fb618; background: #f2fbef; }
.callout-title { font-weight: 600; margin-bottom: 0.3rem; }
.cell-markdown img { max-width: 100%; }
math[display="block"] { margin: 0.8rem 0; font-size: 1.15em; }
math { font-size: 1.05em; }
blockquote { margin: 0 0 1rem; padding: 0.2rem 1rem; border-left: 4px solid #dee2e6; color: #495057; }
@media (max-width: 1100px) { .page-layout { grid-template-columns: 200px minmax(0, 1fr); } .toc { display: none; } }
@media (max-width: 760px) { .page-layout { display: block; } .sidebar { position: static; max-height: none;
  margin-bottom: 1rem; } .navbar-description { display: none; } }
"""

_re_fdiv_open = re.compile(r'^(:{3,})\s*(?:\{([^}]*)\}|([\w-]+))\s*$')
_re_fdiv_close = re.compile(r'^:{3,}\s*$')
_callout_titles = dict(note='Note', tip='Tip', warning='Warning', caution='Caution', important='Important')

def fenced_divs_to_html(md: str) -> str:
    "Quarto/Pandoc fenced divs (`::: {.callout-note}` ... `:::`) as HTML div blocks around the markdown."
    out, in_code = [], False
    for line in md.splitlines():
        if re.match(r'^\s*(```|~~~)', line): in_code = not in_code
        m = None if in_code else _re_fdiv_open.match(line)
        if m:
            attrs = m.group(2) if m.group(2) is not None else f'.{m.group(3)}'
            classes = re.findall(r'(?:^|\s)\.([\w-]+)', attrs)
            kind = next((c[len('callout-'):] for c in classes if c.startswith('callout-')), None)
            if kind: classes = ['callout'] + classes
            title = re.search(r'title="([^"]*)"', attrs)
            out += ['', f'<div class="{html.escape(" ".join(classes))}">', '']
            if kind: out += [f'<div class="callout-title">{html.escape(title.group(1) if title else _callout_titles.get(kind, kind.title()))}</div>', '']
        elif not in_code and _re_fdiv_close.match(line): out += ['', '</div>', '']
        else: out.append(line)
    return '\n'.join(out)

_re_code_span = re.compile(r'(`+)(?:.+?)\1', re.S)
_re_display_math = re.compile(r'\$\$(.+?)\$\$', re.S)
_re_inline_math = re.compile(r'(?<![\\$\w])\$(?![\s$])((?:\\\$|[^$\n])+?)(?<![\s\\])\$(?!\d)')  # Pandoc's rule

def math_to_mathml(md: str, report: Report = None, where: str = ''):
    """TeX math (`$...$`, `$$...$$`, outside code) as MathML, which browsers render without a script or network.
    Returns the markdown and whether TeX is left in it (no latex2mathml, or it failed): MathJax renders that online."""
    try: from latex2mathml.converter import convert
    except ImportError: convert = None
    left = []
    def conv(display):
        def f(m):
            if convert is not None:
                try: return convert(m.group(1).strip(), display=display)
                except Exception as e:
                    if report: report.note(f'{where}: kept TeX {m.group(0)[:40]!r} (latex2mathml: {e!r})')
            left.append(m.group(0))
            return m.group(0)
        return f
    def text(t):  # outside fenced code: leave inline code spans alone
        parts, last = [], 0
        for m in _re_code_span.finditer(t):
            parts += [_re_inline_math.sub(conv('inline'), _re_display_math.sub(conv('block'), t[last:m.start()])), m.group(0)]
            last = m.end()
        return ''.join(parts + [_re_inline_math.sub(conv('inline'), _re_display_math.sub(conv('block'), t[last:]))])
    out, chunk, fence = [], [], None
    for line in md.splitlines(keepends=True):
        m = re.match(r'^\s*(```+|~~~+)', line)
        if fence is None and m:
            out.append(text(''.join(chunk))); chunk = []; fence = m.group(1)[:3]; out.append(line)
        elif fence is not None:
            out.append(line)
            if line.strip().startswith(fence): fence = None
        else: chunk.append(line)
    return ''.join(out) + text(''.join(chunk)), bool(left)

def pandoc_id(text: str) -> str:
    "The identifier Pandoc (so Quarto) gives a heading with this text."
    s = ''.join(ch for ch in text.strip() if ch.isalnum() or ch in '_-. \t\n')
    s = re.sub(r'\s+', '-', s).lower()
    i = next((i for i, ch in enumerate(s) if ch.isalpha()), len(s))
    return s[i:] or 'section'

def _img_data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or 'application/octet-stream'
    return f'data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}'

_re_heading = re.compile(r'<(h[1-6])(\s[^>]*)?>(.*?)</\1>', re.S)
_re_anchor_link = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.S)
_re_tag = re.compile(r'<[^>]+>')
_re_href = re.compile(r'(<a\s[^>]*?\bhref=")([^"]*)(")')
_re_src = re.compile(r'(<img\s[^>]*?\bsrc=")([^"]*)(")')

def _strip_tags(s: str) -> str: return ' '.join(html.unescape(_re_tag.sub('', s)).split())

def postprocess_html(body: str, *, nb_dir: Path, depth: int, site: str, pages: dict, report: Report, nb_name: str):
    "Pandoc heading ids, local links for this site's pages, local images embedded; returns (html, toc)."
    rel, used, toc = '../' * depth, {}, []
    def heading(m):
        tag, attrs, inner = m.group(1), re.sub(r'\s+id="[^"]*"', '', m.group(2) or ''), _re_anchor_link.sub('', m.group(3))
        text = _strip_tags(inner)
        base = pandoc_id(text)
        n = used.get(base, 0)
        used[base] = n + 1
        hid = base if n == 0 else f'{base}-{n}'
        if tag in ('h2', 'h3'): toc.append((int(tag[1]), hid, html.escape(text)))
        return f'<{tag} id="{hid}"{attrs}>{inner}<a class="anchor-link" href="#{hid}" aria-hidden="true">¶</a></{tag}>'
    def link(m):
        href = html.unescape(m.group(2))
        if site and href.startswith(site + '/'): href = rel + href[len(site) + 1:]
        elif not re.match(r'^[a-z][\w+.-]*:|^#|^/', href):
            path, _, frag = href.partition('#')
            target = pages.get(os.path.normpath(path)) if path.endswith('.ipynb') else None
            if target: href = rel + target + (f'#{frag}' if frag else '')
        return m.group(1) + html.escape(href) + m.group(3)
    def img(m):
        src = html.unescape(m.group(2))
        if re.match(r'^(data:|[a-z][\w+.-]*://)', src): return m.group(0)
        p = nb_dir / src.split('#')[0].split('?')[0]
        if p.is_file(): return m.group(1) + _img_data_uri(p) + m.group(3)
        report.problem(f'{nb_name}: image not found: {src}')
        return m.group(0)
    body = _re_heading.sub(heading, body)
    body = _re_href.sub(link, body)
    return _re_src.sub(img, body), toc

def _inline_md(md: str) -> str:
    "Markdown for one line (a title or tagline) as inline HTML."
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    s = markdown2html_mistune(pandoc_links_to_html(str(md))).strip()
    m = re.fullmatch(r'<p>(.*)</p>', s, re.S)
    return m.group(1) if m else s

def _text(md: str) -> str: return _strip_tags(_inline_md(md))

def make_exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    class DocsExporter(HTMLExporter):
        def from_notebook_node(self, nb, resources=None, **kw):
            "HTMLExporter's, minus its final BeautifulSoup pass over the page (it only adds the alt texts we write)."
            try:
                from nbconvert.exporters.templateexporter import TemplateExporter
                from nbconvert.filters.highlight import Highlight2HTML
                from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
                lang = nb.metadata.get('language_info', {})
                self.register_filter('highlight_code', self.filters.get('highlight_code', Highlight2HTML(
                    pygments_lexer=lang.get('pygments_lexer', lang.get('name')), parent=self)))
                resources = self._init_resources(resources)
                self.register_filter('filter_data_type', WidgetsDataTypeFilter(
                    notebook_metadata=self._nb_metadata, parent=self, resources=resources))
            except (ImportError, AttributeError, TypeError):   # another nbconvert: its own method, slower
                return super().from_notebook_node(nb, resources, **kw)
            return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    return DocsExporter(template_name='basic', extra_loaders=[DictLoader({'flower_tl_docs.html.j2': _TEMPLATE})],
                        template_file='flower_tl_docs.html.j2', exclude_input_prompt=True,
                        exclude_output_prompt=True, anchor_link_text='¶', embed_images=False)

def _pygments_css() -> str:
    from pygments.formatters import HtmlFormatter
    return HtmlFormatter(style='default').get_style_defs('.highlight')

def _exported_names(lib_name: str, mod: str) -> list:
    "The public names `flower_tl.<mod>` exports (its `__all__`)."
    try: return list(getattr(importlib.import_module(f'{lib_name}.{mod}'), '__all__', []))
    except Exception: return []

def build_offline(nbs: Path, out: Path, report: Report) -> list:
    "Render every notebook under `nbs` to `out` (the offline build); returns a summary row per page."
    cfg = get_cfg()
    lib_name, site = cfg.lib_name, site_url(cfg)
    nbs, out = Path(nbs).resolve(), Path(out).resolve()
    check_out_dir(out, cfg)
    for p in find_notebooks(nbs):
        for e in stored_errors(p): report.problem(e)
    done = []
    for p in find_notebooks(nbs):
        r = process_notebook(p, report, lib_name)
        if r is not None: done.append((p, *r))
    pages = {os.path.normpath(str(p.relative_to(nbs))): str(nb_page(p.relative_to(nbs)).as_posix()) for p, _, _ in done}
    # the sidebar: index first, then every page, with a section per sub-folder
    sidebar, last_dir = [], ()
    for p, _, fm in done:
        rel = p.relative_to(nbs)
        if rel.parent.parts and rel.parent.parts != last_dir:
            sidebar.append(dict(section=html.escape(re.sub(r'^\d+_', '', rel.parent.parts[-1]))))
        last_dir = rel.parent.parts
        sidebar.append(dict(href=pages[os.path.normpath(str(rel))], title=_inline_md(fm.get('title', rel.stem))))
    final, out = out, Path(tempfile.mkdtemp(dir=_mkdirs(out.parent), prefix=f'.{out.name}.tmp-'))
    try: rows = _write_site(nbs, out, report, cfg, done, pages, sidebar, site, lib_name)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final.exists(): shutil.rmtree(final)
    os.replace(out, final)
    return rows

def _mkdirs(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p

class OutDirError(ValueError):
    "The output folder given cannot be used (it would delete someone's files)."

def check_out_dir(out: Path, cfg):
    "Refuse to replace a folder that is neither empty, nor settings.ini's doc_path, nor an earlier build of this tool."
    if not out.exists(): return
    if not out.is_dir(): raise OutDirError(f'--out {out} is a file; give a folder')
    if not any(out.iterdir()) or out == Path(cfg.doc_path).resolve(): return
    idx = out / 'index.html'
    if (out / 'site.css').exists() and idx.exists() and 'tools/build_docs.py' in idx.read_text(errors='replace')[:2000]: return
    raise OutDirError(f'--out {out} already holds other files; give a new or empty folder '
                      f'(the build replaces the whole folder)')

def _write_site(nbs, out, report, cfg, done, pages, sidebar, site, lib_name) -> list:
    "Write the pages and CSS of the offline build into the (new, empty) folder `out`."
    import nbformat.v4 as v4
    from jinja2 import Template
    (out / 'site.css').write_text(_SITE_CSS + '\n/* code highlighting (pygments) */\n' + _pygments_css() + '\n',
                                  encoding='utf-8')
    css = nbs / 'styles.css'
    (out / 'styles.css').write_text(css.read_text(encoding='utf-8') if css.exists() else '', encoding='utf-8')
    exporter, page_tpl, rows = make_exporter(), Template(_PAGE), []
    for p, nb, fm in done:
        rel = p.relative_to(nbs)
        page = pages[os.path.normpath(str(rel))]
        cells, math = prepare_cells(nb, report, p.name), False
        for c in cells:
            if c.cell_type == 'markdown':
                c.source, tex = math_to_mathml(fenced_divs_to_html(pandoc_links_to_html(c.source)), report, p.name)
                math = math or tex
            if c.cell_type == 'code':
                for o in c.outputs:
                    if 'text/markdown' in o.get('data', {}):
                        o.data['text/markdown'] = fenced_divs_to_html(pandoc_links_to_html(o.data['text/markdown']))
        nbn = v4.new_notebook(cells=cells, metadata={'language_info': {'name': 'python'}})
        try: body, _ = exporter.from_notebook_node(nbn, resources={'metadata': {'path': str(p.parent)}})
        except Exception as e:
            report.problem(f'{p.name}: nbconvert failed: {e!r}')
            continue
        depth = len(Path(page).parts) - 1
        body, toc = postprocess_html(body, nb_dir=p.parent, depth=depth, site=site, pages=pages, report=report,
                                     nb_name=p.name)
        title, desc = fm.get('title', rel.stem), fm.get('description', '')
        doc = page_tpl.render(
            rel='../' * depth, site_title=html.escape(cfg.title), site_description=html.escape(cfg.description),
            repo_url=cfg.git_url, page_title=_inline_md(title), page_title_text=html.escape(_text(title)),
            description=_inline_md(desc) if desc else '', description_text=html.escape(_text(desc)) if desc else '',
            sidebar=[dict(s, active=s.get('href') == page) for s in sidebar], toc=toc, body=body, math=math)
        dest = out / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(doc, encoding='utf-8')
        # is every name the module exports on its page?
        mod = _default_exp_of(p)
        missing = [n for n in _exported_names(lib_name, mod) if not re.search(rf'\b{re.escape(n)}\b', doc)] if mod else []
        for n in missing: report.problem(f'{p.name}: exported name {n} does not appear on {page}')
        rows.append(dict(page=page, notebook=str(rel), images=doc.count('<img '), tables=doc.count('<table'),
                         api=doc.count('cell-output-asis'), kb=round(len(doc.encode()) / 1024)))
    return rows

_re_default_exp = re.compile(r'^\s*#\|\s*default_exp\s+(\S+)', re.M)

def _default_exp_of(nb_path: Path):
    "The module a notebook exports to (`#| default_exp`), or None."
    try: nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    except (OSError, ValueError): return None
    for c in nb.get('cells', []):
        if c.get('cell_type') == 'code':
            m = _re_default_exp.search(_join(c.get('source', '')))
            if m: return m.group(1)
    return None


# ------------------------------------------------------------------------------------------ README
def render_readme(nb_path: Path, report: Report, img_dir: str = 'index_files/figure-commonmark'):
    "README markdown from the notebook at `nb_path` the way nbdev_readme makes it; returns (text, {path: bytes})."
    cfg = get_cfg()
    r = process_notebook(Path(nb_path), report, cfg.lib_name)
    if r is None: return None, {}
    nb, fm = r
    parts, images = [f'# {fm.get("title", cfg.title)}'], {}
    if fm.get('description'): parts.append(str(fm['description']))
    for i, c in enumerate(prepare_cells(nb, report, Path(nb_path).name)):
        if c.cell_type == 'markdown': parts.append(pandoc_links_to_md(c.source).strip())
        elif c.cell_type == 'raw': parts.append(c.source.strip())
        elif c.cell_type == 'code':
            if not c.metadata.get('transient', {}).get('remove_source'):
                parts.append(f'```{c.metadata.get("magics_language", "python")}\n{c.source}\n```')
            for j, o in enumerate(c.outputs):
                if o.output_type == 'stream': parts.append(f'```\n{o.text.rstrip()}\n```')
                elif o.output_type == 'error': parts.append('```\n' + '\n'.join(o.traceback) + '\n```')
                else:
                    d = o.get('data', {})
                    if 'text/markdown' in d: parts.append(pandoc_links_to_md(d['text/markdown']).strip())
                    elif 'text/html' in d: parts.append(d['text/html'].strip())
                    elif 'image/png' in d or 'image/jpeg' in d:
                        ext, mime = ('png', 'image/png') if 'image/png' in d else ('jpg', 'image/jpeg')
                        name = f'{img_dir}/cell-{i + 1}-output-{j + 1}.{ext}'
                        images[name] = base64.b64decode(d[mime])
                        parts.append(f'![]({name})')
                    elif 'text/plain' in d: parts.append(f'```\n{d["text/plain"].rstrip()}\n```')
    return '\n\n'.join(p for p in parts if p) + '\n', images


# ------------------------------------------------------------------------------------------ Quarto
def _nbdev_cmd(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)

def run_quarto(readme: bool, out):
    "The normal nbdev build: `nbdev_docs` (or `nbdev_readme`), which needs Quarto."
    cmd = [_nbdev_cmd('nbdev_readme' if readme else 'nbdev_docs')]
    print('quarto found: running', ' '.join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0 and out and not readme:
        cfg = get_cfg()
        src, dst = Path(cfg.doc_path).resolve(), Path(out).resolve()
        if src != dst:
            if dst.exists(): shutil.rmtree(dst)
            shutil.copytree(src, dst)
    return rc


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='build_docs.py', description=__doc__.split('\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='\n'.join(__doc__.split('\n')[1:]))
    ap.add_argument('--offline', action='store_true', help='build without Quarto even where it is installed')
    ap.add_argument('--out', type=Path, help='output folder of the site (default: doc_path in settings.ini, _docs)')
    ap.add_argument('--nbs', type=Path, help='notebooks folder (default: nbs_path in settings.ini, nbs); implies --offline')
    ap.add_argument('--readme', nargs='?', const=True, metavar='PATH',
                    help='write README.md (or PATH) from the index notebook instead of building the site')
    ap.add_argument('--check', action='store_true', help='with --readme: write nothing, exit 1 if the README is stale')
    ap.add_argument('--quiet', action='store_true', help='print only notes and problems')
    args = ap.parse_args(argv)
    if args.check and not args.readme: ap.error('--check goes with --readme')
    here = Path.cwd()
    absp = lambda p: None if p is None else (here / p).resolve()
    out, nbs_arg = absp(args.out), absp(args.nbs)
    readme = None if args.readme is None else ROOT / 'README.md' if args.readme is True else absp(args.readme)
    os.chdir(ROOT)
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    cfg = get_cfg()
    nbs = nbs_arg or cfg.nbs_path.resolve()
    if not nbs.is_dir(): ap.error(f'--nbs: no such folder: {nbs}')
    if shutil.which('quarto') and not (args.offline or args.check or nbs_arg or args.readme not in (None, True)):
        return run_quarto(bool(readme), out)

    report = Report()
    if readme:
        nb_path = nbs / cfg.get('readme_nb', 'index.ipynb')
        if not nb_path.exists(): ap.error(f'no {nb_path} to make the README from')
        text, images = render_readme(nb_path, report)
        if text is not None:
            if args.check:
                old = readme.read_text(encoding='utf-8') if readme.exists() else ''
                if old != text:
                    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                               readme.name, f'{readme.name} from {nb_path.name}'))
                    report.problem(f'{readme} is not what {nb_path.name} makes: run python tools/build_docs.py --readme')
                for name in images:
                    if not (readme.parent / name).exists(): report.problem(f'README image {name} is missing')
            else:
                readme.parent.mkdir(parents=True, exist_ok=True)
                tmp = readme.with_name(f'.{readme.name}.tmp')
                tmp.write_text(text, encoding='utf-8')
                os.replace(tmp, readme)
                for name, data in images.items():
                    (readme.parent / name).parent.mkdir(parents=True, exist_ok=True)
                    (readme.parent / name).write_bytes(data)
                if not args.quiet: print(f'wrote {readme} from {nb_path}' + (f' and {len(images)} image(s)' if images else ''))
    else:
        out = out or Path(cfg.doc_path).resolve()
        try: rows = build_offline(nbs, out, report)
        except OutDirError as e:
            print(f'build_docs.py: error: {e}', file=sys.stderr)
            return 2
        if not args.quiet:
            print(f'{"page":<22}{"notebook":<24}{"images":>7}{"tables":>7}{"api":>5}{"KiB":>7}')
            for r in rows: print(f'{r["page"]:<22}{r["notebook"]:<24}{r["images"]:>7}{r["tables"]:>7}{r["api"]:>5}{r["kb"]:>7}')
            print(f'built {len(rows)} pages into {out} (offline: nbdev processors + nbconvert, nothing executed); '
                  f'open {out / "index.html"}')
    for n in report.notes: print('note:', n, file=sys.stderr)
    for p in report.problems: print('PROBLEM:', p, file=sys.stderr)
    return 1 if report.problems else 0


if __name__ == '__main__':
    sys.exit(main())
