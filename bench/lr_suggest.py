"""Which LR-suggestion rule to trust: every rule scored by the accuracy that training at its suggestion reaches.

    python bench/lr_suggest.py                                  # the 11 scenarios, results in /tmp/lr_suggest.json
    python bench/lr_suggest.py --scenarios sample-head-128-b64,p10-head-160-b16
    python bench/lr_suggest.py --list                           # the scenarios
    python bench/lr_suggest.py --report-only --explore          # the tables from the saved results, no training

Method (issue 16, item 1). A *scenario* fixes the data, what trains (the head on a frozen body, the last block,
or the whole network with BatchNorm statistics frozen), the image size, the batch size and an epoch budget. For each:

1. **Grid.** A fresh learner (same seed, same initial weights, same batches) is trained with one-cycle at each top
   rate of a grid (1e-4 .. 1 in half-decades; extended by half-decades while the best sits at an edge; refined by
   a quarter-decade on either side of the best; past a working rate, the rest skipped once two rates in a row ended
   at chance). The holdout accuracy after the last epoch, averaged over the training seeds (`--seeds`, 3; fewer
   where a scenario says so), at the grid's best rate is the best reachable accuracy for that budget.
2. **Range test.** For each seed, one `learn.lr_find(num_it=100)` (1e-7 to 10, flower_tl's own sweep) on a fresh
   learner. Every rule turns that seed's curve into a rate, and a fresh learner of that seed is trained at it: the
   rule's accuracy is the mean over the seeds, so the range test's own noise counts. Runs are cached by the rate
   rounded to 2 significant digits, so the grid and the rules share runs.
3. **Score.** Each rule's accuracy / the grid's best, per scenario; per rule the worst case and the mean. Sweeps
   whose loss never turned up (no rise after its minimum) are listed with each rule's suggestion there, and so are
   suggestions above the rate at the loss's minimum.
4. **Choice.** The default is the rule with the highest worst-case ratio (the target was >= 0.97 everywhere).
   `--explore` prints the offline screening of the candidate families (`OFFLINE`; grid accuracy interpolated at the
   suggestions, not trained) and a leave-one-scenario-out check of choosing a family's parameter here.

Accuracy is always on a holdout cut from the *train* split, never on `valid`: for the bundled sample (the first 16
Oxford training photos of 6 classes; its own `valid/` is Oxford's), up to 40 other Oxford training photos of each of
its classes (180 in all); for `p10`, 10 training photos per class and 10 more per class as the holdout (1020); for
`full`, a seeded 15% of each class (980; the same split as `bench/full_run.py --holdout 0.15`).

The rules are re-implemented here from what their libraries' code does (fastai's `valley`, `slide`, `minimum`,
`steep`, on the curve fastai hands them; flower_tl's `valley`, `min/10`, `steep`, checked equal to flower_tl's own),
plus the candidates designed here (`CANDIDATES`, `OFFLINE`). The chosen one is `suggest_lr`, a pure function
`f(lrs, losses) -> lr` of the curve that `flower_tl.clr.lr_find` hands a custom `suggest=` (first tenth cut off).

Results go to `--out` (JSON) after every training run, so an interrupted run resumes where it stopped; the cached
features and the split folders go to `--work`. Run it under `nice -n 19` on a shared machine; it uses `--threads` (2)
torch threads and no loader workers.
"""
import argparse, itertools, json, math, random, time, warnings
from pathlib import Path

import numpy as np
import torch

from flower_tl import clr

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent/'shared'/'data'/'flowers102'
ARCH = 'efficientnet_lite0'
NUM_IT = 100  # range-test iterations, flower_tl's and fastai's default

# ---------------------------------------------------------------- scenarios
# data: 'sample' (bundled sample), 'p10' (10 photos per class of all 102), 'full' (85% of train);
# stage: 'head' (frozen body, cached pooled features), 'block' (freeze_to(-4): last block + conv_head + head on cached
# inputs), 'whole' (everything; Lite0's BatchNorm statistics stay frozen); after: train the head first, at the grid
# best of that scenario, then this stage with the body at lr/body_div (fine-tuning's stage 2); seeds: fewer training
# seeds than --seeds, where a run costs minutes.
SCENARIOS = {
    'sample-head-128-b64':  dict(data='sample', stage='head',  size=128, bs=64, epochs=5, ls=0.0),  # README example, stage 1
    'sample-head-224-b16':  dict(data='sample', stage='head',  size=224, bs=16, epochs=5, ls=0.1),
    'sample-block-224-b16': dict(data='sample', stage='block', size=224, bs=16, epochs=3, ls=0.1),
    'sample-whole-96-b16':  dict(data='sample', stage='whole', size=96,  bs=16, epochs=2, ls=0.1),
    'sample-whole-128-b64-ft': dict(data='sample', stage='whole', size=128, bs=64, epochs=2, ls=0.0,
                                    after='sample-head-128-b64', body_div=10),  # README example, stage 2
    'p10-head-160-b16':     dict(data='p10', stage='head',  size=160, bs=16, epochs=5, ls=0.1),
    'p10-block-160-b64':    dict(data='p10', stage='block', size=160, bs=64, epochs=3, ls=0.1),
    'p10-head-96-b16':      dict(data='p10', stage='head',  size=96,  bs=16, epochs=5, ls=0.1),
    'p10-whole-96-b16':     dict(data='p10', stage='whole', size=96,  bs=16, epochs=2, ls=0.1, seeds=1),
    'full-head-128-b64':    dict(data='full', stage='head',  size=128, bs=64, epochs=5, ls=0.1),
    'full-block-128-b16':   dict(data='full', stage='block', size=128, bs=16, epochs=3, ls=0.1, seeds=1),
}
EXTRA = {  # defined and runnable with --scenarios, left out of the default run for its CPU time (about 15 min here)
    'p10-whole-96-b64-ft':  dict(data='p10', stage='whole', size=96,  bs=64, epochs=2, ls=0.1, seeds=1,
                                 after='p10-head-96-b16', body_div=10),
    'full-head-224-b32-e20': dict(data='full', stage='head', size=224, bs=32, epochs=20, ls=0.1),  # the CPU recipe's stage 1
}
ALL = {**SCENARIOS, **EXTRA}
GRID = [10**(e/2) for e in range(-8, 1)]  # 1e-4 .. 1 in half-decades


