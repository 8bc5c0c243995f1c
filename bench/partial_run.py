"""Partial fine-tuning of EfficientNet-Lite0 on cached intermediate activations, on CPU, timed phase by phase.

The frozen prefix of the network (stem .. a chosen block) runs ONCE per view of every image; its output is cached
(float16). Then only the suffix (the last blocks, `conv_head`, `bn2`, the classifier; BatchNorm in eval mode) trains
on the cached activations for several epochs, which costs a fraction of a full forward+backward per image.

    python bench/partial_run.py                          # train on ../shared/data/flowers102/train, report on valid
    python bench/partial_run.py --holdout 0.15           # choose settings on a held-out 15% of train
    python bench/partial_run.py --cut 15 --views 0 --head-epochs 20 --epochs 6 --lr 0.1 --body-div 2 --json out.json  # the defaults

`--cut` counts blocks in `model.blocks` flattened (lite0 has 1+2+2+3+3+4+1 = 16): 15 trains `blocks[6]` and up,
16 trains `conv_head` and up, 11 trains `blocks[5:]`. `--cache-dir` keeps the cached activations between runs
(keyed by split, view, cut, image list); without it everything is computed in the run, as the timing needs.
`--cache-cut C` caches after C blocks and runs the frozen blocks from C to `--cut` once over the cache, so one
cache serves several cuts. `--ema D` also scores an exponential moving average of the stage-2 weights (decay D a
step); `--clip N` clips stage 2's gradient norm at N; `--soup K` trains stage 2 K times from the same head (seeds
seed .. seed+K-1: other data orders) and scores each run, the mean of their probabilities (an ensemble) and the mean of
their weights (a uniform model soup). Issue 18's holdout table in bench/README.md used these.
"""
import argparse, copy, hashlib, json, math, os, sys, tempfile, time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_run import holdout_split, DEFAULT_DATA  # noqa: E402

from flower_tl.data import FlowerData, ImageList  # noqa: E402
from flower_tl.lookahead import sgd_lookahead  # noqa: E402
from flower_tl.models import arch_info, create_model  # noqa: E402

CL = torch.channels_last


# ---------------------------------------------------------------- model split
def flat_blocks(model:nn.Module) -> list: return [b for stage in model.blocks for b in stage]

def split_model(model:nn.Module, cut:int) -> tuple:
    "`(prefix, suffix)` of a timm EfficientNet: prefix = stem + the first `cut` blocks, suffix = the rest + head."
    flat = flat_blocks(model)
    prefix = nn.Sequential(model.conv_stem, model.bn1, *flat[:cut])
    suffix = nn.Sequential(*flat[cut:], model.conv_head, model.bn2, model.global_pool, model.classifier)
    return prefix, suffix


# ---------------------------------------------------------------- caching
class _Full:
    "Whole image, no crop: resize the short side to `short` (none if None), optionally flip, normalise."
    def __init__(self, short, flip, mean, std):
        t = [v2.PILToTensor()]
        if short: t.append(v2.Resize(short, antialias=True))
        if flip: t.append(v2.RandomHorizontalFlip(1.0))
        self.t = v2.Compose(t + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()])
    def __call__(self, img): return self.t(img)

def view_transform(view:str, data:FlowerData):
    "The transform of a named view: clean, flip (centre crop, flipped), aug<i>, full<short>[flip]."
    if view == 'clean': return data.eval_tfm
    if view == 'flip': return v2.Compose([data.eval_tfm, v2.RandomHorizontalFlip(1.0)])
    if view.startswith('aug'): return data.train_tfm
    if view.startswith('full'):
        rest = view[4:]; flip = rest.endswith('flip'); rest = rest[:-4] if flip else rest
        return _Full(int(rest) if rest else None, flip, data.mean, data.std)
    raise ValueError(view)

