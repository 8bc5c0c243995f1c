"""Training speed: flower_tl's Learner against a bare PyTorch loop, and cached-feature frozen epochs against the slow path.

Both comparisons run side by side in one process, on real photos from a subset of the Oxford 102 flowers
(`--per-class` training images of each of `--classes` classes, and `--valid-per-class` validation images each):

(a) overhead: one epoch of `Learner.fit` (train + validate, with its statistics, progress bookkeeping and best-weights
    copy; progress bars off) against a bare loop doing the same work on the same model, loader, loss and optimizer
    (SGD + Lookahead): forward, loss, backward, step, then a validation pass computing loss and accuracy.
    The two take turns, `--repeats` times; the ratio of the medians is the overhead (target <= 1.05), in wall-clock
    time and in CPU time of the process (steadier when other jobs share the machine).
(b) cached features: `--frozen-epochs` epochs with the body frozen (EfficientNet-Lite0, BatchNorm frozen too),
    once on cached features (the time includes computing them) and once the slow way (every image through the body
    at every epoch). The ratio is the speedup (target >= 10x at 10 epochs). Validation accuracies are reported too.

    python bench/bench_train.py                            # ../shared/data/flowers102, the defaults below
    python bench/bench_train.py --data DIR --classes 20 --per-class 8 --size 96 --repeats 5 --json out.json
"""
import argparse, json, os, statistics, sys, tempfile, time
from pathlib import Path

import torch

from flower_tl.core import UserError
from flower_tl.data import FlowerData
from flower_tl.lookahead import sgd_lookahead
from flower_tl.models import _BN, arch_info, create_model
from flower_tl.train import Learner

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent/'shared'/'data'/'flowers102'


def subset(src:Path, dst:Path, classes:int, per_class:int, valid_per_class:int) -> Path:
    "A folder of symlinks to the first `per_class`/`valid_per_class` images of the first `classes` classes of `src`."
    cats = sorted((d.name for d in (src/'train').iterdir() if d.is_dir()), key=lambda c: (len(c), c))[:classes]
    for split, n in (('train', per_class), ('valid', valid_per_class)):
        for c in cats:
            (dst/split/c).mkdir(parents=True, exist_ok=True)
            for f in sorted((src/split/c).glob('*.jpg'))[:n]: (dst/split/c/f.name).symlink_to(f.resolve())
    return dst


