"""The offline docs site in a real browser: `tools/check_docs_browser.py` opens every page in headless Chromium
(images decoded, sidebar complete, no error shown, screenshots taken). Skipped where no Chromium is installed."""
import importlib.util, os, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'check_docs_browser.py'
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')


def _tool(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_page_renders_in_chromium(tmp_path):
    if not any(shutil.which(b) for b in BROWSERS):
        pytest.skip(f'no Chromium/Chrome on the PATH (looked for {", ".join(BROWSERS)})')
    shots = tmp_path / 'shots'
    # no SITE argument: the checker builds the site with `tools/build_docs.py --offline` into a temp folder first
    r = subprocess.run([sys.executable, str(TOOL), '--out', str(shots), '--timeout', '60', '--budget-ms', '5000'],
                       capture_output=True, text=True, cwd=ROOT, timeout=600, env=dict(os.environ, MPLBACKEND='Agg'))
    assert r.returncode == 0, f'browser check failed:\n{r.stdout}\n{r.stderr[-3000:]}'
    pages = [l.split()[0] for l in r.stdout.splitlines() if l.endswith(('  ok', '  FAIL'))]
    assert 'index.html' in pages and len(pages) >= 2, r.stdout
    assert sorted(p.name for p in shots.glob('*.png')) == sorted(p[:-len('.html')].replace('/', '__') + '.png' for p in pages)


def test_consecutive_stream_outputs_are_one_block():
    "Each print() of a cell may be stored as its own stream output; the page shows them as one block, as Jupyter does."
    bd = _tool('build_docs', ROOT / 'tools' / 'build_docs.py')
    outs = bd.norm_outputs([dict(output_type='stream', name='stdout', text='Epoch  loss\n'),
                            dict(output_type='stream', name='stdout', text=['    1  0.5\n']),
                            dict(output_type='stream', name='stderr', text=' 50%|#\r100%|##\n'),
                            dict(output_type='stream', name='stdout', text='done\n')])
    assert [(o['name'], o['text']) for o in outs] == [('stdout', 'Epoch  loss\n    1  0.5\n'), ('stderr', '100%|##\n'),
                                                    ('stdout', 'done\n')]