@torch.no_grad()
def extract(prefix:nn.Module, files:list, tfm, seed:int=0, bs:int=8, workers:int=0, variable:bool=False):
    """Prefix outputs of `files` through `tfm`: a float16 tensor (n, C, H, W), or a list if `variable` sizes.
    Loading in the main process (workers=0) is faster on 2 cores: loader workers fight the compute threads (3.5x slower)."""
    ds = ImageList(files, [0]*len(files), transform=tfm)
    if variable:  # whole images: batch images of equal size together
        from PIL import Image
        sizes = [Image.open(f).size for f in files]
        order = sorted(range(len(files)), key=lambda i: sizes[i])
        batches, cur = [], []
        for i in order:
            if cur and (sizes[cur[-1]] != sizes[i] or len(cur) == bs): batches.append(cur); cur = []
            cur.append(i)
        if cur: batches.append(cur)
        dl = DataLoader(ds, batch_sampler=batches, num_workers=workers)
        out = [None]*len(files)
        for b, (x, _) in zip(batches, dl):
            y = prefix(x.contiguous(memory_format=CL)).half()
            for i, t in zip(b, y): out[i] = t.contiguous()
        return out
    g = torch.Generator().manual_seed(seed); torch.manual_seed(seed)
    dl = DataLoader(ds, batch_size=bs, num_workers=workers, generator=g)
    return torch.cat([prefix(x.contiguous(memory_format=CL)).half().contiguous() for x, _ in dl])

def _key(files, view, cut, seed):
    h = hashlib.sha1('\n'.join(f"{Path(f).parent.name}/{Path(f).name}" for f in files).encode()).hexdigest()[:10]
    return f"lite0_c{cut}_{view}_s{seed}_{h}"

def cached(prefix, files, view, data, cut, seed, cache_dir=None, log=print):
    "`extract` with an optional on-disk cache; returns (activations, seconds spent computing)."
    f = Path(cache_dir)/(_key(files, view, cut, seed) + '.pt') if cache_dir else None
    if f is not None and f.exists(): return torch.load(f, weights_only=True), 0.0
    t = time.perf_counter()
    vseed = seed*1000 + (int(view[3:]) + 1 if view.startswith('aug') else 0)
    acts = extract(prefix, files, view_transform(view, data), seed=vseed, variable=view.startswith('full'))
    dt = time.perf_counter() - t
    log(f"  cached {view:10s} {len(files)} images in {dt:6.1f}s ({len(files)/dt:.1f} img/s)")
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix('.tmp'); torch.save(acts, tmp); os.replace(tmp, f)
    return acts, dt


@torch.no_grad()
def _through(mod, acts, bs=128):
    "Cached activations passed on through frozen blocks `mod` (float16 kept)."
    if isinstance(acts, list): return [mod(a[None].float().contiguous(memory_format=CL))[0].half() for a in acts]
    return torch.cat([mod(acts[i:i+bs].float().contiguous(memory_format=CL)).half() for i in range(0, len(acts), bs)])


# ---------------------------------------------------------------- training the suffix
def _fmap_flip(x, p, g):
    if p <= 0: return x
    m = torch.rand(len(x), generator=g) < p
    if m.any(): x = x.clone(); x[m] = x[m].flip(-1)
    return x

def pooled(suffix:nn.Module, acts, bs=256) -> torch.Tensor:
    "Head inputs (pooled features) of cached activations, through the suffix less its classifier."
    body = suffix[:-1]; body.eval()
    with torch.no_grad():
        if isinstance(acts, list): return torch.cat([body(a[None].float().contiguous(memory_format=CL)) for a in acts])
        return torch.cat([body(acts[i:i+bs].float().contiguous(memory_format=CL)) for i in range(0, len(acts), bs)])

def train_linear(head:nn.Linear, feats:torch.Tensor, y:torch.Tensor, epochs:int, lr:float, bs:int=64,
                 label_smoothing=0.1, seed=0, wd=1e-4):
    "Train `head` on pooled features (V, n, d): each epoch one random view per image."
    head.requires_grad_(True)
    opt = sgd_lookahead([dict(params=list(head.parameters()), lr=lr)], lr, weight_decay=wd)
    V, n, _ = feats.shape; steps = math.ceil(n/bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs*steps)
    lf = nn.CrossEntropyLoss(label_smoothing=label_smoothing); g = torch.Generator().manual_seed(seed)
    head.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g); view = torch.randint(V, (n,), generator=g)
        for i in range(steps):
            idx = perm[i*bs:(i+1)*bs]
            loss = lf(head(feats[view[idx], idx]), y[idx])
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
    head.eval().requires_grad_(False)
    return head

