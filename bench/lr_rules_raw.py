"""Offline screening of LR-suggestion rules that also use the raw losses of the range test (issue 16, item 1).

`lr_suggest.py` chose `fall 0.8` on the smoothed curve; its worst case, 0.919 of the grid's best, misses the
target of 0.97. Could the per-batch losses, which show a blow-up before the smoothed curve does, close the gap?
This scores six families of rules (114 candidates) on the 11 scenarios' stored sweeps and grids
(`results/lr_suggest.json`), exactly as `lr_suggest.py --explore` scores candidates offline (its own
`offline_ratios` / `grid_acc`: the grid's mean accuracy, interpolated in log rate at each seed's suggestion, over
the grid's best), with a leave-one-scenario-out check of each family, and the multipliers of `fall 0.8` that
would reach 0.97 in each scenario. No training; a few seconds:

    python bench/lr_rules_raw.py
"""
import json, math, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import lr_suggest as L          # only its pure functions are used here

RES = json.load(open(Path(__file__).resolve().parent/'results'/'lr_suggest.json'))
NAMES = list(L.SCENARIOS)       # the 11 of the choice; the EXTRA scenario is left out, as there
CUT = L.NUM_IT // 10            # lr_find hands rules the curve less its first tenth

# ------------------------------------------------------------------ curve features (pure)
def _arr(lrs, losses, raw):
    lrs, losses, raw = (np.asarray(x, dtype=float) for x in (lrs, losses, raw))
    n = len(lrs)
    for x in (losses, raw):
        if not np.isfinite(x).all(): n = min(n, int(np.argmin(np.isfinite(x))))
    return lrs[:n], losses[:n], raw[:n]

def fall(lrs, losses, raw, p=0.8):
    "The current rule: first rate where the smoothed loss has done p of its fall (curve less its first tenth)."
    lrs, losses, _ = _arr(lrs, losses, raw)
    return L.fall_rate(lrs[CUT:], losses[CUT:], p)

def spike_idx(raw, k, start=CUT):
    "Index of the first raw loss above k x the running minimum of the raw losses since `start` (blow-up onset)."
    m = np.inf
    for i in range(start, len(raw)):
        if raw[i] > k*m: return i
        m = min(m, raw[i])
    return len(raw) - 1          # never spiked (or diverged at the next point): the end of the sweep

def spike(lrs, losses, raw, k=2.0):
    lrs, _, raw = _arr(lrs, losses, raw)
    return float(lrs[spike_idx(raw, k)])

def fall_to_spike(lrs, losses, raw, p=0.8, k=2.0):
    "fall p on the smoothed curve cut at the raw spike (the turning point taken no later than the raw blow-up)."
    lrs, losses, raw = _arr(lrs, losses, raw)
    j = spike_idx(raw, k)
    return L.fall_rate(lrs[CUT:j + 1], losses[CUT:j + 1], p) if j > CUT else float(lrs[j])

# ------------------------------------------------------------------ families: name -> {label: rule(lrs, losses, raw)}
P = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
K = (1.5, 2, 3)
D = (1, 1.5, 2, 3, 4, 6)
C = (1, 1.25, 1.5, 2, 2.5, 3)
FAMILIES = {
    'A fall(p)  [baseline, smoothed only]':
        {f'p={p}': (lambda p: lambda a, b, c: fall(a, b, c, p))(p) for p in P},
    'B spike(k)/d':
        {f'k={k} d={d}': (lambda k, d: lambda a, b, c: spike(a, b, c, k)/d)(k, d) for k in K for d in D},
    'C min(c*fall0.8, spike1.5/d)':
        {f'c={c} d={d}': (lambda c, d: lambda a, b, e: min(c*fall(a, b, e, 0.8), spike(a, b, e, 1.5)/d))(c, d)
         for c in C for d in D},
    'D min(fall(p), spike(k))':
        {f'p={p} k={k}': (lambda p, k: lambda a, b, c: min(fall(a, b, c, p), spike(a, b, c, k)))(p, k) for p in P for k in K},
    'E gmean(fall0.8, spike(k))*c':
        {f'k={k} c={c}': (lambda k, c: lambda a, b, e: c*math.sqrt(fall(a, b, e, 0.8)*spike(a, b, e, k)))(k, c)
         for k in K for c in (0.3, 0.4, 0.5, 0.6, 0.8, 1.0)},
    'F fall(p) on smoothed cut at raw spike(k)':
        {f'p={p} k={k}': (lambda p, k: lambda a, b, c: fall_to_spike(a, b, c, p, k))(p, k) for p in P for k in K},
}