# ---------------------------------------------------------------- the rules
def _curve(lrs, losses):
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    ok = np.isfinite(losses)
    if not ok.all(): n = int(np.argmin(ok)); lrs, losses = lrs[:n], losses[:n]  # up to the first nan
    return lrs, losses

def _longest_fall(losses):
    "`(first, last)`: the span of the longest strictly falling subsequence (the first one that long)."
    n = len(losses)
    run = np.ones(n, dtype=int)
    for i in range(1, n):
        before = run[:i][losses[:i] > losses[i]]
        if len(before): run[i] = before.max() + 1
    last = int(np.argmax(run))
    return last - run[last] + 1, last

def _fastai_cut(lrs, losses, num_it=NUM_IT):
    "fastai's `Learner.lr_find` hands its rules the recorded curve less its first tenth and its last 5 points."
    lrs, losses = _curve(lrs, losses)
    return lrs[num_it//10:-5], losses[num_it//10:-5]

def _ftl_cut(lrs, losses, num_it=NUM_IT):
    "flower_tl's `lr_find` hands its rules the curve less its first tenth (fewer if the sweep stopped early)."
    lrs, losses = _curve(lrs, losses)
    k = min(num_it//10, max(len(lrs) - 3, 0))
    return lrs[k:], losses[k:]

def fastai_valley(lrs, losses):
    """fastai's `valley` as its code computes it: from one before the start of the longest falling stretch, a third
    plus a sixth of its length on, i.e. about halfway (its docs say 'roughly 2/3')."""
    lrs, losses = _fastai_cut(lrs, losses)
    first, last = _longest_fall(losses)
    length = last - (first - 1)
    return float(lrs[(first - 1) + int(length/3) + int(length/3/2)])

def valley_two_thirds(lrs, losses):
    "fastai's `valley` as its docs describe it: two thirds of the way along the longest falling stretch."
    lrs, losses = _fastai_cut(lrs, losses)
    first, last = _longest_fall(losses)
    return float(lrs[first + int(2*(last - first)/3)])

def fastai_slide(lrs, losses, window=15, thresh=0.005):
    """Andrew Chang's interval slide rule as fastai implements it: slide a window of `window` points leftwards from
    the end of the curve while the loss's gradient (per point) at its two ends differs by more than `thresh`; the
    rate at the left end of the last window that still differed."""
    lrs, losses = _fastai_cut(lrs, losses)
    g = np.gradient(losses)
    right, left = len(g) - 1, len(g) - 1 - window
    out = lrs[left]
    while left >= 0 and abs(g[right] - g[left]) > thresh:
        out = lrs[left]; right -= 1; left -= 1
    return float(out)

def fastai_minimum(lrs, losses):
    "fastai's `minimum`: a tenth of the rate at the lowest smoothed loss."
    lrs, losses = _fastai_cut(lrs, losses)
    return float(lrs[np.argmin(losses)]/10)

def fastai_steep(lrs, losses):
    "fastai's `steep`: the rate at the start of the steepest fall between two points (against log rate)."
    lrs, losses = _fastai_cut(lrs, losses)
    slope = np.diff(losses)/np.diff(np.log(lrs))
    return float(lrs[np.argmin(slope)])

def cand_gmean(lrs, losses):
    "Geometric mean of flower_tl's valley and min/10 (on the curve lr_find hands a custom rule)."
    lrs, losses = _ftl_cut(lrs, losses)
    return float(math.sqrt(clr.valley(lrs, losses)*clr.min_div10(lrs, losses)))

def fall_rate(lrs, losses, frac:float=0.8) -> float:
    """The lowest rate, after the curve's highest point before its minimum, at which the smoothed loss has come `frac`
    of the way down from that highest point to the minimum. Never beyond the minimum (where the loss turned); on a
    curve still falling at its end, `frac` of the fall that was seen. The first crossing, not the last: a bump back
    above the mark after it is the loss starting to spike. Pure: `lrs` increasing, `losses` smoothed, as `lr_find`
    hands them to a custom rule; nan for an empty curve; the curve is cut at its first non-finite loss."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    n = len(losses) if np.isfinite(losses).all() else int(np.argmin(np.isfinite(losses)))
    if n == 0: return math.nan
    lrs, losses = lrs[:n], losses[:n]
    low = int(np.argmin(losses))
    high = int(np.argmax(losses[:low + 1]))
    mark = losses[high] - frac*(losses[high] - losses[low])
    return float(lrs[high + int(np.argmax(losses[high:low + 1] <= mark))])

def suggest_lr(lrs, losses) -> float:
    "The chosen default (issue 16, item 1): the rate by which the smoothed loss has done 80% of its fall."
    return fall_rate(lrs, losses, 0.8)

def _on_ftl_curve(f):
    "`f` applied to the curve as flower_tl's lr_find hands it to a rule (its first tenth cut off)."
    return lambda lrs, losses: f(*_ftl_cut(lrs, losses))

RULES = {  # name -> (function, family)
    'fastai valley': (fastai_valley, 'fastai'),
    'valley 2/3': (valley_two_thirds, 'fastai (docs)'),
    'fastai slide': (fastai_slide, 'fastai'),
    'fastai minimum': (fastai_minimum, 'fastai'),
    'fastai steep': (fastai_steep, 'fastai'),
    'ftl valley': (_on_ftl_curve(clr.valley), 'flower_tl'),        # flower_tl's own rules, called as lr_find does
    'ftl min/10': (_on_ftl_curve(clr.min_div10), 'flower_tl'),
    'ftl steep': (_on_ftl_curve(clr.steepest), 'flower_tl'),
    'gmean': (cand_gmean, 'candidate'),
    'fall 0.7': (_on_ftl_curve(lambda a, b: fall_rate(a, b, 0.7)), 'candidate'),
    'fall 0.8': (_on_ftl_curve(suggest_lr), 'candidate'),
}
# Candidates only scored offline (--explore): on the grid's mean accuracy, interpolated in log rate, at each seed's
# suggestion; the way 'fall 0.8' was found. Trained above: the best of them and a neighbour.
def _lr_min(lrs, losses):
    lrs, losses = _ftl_cut(lrs, losses); return float(lrs[int(np.argmin(losses))])
OFFLINE = {**{f'min/{d}': (lambda d: lambda a, b: _lr_min(a, b)/d)(d) for d in (2, 2.5, 3, 4, 5)},
           **{f'fall {p}': (lambda p: _on_ftl_curve(lambda a, b: fall_rate(a, b, p)))(p) for p in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)}}
CANDIDATES = [k for k, (_, fam) in RULES.items() if fam == 'candidate']

def turned(lrs, losses, rise=0.1):
    """Did the sweep see the loss turn up? True when, after its minimum, the smoothed loss climbs back by at least
    `rise` of the fall before the minimum (from the curve's first point); the rate at the minimum is then the turn."""
    lrs, losses = _ftl_cut(lrs, losses)
    i = int(np.argmin(losses))
    fall = losses[0] - losses[i]
    return bool(i < len(losses) - 1 and losses[i:].max() - losses[i] >= rise*max(fall, 1e-12))


# ---------------------------------------------------------------- data folders (symlinks, made once)
def _link(files, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (dst/f.name).exists(): (dst/f.name).symlink_to(Path(f).resolve())

def _done(path): return (path/'.complete').exists()

def make_sample(src:Path, dst:Path, per_class:int=40, seed:int=0) -> Path:
    "The bundled sample's train/ as train; up to `per_class` other Oxford *training* photos per class as the holdout."
    from flower_tl.photos import sample_path
    if _done(dst): return dst
    sp, rng = sample_path(), random.Random(seed)
    taken = {p.name for p in (sp/'train').rglob('*') if p.is_file()} | {p.name for p in (sp/'test').iterdir()}
    for cls in sorted(p.name for p in (sp/'train').iterdir() if p.is_dir()):
        _link(sorted((sp/'train'/cls).iterdir()), dst/'train'/cls)
        rest = sorted(f for f in (src/'train'/cls).iterdir() if f.name not in taken)
        rng.shuffle(rest)
        _link(rest[:per_class], dst/'valid'/cls)
    (dst/'.complete').touch()
    return dst

def make_per_class(src:Path, dst:Path, n:int=10, n_holdout:int=10, seed:int=0) -> Path:
    "`n` seeded training photos per class as train, `n_holdout` other training photos per class as the holdout."
    if _done(dst): return dst
    rng = random.Random(seed)
    for cls in sorted(p.name for p in (src/'train').iterdir() if p.is_dir()):
        files = sorted((src/'train'/cls).iterdir()); rng.shuffle(files)
        _link(files[:n], dst/'train'/cls); _link(files[n:n + n_holdout], dst/'valid'/cls)
    (dst/'.complete').touch()
    return dst

def make_holdout(src:Path, dst:Path, frac:float=0.15, seed:int=0) -> Path:
    "Train less a seeded `frac` of each class, that slice as the holdout: `bench/full_run.py`'s `holdout_split`."
    if _done(dst): return dst
    rng = random.Random(seed)
    for cls in sorted(p.name for p in (src/'train').iterdir() if p.is_dir()):
        files = sorted((src/'train'/cls).iterdir()); rng.shuffle(files)
        k = max(1, round(len(files)*frac))
        _link(files[:k], dst/'valid'/cls); _link(files[k:], dst/'train'/cls)
    (dst/'.complete').touch()
    return dst

def data_folder(kind:str, args) -> Path:
    src, root = Path(args.data), Path(args.work)
    if kind == 'sample': return make_sample(src, root/'sample')
    if kind == 'p10': return make_per_class(src, root/'p10')
    if kind == 'full': return make_holdout(src, root/'full')
    raise ValueError(kind)


# ---------------------------------------------------------------- learners that share one feature cache
class Bench:
    "Builds fresh learners for a scenario; caches of the frozen stages' outputs are computed once per (data, size)."
    def __init__(self, args):
        self.args, self.datas, self.caches = args, {}, {}

    def data(self, sc):
        from flower_tl.data import FlowerData
        from flower_tl.models import arch_info
        key = (sc['data'], sc['size'], sc['bs'])
        if key not in self.datas:
            info = arch_info(ARCH)
            self.datas[key] = FlowerData.from_folder(data_folder(sc['data'], self.args), size=sc['size'],
                                                     mean=info['mean'], std=info['std'], bs=sc['bs'],
                                                     num_workers=0, seed=self.args.seed)
        return self.datas[key]

    def learner(self, sc, seed, state=None, share=True):
        "A fresh learner for `sc`: the same weights (`state`, or ImageNet + a head seeded by `seed`), frozen as `sc` says."
        from torch import nn
        from flower_tl.models import create_model
        from flower_tl.train import Learner
        data = self.data(sc)
        model = create_model(ARCH, data.n_classes, seed=seed)
        if state is not None: model.load_state_dict(state)
        learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(label_smoothing=sc['ls']), seed=seed, progress=False, device='cpu')
        stage = sc['stage']
        if stage == 'head': learn.freeze(bn=True)
        elif stage == 'block': learn.freeze_to(-4, bn=True)
        else: learn.unfreeze()
        if stage != 'whole' and share: self._share(learn, sc)
        return learn

    def _share(self, learn, sc):
        """Give `learn` the cached inputs of the frozen stages, computed once per data and size (kept on disk) by a
        learner of the base seed: the cached images are the data, the same for every seed; the seeds vary the head's
        initial weights, the batches, the range test's batches."""
        key = (sc['data'], sc['size'])
        cut = _n_stages(learn) - 4  # the input of blocks6_0: the head's inputs derive from it cheaply
        f = Path(self.args.work)/f"cache-{sc['data']}-{sc['size']}-s{self.args.seed}.pt"
        if key not in self.caches:
            if f.exists(): self.caches[key] = torch.load(f)
            else:
                t = time.perf_counter()
                donor = self.learner(dict(sc, stage='head'), self.args.seed, share=False)
                donor.cache_inputs(cut)
                train, valid = _cache_entries(donor)[cut]
                self.caches[key] = {cut: dict(train=train, valid=valid)}
                torch.save(self.caches[key], f)
                print(f"  features of {key}: {time.perf_counter() - t:.0f} s", flush=True)
        for c, got in self.caches[key].items(): _cache_put(learn, c, got['train'], got['valid'])

    def keep(self, learn, sc):
        "Keep the caches `learn` derived (e.g. the head's inputs from the last block's) for the next learners."
        if sc['stage'] == 'whole': return
        have = self.caches[(sc['data'], sc['size'])]
        for c, (train, valid) in _cache_entries(learn).items():
            if c not in have: have[c] = dict(train=train, valid=valid)

# The learner's feature cache is internal to flower_tl; these adapters know its two layouts: `Learner._caches` (up
# to commit aea26ab, where bench/README.md's results were measured) and `Learner.cache`, a `flower_tl.cache.FeatureCache`
# (the training core of issue 15). A new cache entry is checked by flower_tl itself: its key and the fingerprint of
# the frozen stages must match, or the learner computes its own.
def _n_stages(learn) -> int:
    if hasattr(learn, '_n_stages'): return learn._n_stages()
    from flower_tl.models import n_stages
    return n_stages(learn.model)

def _cache_entries(learn) -> dict:
    "`{cut: (train, valid)}` of the inputs `learn` has cached."
    if hasattr(learn, '_caches'): return {c: (e['train'], e['valid']) for c, e in learn._caches.items()}
    return {c: (e.train, e.valid) for c, e in learn.cache.entries.items()}

def _cache_put(learn, cut, train, valid):
    "Hand `learn` cached inputs of stage `cut` (one view, no clean crop: what `fit` and `lr_find` use by default)."
    if hasattr(learn, '_caches'):
        key = (1, False, learn.data.size, id(learn.data), str(learn.amp_dtype), learn.channels_last)
        learn._caches[cut] = dict(key=key, fp=learn._fingerprint(cut), cut=cut, train=train, valid=valid)
    else:
        from flower_tl.cache import CachedInputs
        fc = learn.cache
        key = (1, False, fc.data.size, id(fc.data), str(fc.amp_dtype), fc.channels_last)
        fc.entries[cut] = CachedInputs(cut, key, fc.fingerprint(cut), train, valid)


# ---------------------------------------------------------------- runs
def rate_key(lr:float) -> str: return f"{lr:.2g}"

def n_seeds(sc, args) -> int: return sc.get('seeds', args.seeds)

def train_once(bench, sc, lr, seed, state=None) -> dict:
    "Train a fresh learner at top rate `lr` for the scenario's budget; the holdout accuracy after the last epoch."
    from flower_tl.loop import LossNotFinite
    learn = bench.learner(sc, seed, state)
    body_lr = lr/sc['body_div'] if sc.get('body_div') else None
    t = time.perf_counter()
    try:
        hist = learn.fit(sc['epochs'], lr, body_lr=body_lr, sched='one_cycle')
        bench.keep(learn, sc)
        out = dict(acc=hist[-1]['val_acc'], val_loss=hist[-1]['val_loss'], trn_loss=hist[-1]['trn_loss'],
                   accs=[h['val_acc'] for h in hist], nan=False)
    except LossNotFinite:
        out = dict(acc=0.0, val_loss=None, trn_loss=None, accs=[], nan=True)
    out['seconds'] = round(time.perf_counter() - t, 1)
    return out

def range_test(bench, sc, seed, state=None) -> dict:
    "flower_tl's range test (1e-7 to 10, 100 iterations) on a fresh learner: the curve and flower_tl's suggestions."
    learn = bench.learner(sc, seed, state)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        f = learn.lr_find(num_it=NUM_IT, body_div=sc.get('body_div'))
    bench.keep(learn, sc)
    lf = dict(lrs=list(map(float, f.lrs)), losses=list(map(float, f.smoothed_losses)), raw=list(map(float, f.losses)),
              stop=f.stop, ftl=dict(f.suggestions), warnings=[str(x.message) for x in w],
              seconds=round(time.perf_counter() - t, 1))
    for key in ('valley', 'min/10', 'steep'):   # the curve is cut as lr_find cuts it: the same suggestions
        assert math.isclose(RULES[f'ftl {key}'][0](lf['lrs'], lf['losses']), lf['ftl'][key], rel_tol=1e-9), key
    return lf

def head_states(bench, res, ft, args, save) -> dict:
    "`{seed: weights}` after the head alone, trained at the grid best of scenario `sc['after']` (run first if needed)."
    sc, name = ALL[ft], ALL[ft]['after']
    hr = run_scenario(bench, res, name, args, save)
    lr = float(hr['grid_best_lr'])
    r = res[ft]
    if r.get('head_lr') not in (None, lr):  # its head was trained at another rate: its runs are stale
        print(f"  {ft}: the head's rate changed from {r['head_lr']} to {lr}; starting it again", flush=True)
        r['seeds'] = {}
    r['head_lr'] = lr
    hsc, out = ALL[name], {}
    for s in range(n_seeds(sc, args)):
        learn = bench.learner(hsc, s)
        learn.fit(hsc['epochs'], lr, sched='one_cycle')
        bench.keep(learn, hsc)
        r['seeds'].setdefault(str(s), dict(runs={}))['head_acc'] = learn.history[-1]['val_acc']
        out[s] = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    return out

def _migrate(r):
    "Results of the first, single-seed version of this script: their runs are seed 0's."
    if 'runs' in r:
        s0 = dict(runs=r.pop('runs'))
        if 'lr_find' in r: s0['lr_find'] = r.pop('lr_find')
        if 'head_acc' in r: s0['head_acc'] = r.pop('head_acc')
        r['seeds'] = {'0': s0}
        for k in ('grid', 'grid_best_lr', 'grid_best', 'edge', 'complete'): r.pop(k, None)
        if r['config'].get('after') and 'head_lr' not in r: r['seeds'] = {}  # head rate unknown: start again

def mean_acc(r, k, seeds) -> float:
    return float(np.mean([r['seeds'][str(s)]['runs'][k]['acc'] for s in range(seeds)]))

def _missing(r, args) -> list:
    "The rules whose suggestion has not been trained in every seed of scenario record `r`."
    out = []
    for rule, (fn, _) in RULES.items():
        if rule in args.skip_rules: continue
        for d in r['seeds'].values():
            lf = d.get('lr_find')
            if lf is None or rate_key(fn(lf['lrs'], lf['losses'])) not in d['runs']: out.append(rule); break
    return out

def run_scenario(bench, res, name, args, save=lambda: None) -> dict:
    "Grid, range tests and the rules' runs of one scenario, for each seed, resuming from whatever `res` holds."
    sc = ALL[name]
    r = res.setdefault(name, dict(config=sc, seeds={}))
    _migrate(r)
    seeds = n_seeds(sc, args)
    if r.get('complete') and r.get('n_seeds') == seeds and not _missing(r, args): return r
    r['config'], r['n_seeds'], r['complete'] = sc, seeds, False
    print(f"== {name}: {sc}, {seeds} seeds", flush=True)
    clock = [time.perf_counter(), time.process_time()]
    def tick():
        "Add the wall and CPU time since the last tick to the scenario's (so an interrupted run keeps its count)."
        now = [time.perf_counter(), time.process_time()]
        r['wall_seconds'] = round(r.get('wall_seconds', 0) + now[0] - clock[0], 1)
        r['cpu_seconds'] = round(r.get('cpu_seconds', 0) + now[1] - clock[1], 1)
        clock[:] = now
        save()
    states = head_states(bench, res, name, args, save) if sc.get('after') else {}
    for s in range(seeds): r['seeds'].setdefault(str(s), dict(runs={}))
    n_classes = bench.data(sc).n_classes

    def acc_at(lr, which=None):
        "Mean holdout accuracy over the seeds (or seed `which` alone) at rate `lr`, training what is missing."
        k = rate_key(lr)
        for s in range(seeds) if which is None else [which]:
            runs = r['seeds'][str(s)]['runs']
            if k not in runs or runs[k].get('skipped'):
                runs[k] = train_once(bench, sc, float(k), s, states.get(s))
                print(f"  seed {s} lr {k:>7}: acc {runs[k]['acc']:.4f}  ({runs[k]['seconds']:.0f} s)", flush=True)
                tick()
        return mean_acc(r, k, seeds) if which is None else r['seeds'][str(which)]['runs'][k]['acc']

    # 1. the grid (mean over seeds): past a working rate, skip the rest once two rates in a row ended at about
    # chance; extend by half-decades while the best is at an edge; refine by a quarter-decade around the best
    grid, chance = list(GRID), 1.5/n_classes
    def sweep(rates):
        low, best = 0, 0.0
        for lr in rates:
            if low >= 2:
                for s in range(seeds): r['seeds'][str(s)]['runs'].setdefault(rate_key(lr), dict(acc=0.0, skipped=True))
                continue
            acc = acc_at(lr)
            low = low + 1 if acc <= chance and best > 2*chance else 0
            best = max(best, acc)
    sweep(grid)
    for _ in range(4):
        accs = [mean_acc(r, rate_key(lr), seeds) for lr in grid]
        i = int(np.argmax(accs))
        if 0 < i < len(grid) - 1: break
        new = grid[0]/10**0.5 if i == 0 else grid[-1]*10**0.5
        grid = [new] + grid if i == 0 else grid + [new]
        sweep([new])
    accs = [mean_acc(r, rate_key(lr), seeds) for lr in grid]
    i = int(np.argmax(accs))
    r['edge'] = bool(i in (0, len(grid) - 1))
    fine = [grid[i]/10**0.25, grid[i]*10**0.25]
    for lr in fine: acc_at(lr)
    r['grid'] = sorted({rate_key(lr) for lr in grid + fine}, key=float)
    gb = max(r['grid'], key=lambda k: mean_acc(r, k, seeds))  # the lowest rate among ties
    r['grid_best_lr'], r['grid_best'] = gb, mean_acc(r, gb, seeds)
    save()

    # 2. one range test per seed, each on a fresh learner; 3. every rule's suggestion, trained with that seed
    for s in range(seeds):
        d = r['seeds'][str(s)]
        if 'lr_find' not in d: d['lr_find'] = range_test(bench, sc, s, states.get(s)); tick()
        for rule, (fn, _) in RULES.items():
            if rule not in args.skip_rules: acc_at(fn(d['lr_find']['lrs'], d['lr_find']['losses']), s)
    r['n_valid'] = len(bench.data(sc).valid_ds)
    r['complete'] = True
    tick()
    return r


# ---------------------------------------------------------------- report
def _ready(res, names): return [n for n in names if n in res and 'grid_best' in res[n] and res[n].get('seeds')]

def rule_score(r, rule):
    "`(suggestions, mean accuracy or None, ratio or None)` of `rule` in scenario record `r`, over its seeds."
    fn, lrs, accs = RULES[rule][0], [], []
    for s in range(r['n_seeds']):
        d = r['seeds'][str(s)]
        if 'lr_find' not in d: return lrs, None, None
        lr = fn(d['lr_find']['lrs'], d['lr_find']['losses'])
        lrs.append(lr)
        run = d['runs'].get(rate_key(lr))
        if run is None or run.get('skipped'): return lrs, None, None
        accs.append(run['acc'])
    acc = float(np.mean(accs))
    return lrs, acc, acc/r['grid_best']

def _gm(xs): return float(np.exp(np.mean(np.log(xs))))

def summary(res, names, rules) -> dict:
    "`{rule: (worst ratio, mean ratio, n scenarios scored)}`."
    out = {}
    for rule in rules:
        ratios = [rule_score(res[n], rule)[2] for n in _ready(res, names)]
        ratios = [x for x in ratios if x is not None]
        out[rule] = (min(ratios, default=math.nan), float(np.mean(ratios)) if ratios else math.nan, len(ratios))
    return out

def sweep_info(r) -> tuple:
    "`(seeds whose loss turned up, seeds whose sweep diverged)`."
    lfs = [r['seeds'][str(s)]['lr_find'] for s in range(r['n_seeds']) if 'lr_find' in r['seeds'][str(s)]]
    return sum(turned(lf['lrs'], lf['losses']) for lf in lfs), sum(lf['stop'] != 'done' for lf in lfs), len(lfs)

def report(res, names, rules) -> str:
    names = _ready(res, names)
    L = ["| scenario | holdout | grid best (rate) | turned | " + " | ".join(rules) + " |",
         "|---|---|---|---|" + "---|"*len(rules)]
    for n in names:
        r = res[n]
        t, d, k = sweep_info(r)
        cells = []
        for rule in rules:
            lrs, acc, ratio = rule_score(r, rule)
            cells.append('—' if ratio is None else f"{ratio:.3f} ({_gm(lrs):.1e})")
        edge = ', edge' if r.get('edge') else ''
        L.append(f"| {n} | {r.get('n_valid', '')} | {r['grid_best']:.3f} ({float(r['grid_best_lr']):.1e}{edge}) | "
                 f"{t}/{k} | " + " | ".join(cells) + " |")
    sm = summary(res, names, rules)
    L.append("| **worst** | | | | " + " | ".join(f"**{sm[r][0]:.3f}**" for r in rules) + " |")
    L.append("| **mean** | | | | " + " | ".join(f"{sm[r][1]:.3f}" for r in rules) + " |")
    return "\n".join(L)

def grid_table(res, names) -> str:
    names = [n for n in _ready(res, names) if 'grid' in res[n]]
    keys = sorted({k for n in names for k in res[n]['grid']}, key=float)
    L = ["| scenario | " + " | ".join(f"{float(k):.2g}" for k in keys) + " |", "|---|" + "---|"*len(keys)]
    for n in names:
        r = res[n]
        def cell(k):
            if k not in r['grid']: return ''
            if any(r['seeds'][str(s)]['runs'][k].get('skipped') for s in range(r['n_seeds'])): return 'skip'
            return f"{mean_acc(r, k, r['n_seeds']):.3f}"
        L.append(f"| {n} | " + " | ".join(cell(k) for k in keys) + " |")
    return "\n".join(L)

def unturned_table(res, names, rules) -> str:
    "The sweeps whose loss never turned up, and what each rule suggested there (the sweep ended at `lrs[-1]`)."
    L = []
    for n in _ready(res, names):
        r = res[n]
        for s in range(r['n_seeds']):
            lf = r['seeds'][str(s)].get('lr_find')
            if lf is None or turned(lf['lrs'], lf['losses']): continue
            sug = ", ".join(f"{rule} {RULES[rule][0](lf['lrs'], lf['losses']):.2g}" for rule in rules)
            L.append(f"- {n}, seed {s}: stop '{lf['stop']}' at {lf['lrs'][-1]:.2g}; {sug}")
    return "\n".join(L) or "- none"

def beyond_turn(res, names, rules) -> str:
    "Per rule, the sweeps in which it suggested a rate above the rate at the loss's minimum (where it turned)."
    L = []
    for rule in rules:
        bad = []
        for n in _ready(res, names):
            r = res[n]
            for s in range(r['n_seeds']):
                lf = r['seeds'][str(s)].get('lr_find')
                if lf is None: continue
                lrs, ls = _ftl_cut(lf['lrs'], lf['losses'])
                if RULES[rule][0](lf['lrs'], lf['losses']) > lrs[int(np.argmin(ls))]*(1 + 1e-9): bad.append(f"{n}/{s}")
        L.append(f"- {rule}: {', '.join(bad) if bad else 'never'}")
    return "\n".join(L)


def grid_acc(r, lr:float) -> float:
    "The grid's mean accuracy in scenario record `r`, interpolated in log rate at `lr` (flat beyond the grid's ends)."
    keys = sorted(r['grid'], key=float)
    return float(np.interp(math.log10(lr), np.log10([float(k) for k in keys]), [mean_acc(r, k, r['n_seeds']) for k in keys]))

def offline_ratios(res, names, f) -> list:
    "Per scenario: candidate `f`'s suggestion per seed, scored by the grid's mean accuracy interpolated in log rate."
    out = []
    for n in names:
        r = res[n]
        accs = [grid_acc(r, f(d['lr_find']['lrs'], d['lr_find']['losses']))
                for d in (r['seeds'][str(s)] for s in range(r['n_seeds']))]
        out.append(float(np.mean(accs))/r['grid_best'])
    return out

def explore_table(res, names, cands:dict) -> str:
    """Offline scores (not trained) / the grid's best, the worst case and the mean over the scenarios; then, for the
    families with a parameter, leave-one-scenario-out: the parameter chosen by the worst case on the other scenarios,
    scored on the one left out (how much choosing it on these scenarios flatters it)."""
    names = _ready(res, names)
    rows = {c: offline_ratios(res, names, f) for c, f in cands.items()}
    L = ["| candidate | " + " | ".join(names) + " | worst | mean |", "|---|" + "---|"*(len(names) + 2)]
    for c, row in rows.items():
        L.append(f"| {c} | " + " | ".join(f"{x:.3f}" for x in row) + f" | **{min(row):.3f}** | {np.mean(row):.3f} |")
    for fam in ('fall ', 'min/'):
        members = [c for c in rows if c.startswith(fam)]
        held = []
        for i, n in enumerate(names):
            pick = max(members, key=lambda c: (min(x for j, x in enumerate(rows[c]) if j != i),
                                               np.mean([x for j, x in enumerate(rows[c]) if j != i])))
            held.append((n, pick, rows[pick][i]))
        L.append(f"\nLeave one scenario out, family '{fam}...': " + "; ".join(f"{n}: {c} -> {x:.3f}" for n, c, x in held)
                 + f". Worst held-out {min(x for *_, x in held):.3f}, mean {np.mean([x for *_, x in held]):.3f}.")
    return "\n".join(L)


def averaged_table(res, names, fracs=(0.7, 0.75, 0.8, 0.85, 0.9)) -> str:
    """Would averaging several range tests help? `fall` on the mean of k seeds' smoothed curves (every combination of k
    of a scenario's seeds, a stand-in for k sweeps of one run), scored offline as in `explore_table`. Scenarios with
    one seed are left out."""
    names = [n for n in _ready(res, names) if res[n]['n_seeds'] > 1]
    L = ["| fall | curves averaged | " + " | ".join(names) + " | worst | mean |", "|---|---|" + "---|"*(len(names) + 2)]
    for frac in fracs:
        for k in (1, 2, 3):
            row = []
            for n in names:
                r, accs = res[n], []
                for combo in itertools.combinations(range(r['n_seeds']), k):
                    curves = [r['seeds'][str(s)]['lr_find'] for s in combo]
                    m = min(len(c['losses']) for c in curves)
                    lrs, losses = curves[0]['lrs'][:m], np.mean([c['losses'][:m] for c in curves], axis=0)
                    accs.append(grid_acc(r, fall_rate(*_ftl_cut(lrs, losses), frac)))
                row.append(float(np.mean(accs))/r['grid_best'])
            L.append(f"| {frac} | {k} | " + " | ".join(f"{x:.3f}" for x in row) + f" | **{min(row):.3f}** | {np.mean(row):.3f} |")
    return "\n".join(L)


# ---------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--scenarios', default=','.join(SCENARIOS), help="comma-separated scenario names (default: all but EXTRA; see --list)")
    p.add_argument('--out', type=Path, default=Path('/tmp/lr_suggest.json'), help="results JSON, read to resume (default: %(default)s)")
    p.add_argument('--data', default=str(DEFAULT_DATA), help="Oxford 102 folder with train/ (default: %(default)s); valid/ is never read")
    p.add_argument('--work', default='/tmp/lr_suggest', help="folder for the split folders and feature caches (default: %(default)s)")
    p.add_argument('--seed', type=int, default=0, help="seed of the splits and of the feature caches (default: %(default)s)")
    p.add_argument('--seeds', type=int, default=3, help="training seeds 0..N-1 per scenario unless it says (default: %(default)s)")
    p.add_argument('--threads', type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument('--skip-rules', default='', help="comma-separated rules not to train at (they show as —)")
    p.add_argument('--list', action='store_true', help="list the scenarios and stop")
    p.add_argument('--report-only', action='store_true', help="print the tables from --out, train nothing")
    p.add_argument('--explore', action='store_true', help="also print the offline (interpolated) scores of OFFLINE "
                   "and of the trained rules: how the candidates were screened")
    args = p.parse_args(argv)
    args.skip_rules = {s for s in args.skip_rules.split(',') if s}
    names = [s for s in args.scenarios.split(',') if s]
    bad = [n for n in names if n not in ALL]
    if bad: p.error(f"unknown scenarios {bad}; known: {', '.join(ALL)}")
    if args.list:
        for n, sc in ALL.items(): print(f"{n:26} {sc}" + ('  (extra: not in the default run)' if n in EXTRA else ''))
        return
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    save = lambda: args.out.write_text(json.dumps(res, indent=1))
    if not args.report_only:
        torch.set_num_threads(args.threads)
        Path(args.work).mkdir(parents=True, exist_ok=True)
        bench = Bench(args)
        for n in names: run_scenario(bench, res, n, args, save)
    rules = list(RULES)
    print("Mean holdout accuracy over the seeds at each grid rate:\n"); print(grid_table(res, names)); print()
    print("Each rule: mean accuracy at its suggestions / the grid's best (geometric mean of its suggestions):\n")
    print(report(res, names, rules)); print()
    print("Sweeps whose loss never turned up:"); print(unturned_table(res, names, rules)); print()
    print("Suggestions above the rate at the loss's minimum:"); print(beyond_turn(res, names, rules)); print()
    if args.explore:
        print("Offline screening (grid accuracy interpolated at each seed's suggestion, not trained):\n")
        print(explore_table(res, names, {**{k: v[0] for k, v in RULES.items()}, **OFFLINE})); print()
        print("The same for `fall` on the mean curve of several range tests:\n"); print(averaged_table(res, names)); print()
    done = _ready(res, names)
    print(f"CPU time: {sum(res[n].get('cpu_seconds', 0) for n in done)/60:.1f} min, wall "
          f"{sum(res[n].get('wall_seconds', 0) for n in done)/60:.1f} min over {len(done)} scenarios")


if __name__ == '__main__': main()