def train_suffix(suffix:nn.Module, acts:torch.Tensor, y:torch.Tensor, epochs:int, lr:float, body_div:float,
                 bs:int=64, label_smoothing=0.1, fmap_flip=0.5, seed=0, wd=1e-4, pct_start=0.3, log=print,
                 eval_fn=None, ema:float=0.0, clip:float=0.0):
    "Train the suffix (BN in eval mode) on cached activations (V, n, C, H, W), one random view per image an epoch; `(history, EMA model or None)`."
    head = suffix[-1]; hid = {id(p) for p in head.parameters()}
    body = [p for p in suffix.parameters() if id(p) not in hid]
    groups = [dict(params=body, lr=lr/body_div, name='body'), dict(params=list(head.parameters()), lr=lr, name='head')]
    for p in suffix.parameters(): p.requires_grad_(True)
    opt = sgd_lookahead(groups, lr, weight_decay=wd)
    V, n = acts.shape[:2]; steps = math.ceil(n/bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g['lr'] for g in groups], total_steps=epochs*steps,
                                                pct_start=pct_start)
    lf = nn.CrossEntropyLoss(label_smoothing=label_smoothing); g = torch.Generator().manual_seed(seed)
    suffix.eval()  # BatchNorm keeps its ImageNet statistics; there is no dropout in the suffix
    hist = []
    avg = (torch.optim.swa_utils.AveragedModel(suffix, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema))
           if ema else None)   # an exponential moving average of the weights, step by step
    for ep in range(epochs):
        t = time.perf_counter(); tot = cor = 0; ls = 0.0
        perm = torch.randperm(n, generator=g); view = torch.randint(V, (n,), generator=g)
        for i in range(steps):
            idx = perm[i*bs:(i+1)*bs]
            x = _fmap_flip(acts[view[idx], idx].float(), fmap_flip, g).contiguous(memory_format=CL)
            out = suffix(x); loss = lf(out, y[idx])
            opt.zero_grad(set_to_none=True); loss.backward()
            if clip: torch.nn.utils.clip_grad_norm_(suffix.parameters(), clip)
            opt.step(); sched.step()
            if avg is not None: avg.update_parameters(suffix)
            ls += loss.item()*len(idx); cor += (out.argmax(1) == y[idx]).sum().item(); tot += len(idx)
        r = dict(epoch=ep, train_loss=ls/tot, train_acc=cor/tot, seconds=time.perf_counter() - t)
        if eval_fn is not None: r['val_acc'] = eval_fn()
        hist.append(r); log('  ' + ' '.join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    for p in suffix.parameters(): p.requires_grad_(False)
    return hist, avg


@torch.no_grad()
def probs(suffix:nn.Module, acts, bs=128) -> torch.Tensor:
    suffix.eval()
    if isinstance(acts, list): return torch.cat([suffix(a[None].float().contiguous(memory_format=CL)).softmax(1) for a in acts])
    return torch.cat([suffix(acts[i:i+bs].float().contiguous(memory_format=CL)).softmax(1) for i in range(0, len(acts), bs)])

TTA_SETS = {'centre': ('clean',), 'centre+flip': ('clean', 'flip'), 'full': ('full',), 'full+flip': ('full', 'fullflip'),
            'full256': ('full256',), 'full256+flip': ('full256', 'full256flip'),
            'centre+full256 (+flips)': ('clean', 'flip', 'full256', 'full256flip'),
            'centre+full (+flips)': ('clean', 'flip', 'full', 'fullflip')}

def tta_accuracy(p:dict, y:torch.Tensor) -> dict:
    "Accuracy of each TTA set whose views' probabilities are in `p` (view -> probabilities): mean over the views."
    return {name: (sum(p[v] for v in vs).argmax(1) == y).float().mean().item()
            for name, vs in TTA_SETS.items() if all(v in p for v in vs)}

def evaluate(suffix, eval_acts:dict, y:torch.Tensor) -> dict:
    "Accuracy of each TTA set whose views are cached: mean of softmax over the views."
    return tta_accuracy({v: probs(suffix, a) for v, a in eval_acts.items()}, y)


# ---------------------------------------------------------------- the recipe
def run(args) -> dict:
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter(); times = {}
    log = lambda *a: print(*a, flush=True)
    src = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        path = holdout_split(src, args.holdout, args.seed, Path(tmp)/'holdout') if args.holdout else src
        info = arch_info('efficientnet_lite0')
        data = FlowerData.from_folder(path, size=args.size, mean=info['mean'], std=info['std'], bs=args.bs,
                                      num_workers=0, seed=args.seed)
        tr, va = data.dataset('train', None), data.dataset('valid', None)
        ytr, yva = torch.tensor(tr.targets), torch.tensor(va.targets)
        model = create_model('efficientnet_lite0', data.n_classes, pretrained=True, seed=args.seed)
        model.eval().requires_grad_(False).to(memory_format=CL)
        torch.set_flush_denormal(True)
        cache_cut = args.cut if args.cache_cut is None else args.cache_cut
        if cache_cut > args.cut: raise SystemExit("--cache-cut must be <= --cut")
        prefix, _ = split_model(model, cache_cut)
        _, suffix = split_model(model, args.cut)
        mid = nn.Sequential(*flat_blocks(model)[cache_cut:args.cut]).eval()  # frozen blocks run once over the cache
        times['setup'] = time.perf_counter() - t_start
        # 1. cache the prefix's output: clean + augmented views of train, the eval views of valid
        t0 = time.perf_counter()
        train_views = ['clean'] + [f'aug{i}' for i in range(args.views)]
        through = lambda a: a if len(mid) == 0 else _through(mid, a)
        acts = torch.stack([through(cached(prefix, tr.files, v, data, cache_cut, args.seed, args.cache_dir, log)[0])
                            for v in train_views])
        eval_views = sorted({v for s in args.tta for v in TTA_SETS[s]})
        ev = {v: through(cached(prefix, va.files, v, data, cache_cut, args.seed, args.cache_dir, log)[0])
              for v in eval_views}
        times['cache'] = time.perf_counter() - t0
        log(f"cache: {acts.shape[0]} views x {acts.shape[1]} train images {tuple(acts.shape[2:])} "
            f"({acts.numel()*2/2**20:.0f} MiB), {len(eval_views)} eval views, {times['cache']:.0f}s")
        # 2. stage 1: linear head on the pooled features of the cached views (suffix frozen)
        t0 = time.perf_counter()
        if args.head_epochs:
            feats = torch.stack([pooled(suffix, a) for a in acts])
            train_linear(suffix[-1], feats, ytr, args.head_epochs, args.head_lr, seed=args.seed,
                         label_smoothing=args.label_smoothing)
        times['stage1'] = time.perf_counter() - t0
        r1 = evaluate(suffix, {'clean': ev['clean']}, yva)['centre'] if args.head_epochs else None
        if r1 is not None: log(f"stage 1 (linear head, {args.head_epochs} epochs): {r1:.4f} centre crop, {times['stage1']:.0f}s")
        # 3. stage 2: train the suffix on the cached activations
        t0 = time.perf_counter()
        eval_fn = (lambda: evaluate(suffix, {'clean': ev['clean']}, yva)['centre']) if args.eval_every else None
        start = copy.deepcopy(suffix.state_dict()); states, member_probs, members = [], [], {}
        for k in range(args.soup):   # --soup K: K stage-2 runs from the same head, differing only in data order
            if k: suffix.load_state_dict(start)
            hist, avg = train_suffix(suffix, acts, ytr, args.epochs, args.lr, args.body_div, bs=args.bs,
                                label_smoothing=args.label_smoothing, fmap_flip=args.fmap_flip, seed=args.seed + k,
                                pct_start=args.pct_start, log=log, eval_fn=eval_fn, ema=args.ema, clip=args.clip) if args.epochs else ([], None)
            if args.soup > 1:   # each member's probabilities, once: its own scores and the ensemble's come from them
                states.append(copy.deepcopy(suffix.state_dict()))
                member_probs.append({v: probs(suffix, a) for v, a in ev.items()})
                members[f'member {k}'] = tta_accuracy(member_probs[-1], yva); log(f"member {k}: {members[f'member {k}']}")
        times['stage2'] = time.perf_counter() - t0
        # 4. final evaluation on the cached eval views
        t0 = time.perf_counter()
        if args.soup > 1:   # the ensemble (mean of the members' probabilities), then the uniform soup (mean of weights)
            ens = {f'ensemble {k}': v for k, v in
                   tta_accuracy({v: sum(mp[v] for mp in member_probs) for v in ev}, yva).items()}
            suffix.load_state_dict({k: sum(st[k].float() for st in states)/len(states) if st0.is_floating_point() else st0
                                    for k, st0 in states[0].items()})
        accs = evaluate(suffix, ev, yva)
        if args.soup > 1:
            accs = {**{f'soup {k}': v for k, v in accs.items()}, **ens,
                    **{f'{m} {k}': v for m, d in members.items() for k, v in d.items()}}
        if avg is not None:   # the averaged weights, scored the same way
            accs.update({f'ema {k}': v for k, v in evaluate(avg.module, ev, yva).items()})
        times['eval'] = time.perf_counter() - t0
    times['total'] = time.perf_counter() - t_start
    out = dict(data=str(src), split='holdout %.2f of train' % args.holdout if args.holdout else 'valid',
               n_train=len(tr), n_valid=len(va), cut=args.cut, cache_cut=cache_cut, views=args.views, epochs=args.epochs, lr=args.lr,
               body_div=args.body_div, head_epochs=args.head_epochs, head_lr=args.head_lr, bs=args.bs,
               fmap_flip=args.fmap_flip, ema=args.ema, clip=args.clip, soup=args.soup, pct_start=args.pct_start, label_smoothing=args.label_smoothing,
               stage1_acc=r1, accuracy=accs, seconds={k: round(v, 1) for k, v in times.items()},
               history=hist, load=os.getloadavg(), threads=torch.get_num_threads(), torch=torch.__version__,
               cache_dir=str(args.cache_dir) if args.cache_dir else None)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(DEFAULT_DATA), help="folder with train/ and valid/ (default: %(default)s)")
    p.add_argument('--holdout', type=float, default=0.0, help="measure on this fraction of train instead of valid")
    p.add_argument('--cut', type=int, default=15, help="blocks (flattened) in the frozen, cached prefix")
    p.add_argument('--cache-cut', type=int, default=None, help="cache after this many blocks (<= --cut; default --cut)")
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--views', type=int, default=0, help="augmented views per training image (plus one clean view)")
    p.add_argument('--head-epochs', type=int, default=20, help="stage 1: epochs of a linear head on pooled features")
    p.add_argument('--head-lr', type=float, default=0.05)
    p.add_argument('--epochs', type=int, default=6, help="stage 2: epochs of the suffix on cached activations")
    p.add_argument('--lr', type=float, default=0.1, help="stage-2 (one-cycle max) learning rate of the classifier")
    p.add_argument('--body-div', type=float, default=2, help="the unfrozen blocks train at lr/body_div")
    p.add_argument('--pct-start', type=float, default=0.3)
    p.add_argument('--fmap-flip', type=float, default=0.5, help="probability of flipping a cached activation map")
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--clip', type=float, default=0.0, help="clip the gradient norm of stage 2 at this value (0: no clipping)")
    p.add_argument('--ema', type=float, default=0.0, help="also score an exponential moving average of the stage-2 weights with this decay per step")
    p.add_argument('--soup', type=int, default=1, help="train stage 2 this many times (seeds seed, seed+1, ...) from the same head; score each, their ensemble and their weight average")
    p.add_argument('--label-smoothing', type=float, default=0.1)
    p.add_argument('--tta', nargs='+', default=['centre', 'centre+flip'], choices=list(TTA_SETS))
    p.add_argument('--eval-every', action='store_true', help="centre-crop accuracy after every epoch")
    p.add_argument('--cache-dir', type=Path, default=None, help="keep/reuse cached activations here (.pt files)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--json', type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    out = run(args)
    print(json.dumps({k: v for k, v in out.items() if k != 'history'}, indent=1))
    if args.json: args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == '__main__': main()