def score(f, names=NAMES):
    out = []
    for n in names:
        r = RES[n]
        accs = [L.grid_acc(r, f(d['lr_find']['lrs'], d['lr_find']['losses'], d['lr_find']['raw']))
                for d in (r['seeds'][str(s)] for s in range(r['n_seeds']))]
        out.append(float(np.mean(accs))/r['grid_best'])
    return out

def key(row): return (min(row), float(np.mean(row)))

def main():
    # 0. check: this scoring reproduces lr_suggest.py's own offline numbers for fall 0.8
    mine, theirs = score(FAMILIES['A fall(p)  [baseline, smoothed only]']['p=0.8']), L.offline_ratios(RES, NAMES, L.OFFLINE['fall 0.8'])
    assert np.allclose(mine, theirs, atol=1e-12), (mine, theirs)
    print(f"check fall 0.8 offline: worst {min(mine):.3f} ({NAMES[int(np.argmin(mine))]}), mean {np.mean(mine):.3f}; "
          f"sample-whole-96-b16 {mine[NAMES.index('sample-whole-96-b16')]:.3f}\n")
    total, best = 0, {}
    print("| family | n | best params | worst | mean | LOO held-out worst (mean) | LOO picks |")
    print("|---|---|---|---|---|---|---|")
    for fam, cands in FAMILIES.items():
        rows = {c: score(f) for c, f in cands.items()}
        total += len(rows)
        b = max(rows, key=lambda c: key(rows[c]))
        held, picks = [], []
        for i in range(len(NAMES)):
            pick = max(rows, key=lambda c: key([x for j, x in enumerate(rows[c]) if j != i]))
            held.append(rows[pick][i]); picks.append(pick)
        wi = int(np.argmin(held))
        print(f"| {fam} | {len(rows)} | {b} | {min(rows[b]):.3f} | {np.mean(rows[b]):.3f} | "
              f"{min(held):.3f} ({np.mean(held):.3f}), at {NAMES[wi]} ({picks[wi]}) | {len(set(picks))} distinct |")
        best[fam] = (b, rows[b])
    print(f"\n{total} candidates in all.\n")
    print("| scenario | " + " | ".join(f"{fam.split()[0]}: {b}" for fam, (b, _) in best.items()) + " |")
    print("|---|" + "---|"*len(best))
    for i, n in enumerate(NAMES):
        print(f"| {n} | " + " | ".join(f"{row[i]:.3f}" for _, row in best.values()) + " |")
    # how many scenarios would need what: the factor on fall0.8 / on spike(2) that reaches 0.97 there
    print("\nPer scenario, multipliers m (log-spaced 0.01..20) for which m*fall0.8 / m*spike(2) reach >= 0.97:")
    ms = np.exp(np.linspace(np.log(0.01), np.log(20), 500))
    for i, n in enumerate(NAMES):
        line = []
        for nm, g in (('fall0.8', lambda a, b, c: fall(a, b, c, 0.8)), ('spike2', lambda a, b, c: spike(a, b, c, 2))):
            okm = [m for m in ms if score(lambda a, b, c: m*g(a, b, c), [n])[0] >= 0.97]
            line.append(f"{nm} x[{min(okm):.2f}, {max(okm):.2f}]" if okm else f"{nm} none")
        print(f"  {n:26} " + "; ".join(line))


def bound():
    "Upper bound for any rule min(fall(p), cap) (a cap only lowers): the two `whole` scenarios against each other."
    print("\nfall(p) alone on the two whole scenarios (a cap from the raw losses can only lower these):")
    for p in np.round(np.arange(0.80, 0.905, 0.01), 2):
        sw, pw = score(lambda a, b, c: fall(a, b, c, p), ['sample-whole-96-b16', 'p10-whole-96-b16'])
        print(f"  p={p:.2f}: sample-whole-96-b16 {sw:.3f}, p10-whole-96-b16 {pw:.3f}")

if __name__ == '__main__':
    main(); bound()
