"""How much time `flower_tl.lookahead.Lookahead` adds to its inner optimizer's step.

A ResNet-50-sized parameter set (torchvision `resnet50(weights=None)`: 25.6M parameters in 161 tensors) gets
fixed random gradients, and the inner optimizer alone is timed against `Lookahead` around the same inner
optimizer (a separate copy of the parameters each), step by step. Only `optimizer.step()` is timed. The
contenders run interleaved in one process, a cycle of `k` steps each per round, in an order that rotates from
round to round, after one warm-up round; every figure is a median over the rounds.

Reported per inner optimizer (SGD with momentum, AdamW):
  amortised   median time of a cycle of k Lookahead steps / median time of k inner steps (the cost per step)
  sync step   median time of the k-th Lookahead step (the one that syncs) / median inner step
  sync extra  median k-th Lookahead step - median inner step, in milliseconds (the cost of the sync itself)
  other steps median time of the other k-1 Lookahead steps / median inner step (should be ~1)
for the sync done with torch._foreach_lerp_/_foreach_copy_ (the default) and with a per-tensor loop.

Run from the repository root:
    .venv/bin/python bench/bench_lookahead.py                 # CPU, 1 thread, 15 rounds, k=5
    .venv/bin/python bench/bench_lookahead.py --threads 2 --rounds 25 --json runs/bench_lookahead.json
    .venv/bin/python bench/bench_lookahead.py --device cuda   # on a GPU machine
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flower_tl.lookahead import Lookahead

INNERS = {'sgd': lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.9, weight_decay=1e-4),
          'adamw': lambda ps: torch.optim.AdamW(ps, lr=1e-4)}


def resnet50_shapes():
    "Shapes of the parameters of torchvision's ResNet-50 (built without weights: nothing is downloaded)."
    from torchvision.models import resnet50
    return [p.shape for p in resnet50(weights=None).parameters()]


def make_params(shapes, device, seed=0):
    "Fresh parameters of `shapes` with fixed random gradients (the same values for the same seed)."
    g = torch.Generator().manual_seed(seed)
    ps = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, generator=g)*0.02).to(device))
        p.grad = (torch.randn(s, generator=g)*1e-3).to(device)
        ps.append(p)
    return ps


def timed_steps(opt, n, device):
    "Wall time of each of `n` calls to `opt.step()`, in seconds."
    out = []
    for _ in range(n):
        if device.type == 'cuda': torch.cuda.synchronize(device)
        t = time.perf_counter()
        opt.step()
        if device.type == 'cuda': torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t)
    return out


def bench_inner(name, shapes, k, rounds, device):
    "Interleaved timings of the inner optimizer alone and of Lookahead around it (foreach sync and loop sync)."
    contenders = {}
    for cname, wrap in (('inner', None), ('lookahead', True), ('lookahead-loop', False)):
        opt = INNERS[name](make_params(shapes, device))
        contenders[cname] = opt if wrap is None else Lookahead(opt, alpha=0.5, k=k, foreach=wrap)
    times = {c: [] for c in contenders}
    names = list(contenders)
    for r in range(rounds + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for c in order:
            ts = timed_steps(contenders[c], k, device)
            if r > 0: times[c].append(ts)   # round 0 warms up (state buffers are allocated on the first step)
    med = statistics.median
    base_cycle = med(sum(ts) for ts in times['inner'])
    base_step = med(t for ts in times['inner'] for t in ts)
    res = {'inner': name, 'inner_step_ms': base_step*1e3}
    for c in ('lookahead', 'lookahead-loop'):
        sync = med(ts[-1] for ts in times[c])
        res[c] = {'amortised_ratio': med(sum(ts) for ts in times[c])/base_cycle,
                  'sync_step_ratio': sync/base_step,
                  'sync_extra_ms': (sync - base_step)*1e3,
                  'other_steps_ratio': med(t for ts in times[c] for t in ts[:-1])/base_step}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=15, help='timed rounds (one cycle of k steps per contender each)')
    ap.add_argument('--k', type=int, default=5, help="Lookahead's k (default 5, as in flower_tl's recipe)")
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    ap.add_argument('--inner', nargs='+', choices=sorted(INNERS), default=['sgd', 'adamw'])
    ap.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    ap.add_argument('--json', type=Path, help='also write the results to this JSON file')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    shapes = resnet50_shapes()
    n = sum(s.numel() for s in shapes)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s); "
          f"{n/1e6:.1f}M parameters in {len(shapes)} tensors; k={a.k}, {a.rounds} rounds")
    results = []
    for name in a.inner:
        r = bench_inner(name, shapes, a.k, a.rounds, device)
        results.append(r)
        print(f"\n{name}: inner step {r['inner_step_ms']:.1f} ms (median)")
        print(f"  {'sync':<15}{'amortised':>10}{'sync step':>11}{'sync extra':>12}{'other steps':>13}")
        for c in ('lookahead', 'lookahead-loop'):
            x = r[c]
            print(f"  {('foreach' if c == 'lookahead' else 'loop'):<15}{x['amortised_ratio']:>9.3f}x"
                  f"{x['sync_step_ratio']:>10.2f}x{x['sync_extra_ms']:>9.1f} ms{x['other_steps_ratio']:>12.3f}x")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {'torch': torch.__version__, 'device': str(device), 'threads': torch.get_num_threads(),
                'params': n, 'tensors': len(shapes), 'k': a.k, 'rounds': a.rounds}
        tmp = a.json.with_name(a.json.name + '.tmp')
        tmp.write_text(json.dumps({'meta': meta, 'results': results}, indent=1))
        os.replace(tmp, a.json)
    return results


if __name__ == '__main__':
    main()
