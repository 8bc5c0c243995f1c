"""Fingerprints of small `flower_tl train` runs, to show that a change of the code leaves training bit for bit as it was.

    python bench/bitwise.py --out before.json            # on the old code (e.g. PYTHONPATH=<a checkout of it>)
    python bench/bitwise.py --out after.json --compare before.json

Each case runs `flower_tl train` on the bundled sample in a fresh process on one thread, then hashes the weights of
`best.pth` and `last.pth` and keeps the history without its timings and the stage-2 rates from `metrics.json`.
`--compare` exits with 1 and names what differs.
"""
import argparse, hashlib, json, os, subprocess, sys, tempfile
from pathlib import Path

CASES = {   # name: the arguments of `flower_tl train` after --data and --out
    'cpu-recipe': ['--arch', 'efficientnet_lite0', '--recipe', 'cpu', '--size', '128', '--freeze-epochs', '3', '--epochs', '6'],
    'whole-network-photos': ['--arch', 'efficientnet_lite0', '--recipe', 'gpu', '--size', '64', '--freeze-epochs', '1',
                             '--epochs', '2', '--bs', '16'],
    'quick-cached': ['--arch', 'efficientnet_lite0', '--recipe', 'quick', '--size', '64', '--freeze-epochs', '3', '--epochs', '2'],
    'lr-find-given-lr2': ['--arch', 'efficientnet_lite0', '--recipe', 'gpu', '--size', '64', '--freeze-epochs', '1', '--epochs', '1',
                          '--lr-find', '--lr2', '0.003', '--bs', '16'],
}

HASH = """
import hashlib, sys, torch
ck = torch.load(sys.argv[1], map_location='cpu', weights_only=True)
h = hashlib.sha256()
for k in sorted(ck['model']): h.update(k.encode()); h.update(ck['model'][k].contiguous().numpy().tobytes())
print(h.hexdigest())
"""

def run_case(name, args, tmp):
    from flower_tl.photos import sample_path
    out = Path(tmp)/name
    env = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg')
    r = subprocess.run([sys.executable, '-m', 'flower_tl', 'train', '--data', str(sample_path()), '--out', str(out),
                        '--device', 'cpu', '--seed', '0', *args], capture_output=True, text=True, env=env)
    if r.returncode: sys.exit(f"{name} failed:\n{r.stdout}\n{r.stderr}")
    m = json.loads((out/'metrics.json').read_text())
    digest = lambda f: subprocess.run([sys.executable, '-c', HASH, str(out/f)], capture_output=True, text=True,
                                      env=env, check=True).stdout.strip()
    keep = ('epoch', 'stage', 'trn_loss', 'val_loss', 'trn_acc', 'val_acc', 'lr', 'size', 'guard')
    return dict(best=digest('best.pth'), last=digest('last.pth'), lr=m['lr'], lr2=m.get('lr2'),
                history=[{k: v for k, v in h.items() if k in keep} for h in m['history']])

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, required=True, help="the fingerprints, as JSON")
    p.add_argument('--compare', type=Path, default=None, help="fingerprints of the old code to compare with")
    p.add_argument('--cases', nargs='*', default=list(CASES), choices=list(CASES))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = {}
        for n in a.cases:
            got[n] = run_case(n, CASES[n], tmp); print(f"{n}: best {got[n]['best'][:12]}, last {got[n]['last'][:12]}", flush=True)
    a.out.write_text(json.dumps(got, indent=1) + '\n')
    if a.compare:
        old = json.loads(a.compare.read_text())
        bad = [f"{n}.{k}" for n in got for k in got[n] if n in old and old[n].get(k) != got[n][k]]
        print('bit for bit the same' if not bad else f"different: {', '.join(bad)}")
        sys.exit(1 if bad else 0)
