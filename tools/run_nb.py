"""Run notebooks top to bottom and save their outputs, with no paths of the machine that ran them.

    .venv/bin/python tools/run_nb.py nbs/00b_data.ipynb [more.ipynb ...] [--flags slow]
    .venv/bin/python tools/run_nb.py --scrub-only nbs/10_tutorial_flowers.ipynb   # outputs of a long run, kept

Each notebook runs as `nbdev_test` runs it (from its own folder, cells flagged `#| slow`/`#| cuda` skipped
unless named in `--flags`), stops at the first error without writing anything, and is then saved with its new
outputs. Absolute paths of this machine in the outputs (the checkout, the temporary folder, the home folder,
the Python environment, the folder named by FLOWERS102_DATA) are written as placeholders: `<repo>`,
`<tmp>`, `~`, `<venv>` and `<flowers102>`, so that committed notebooks and the docs site show no machine's
layout. Run `nbdev_clean` afterwards, as for any edit. `tests/test_docs.py` fails if a path slips through.
"""
import argparse, os, re, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def placeholders() -> list:
    "(absolute path, placeholder) pairs, longest path first, for this machine."
    pairs = {str(ROOT): '<repo>', str(Path(sys.prefix).resolve()): '<venv>', sys.prefix: '<venv>',
             os.path.realpath(tempfile.gettempdir()): '<tmp>', tempfile.gettempdir(): '<tmp>', str(Path.home()): '~'}
    if os.environ.get('FLOWERS102_DATA'):
        data = Path(os.environ['FLOWERS102_DATA']).expanduser()
        pairs[str(data.resolve())] = '<flowers102>'; pairs[str(data)] = '<flowers102>'
    default_data = (ROOT/'../shared/data/flowers102').resolve()
    pairs.setdefault(str(default_data), '<flowers102>')
    return sorted(((k, v) for k, v in pairs.items() if len(k) > 1), key=lambda kv: -len(kv[0]))

def scrub(text:str, pairs:list) -> str:
    "`text` with every absolute path of `pairs` replaced by its placeholder."
    for path, name in pairs:   # a whole path only: '/tmp' in '/tmpdir' stays, and so does '<tmp>/tmpab12'
        text = re.sub(re.escape(path) + r'(?![\w.-])', lambda m: name, text)
    return text

def _scrub_text(v, pairs) -> list:
    "A saved output text (a string or a list of lines) scrubbed, as the list of lines that notebooks store."
    return scrub(''.join(v) if isinstance(v, list) else v, pairs).splitlines(keepends=True)

def _scrub_outputs(cell, pairs):
    for o in cell.get('outputs', []):
        if 'text' in o: o['text'] = _scrub_text(o['text'], pairs)
        for k, v in o.get('data', {}).items():
            if k.startswith('text/') and isinstance(v, (str, list)): o['data'][k] = _scrub_text(v, pairs)
        if 'traceback' in o: o['traceback'] = [scrub(t, pairs) for t in o['traceback']]

def run(fn:Path, flags=()) -> None:
    "Execute notebook `fn` like `nbdev_test` and save it with scrubbed outputs; raise on the first failing cell."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.config import get_config
    skip = set(get_config().tst_flags.split()) - set(flags)
    def no_eval(cell):
        if cell.cell_type != 'code': return True
        d = getattr(cell, 'directives_', {}) or {}
        if d.get('eval:', [''])[0].lower() == 'false': return True
        return bool(skip & d.keys())
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    for cell in nb.cells:
        if cell.cell_type == 'code' and not no_eval(cell): cell['outputs'] = []   # execnb keeps old ones if none come
    shell = CaptureShell(fn)
    os.environ.setdefault('MPLBACKEND', 'Agg')
    with working_directory(fn.parent): shell.run_all(nb, exc_stop=True, preproc=no_eval)
    raw = read_nb(fn)   # write the new outputs into the notebook as it is on disk (directives untouched)
    pairs = placeholders()
    for cell, ran in zip(raw.cells, nb.cells):
        if cell.cell_type != 'code': continue
        if not no_eval(ran):          # skipped cells keep their saved outputs (a slow run's, say), scrubbed too
            cell['outputs'] = ran.get('outputs', []); cell['execution_count'] = ran.get('execution_count')
        _scrub_outputs(cell, pairs)
    write_nb(raw, fn)

def scrub_only(fn:Path) -> None:
    "Write placeholders for this machine's paths in the saved outputs of `fn`, running nothing."
    from execnb.nbio import read_nb, write_nb
    raw, pairs = read_nb(fn), placeholders()
    for cell in raw.cells:
        if cell.cell_type == 'code': _scrub_outputs(cell, pairs)
    write_nb(raw, fn)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+', type=Path)
    p.add_argument('--flags', default='', help="space-separated flags of cells to run too, e.g. 'slow'")
    p.add_argument('--scrub-only', action='store_true',
                   help="run nothing: only write placeholders for this machine's paths in the saved outputs")
    a = p.parse_args()
    for fn in a.notebooks:
        if not fn.is_file(): sys.exit(f"run_nb.py: no such notebook: {fn}")
        if a.scrub_only: scrub_only(fn.resolve()); print(f"scrubbed {fn}"); continue
        print(f"running {fn}", flush=True)
        run(fn.resolve(), a.flags.split())
        print(f"saved {fn}", flush=True)