def bare_epoch(model, train_dl, valid_dl, opt, loss_func, bn_eval:bool, channels_last:bool):
    """The same work as one epoch of `Learner.fit`, written as plainly as possible: the same model, loaders, loss,
    optimizer, BatchNorm modes and memory layout (the learner puts its inputs in channels-last layout on the CPU too)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    if bn_eval:
        for m in model.modules():
            if isinstance(m, _BN): m.eval()
    for x, y in train_dl:
        loss = loss_func(model(x.contiguous(memory_format=fmt)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    tot, correct, n = torch.zeros(()), torch.zeros(()), 0
    with torch.no_grad():
        for x, y in valid_dl:
            out = model(x.contiguous(memory_format=fmt))
            tot += loss_func(out, y)*len(y); correct += (out.argmax(1) == y).sum(); n += len(y)
    return (tot/n).item(), (correct/n).item()


def overhead(root:Path, a) -> dict:
    info = arch_info(a.arch)
    data = FlowerData.from_folder(root, size=a.size, mean=info['mean'], std=info['std'], bs=a.bs, num_workers=a.workers)
    learn = Learner(data, create_model(a.arch, data.n_classes), device='cpu', progress=False, seed=0)
    bare_opt = sgd_lookahead(learn.model.parameters(), a.lr)
    ours, bare = [], []
    learn.fit(1, lr=a.lr)  # warm-up, both paths share the model
    bare_epoch(learn.model, data.train_dl, data.valid_dl, bare_opt, learn.loss_func, learn.bn_eval, learn.channels_last)
    cpu = {'ours': [], 'bare': []}
    for r in range(a.repeats):
        for name in (('ours', 'bare') if r % 2 == 0 else ('bare', 'ours')):
            t, c = time.perf_counter(), time.process_time()
            if name == 'ours': learn.fit(1, lr=a.lr)
            else: bare_epoch(learn.model, data.train_dl, data.valid_dl, bare_opt, learn.loss_func, learn.bn_eval, learn.channels_last)
            (ours if name == 'ours' else bare).append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    c_ours, c_bare = statistics.median(cpu['ours']), statistics.median(cpu['bare'])
    return dict(arch=a.arch, size=a.size, bs=a.bs, train_images=len(data.train_ds), valid_images=len(data.valid_ds),
                epoch_s_ours=ours, epoch_s_bare=bare, median_ours=m_ours, median_bare=m_bare, ratio=m_ours/m_bare,
                cpu_s_ours=cpu['ours'], cpu_s_bare=cpu['bare'], cpu_ratio=c_ours/c_bare)


def cached_vs_slow(root:Path, a) -> dict:
    info = arch_info('efficientnet_lite0')
    out = {}
    # warm-up, untimed: the files into the page cache, the model's kernels primed, for whichever path runs first
    data = FlowerData.from_folder(root, size=a.size, mean=info['mean'], std=info['std'], bs=a.bs, num_workers=a.workers)
    warm = Learner(data, create_model('efficientnet_lite0', data.n_classes), device='cpu', progress=False)
    warm.features('train'); warm.features('valid')
    for how in ('cached', 'slow'):
        data = FlowerData.from_folder(root, size=a.size, mean=info['mean'], std=info['std'], bs=a.bs, num_workers=a.workers)
        learn = Learner(data, create_model('efficientnet_lite0', data.n_classes), device='cpu', progress=False, seed=0)
        learn.freeze(bn=True)
        t = time.perf_counter()
        h = learn.fit(a.frozen_epochs, lr=a.head_lr, sched='one_cycle', cache=how == 'cached')
        out[how] = dict(seconds=time.perf_counter() - t, val_acc=h[-1]['val_acc'],
                        feature_s=learn.feature_time if how == 'cached' else None)
        print(f"  {how:>6}: {out[how]['seconds']:.1f}s, val_acc {out[how]['val_acc']:.3f}", flush=True)
    return dict(frozen_epochs=a.frozen_epochs, size=a.size, train_images=len(data.train_ds),
                valid_images=len(data.valid_ds), **out, speedup=out['slow']['seconds']/out['cached']['seconds'])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', type=Path, default=DEFAULT_DATA, help="folder with train/ and valid/; default ../shared/data/flowers102")
    p.add_argument('--classes', type=int, default=102, help="number of classes in the subset")
    p.add_argument('--per-class', type=int, default=2, help="training images per class")
    p.add_argument('--valid-per-class', type=int, default=1, help="validation images per class")
    p.add_argument('--arch', default='efficientnet_lite0', help="architecture for the overhead comparison")
    p.add_argument('--size', type=int, default=96, help="image size")
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--lr', type=float, default=0.01, help="learning rate of the overhead runs")
    p.add_argument('--head-lr', type=float, default=0.02, help="learning rate of the frozen runs")
    p.add_argument('--repeats', type=int, default=3, help="epochs of each loop in the overhead comparison")
    p.add_argument('--frozen-epochs', type=int, default=10)
    p.add_argument('--workers', type=int, default=0, help="loader worker processes")
    p.add_argument('--threads', type=int, default=1, help="torch CPU threads")
    p.add_argument('--only', choices=('overhead', 'cached'), default=None, help="run one comparison only")
    p.add_argument('--json', type=Path, default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not (a.data/'train').is_dir():
        print(f"bench_train: no train/ folder in {a.data}; pass --data", file=sys.stderr); return 2
    res = dict(args={k: str(v) for k, v in vars(a).items()}, torch=torch.__version__)
    with tempfile.TemporaryDirectory() as d:
        root = subset(a.data, Path(d), a.classes, a.per_class, a.valid_per_class)
        try:
            if a.only in (None, 'overhead'):
                print(f"(a) Learner.fit epoch vs bare loop: {a.arch}, {a.size}px, {a.repeats} epochs each", flush=True)
                o = res['overhead'] = overhead(root, a)
                print(f"  wall: ours {o['median_ours']:.2f}s, bare {o['median_bare']:.2f}s per epoch, ratio {o['ratio']:.3f}\n"
                      f"  CPU:  ours {statistics.median(o['cpu_s_ours']):.2f}s, bare {statistics.median(o['cpu_s_bare']):.2f}s "
                      f"per epoch, ratio {o['cpu_ratio']:.3f}\n  (medians of {a.repeats}; {o['train_images']} train + "
                      f"{o['valid_images']} valid images; target ratio <= 1.05; on a shared machine the CPU-time ratio "
                      "is the steadier one)", flush=True)
            if a.only in (None, 'cached'):
                print(f"(b) {a.frozen_epochs} frozen epochs, efficientnet_lite0, {a.size}px: cached features vs slow path", flush=True)
                c = res['cached'] = cached_vs_slow(root, a)
                print(f"  speedup {c['speedup']:.1f}x (target >= 10x); cached: {c['cached']['feature_s']:.1f}s of it "
                      f"computing features; val_acc cached {c['cached']['val_acc']:.3f}, slow {c['slow']['val_acc']:.3f}",
                      flush=True)
        except UserError as e:
            print(f"bench_train: {e}", file=sys.stderr); return 2
    if a.json is not None: a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == '__main__': sys.exit(main())
