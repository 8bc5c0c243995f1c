"""The whole flower_tl recipe on the real Oxford 102 flowers, on CPU, timed phase by phase.

    python bench/full_run.py                       # train on ../shared/data/flowers102/train, report on its valid
    python bench/full_run.py --holdout 0.15        # choose settings: train on 85% of train, measure on the other 15%
    python bench/full_run.py --freeze-epochs 10 --epochs 2 --views 4 --size 224 --json out.json

Settings are chosen with `--holdout` (a seeded slice of `train` that is never trained on) and only then run on the
real `valid` split, so that no reported number is tuned on the data it is reported on.
"""
import argparse, json, os, random, tempfile, time, sys
from pathlib import Path

import torch

from flower_tl.data import FlowerData
from flower_tl.models import arch_info, create_model
from flower_tl.train import Learner
from flower_tl.fine_tune import Recipe
from flower_tl.predict import Predictor

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent/'shared'/'data'/'flowers102'


def holdout_split(src:Path, frac:float, seed:int, dst:Path) -> Path:
    "A folder of symlinks: `train/` = `src/train` less a seeded `frac` of each class, `valid/` = that slice."
    rng = random.Random(seed)
    for cls in sorted(p.name for p in (src/'train').iterdir() if p.is_dir()):
        files = sorted((src/'train'/cls).iterdir())
        rng.shuffle(files)
        k = max(1, round(len(files)*frac))
        for split, part in (('valid', files[:k]), ('train', files[k:])):
            (dst/split/cls).mkdir(parents=True, exist_ok=True)
            for f in part: (dst/split/cls/f.name).symlink_to(f.resolve())
    if (src/'cat_to_name.json').exists(): (dst/'cat_to_name.json').symlink_to((src/'cat_to_name.json').resolve())
    return dst


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    src = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        path = holdout_split(src, args.holdout, args.seed, Path(tmp)/'holdout') if args.holdout else src
        info = arch_info(args.arch)
        data = FlowerData.from_folder(path, size=args.size, mean=info['mean'], std=info['std'], bs=args.bs,
                                      num_workers=args.workers, seed=args.seed)
        model = create_model(args.arch, data.n_classes, pretrained=True)
        r = Recipe(bs=args.bs, views=args.views, lr2=args.lr2, body_div=args.body_div, label_smoothing=args.label_smoothing)
        learn = Learner(data, model, loss_func=r.loss_func(), seed=args.seed, progress=args.progress, path=Path(tmp)/'ckpt')
        t_data = time.perf_counter() - t_start
        lr, lr_found = args.lr, None
        if lr is None:
            learn.freeze(bn=True)
            res = learn.lr_find(views=args.views)
            lr = lr_found = float(res.suggestion)
            print(f"lr_find suggests {lr:.3g}", flush=True)
        t0 = time.perf_counter()
        hist = learn.fine_tune(0, lr, freeze_epochs=args.freeze_epochs, recipe=r) if args.freeze_epochs else []
        t_stage1 = time.perf_counter() - t0
        stage1_acc = hist[-1]['val_acc'] if hist else None
        t0 = time.perf_counter()
        if args.epochs:
            hist += learn.fine_tune(args.epochs, lr, freeze_epochs=0, recipe=r.replace(views=1))   # everything trains: no cache
        t_stage2 = time.perf_counter() - t0
        learn.load_best()
        t0 = time.perf_counter()
        pred = Predictor(learn.model, data.classes, data.names, data.mean, data.std, args.eval_size or args.size,
                         device='cpu')
        ev = pred.evaluate(path/'valid', tta=args.tta, progress=args.progress)
        t_eval = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    out = dict(data=str(src), split='holdout %.2f of train' % args.holdout if args.holdout else 'valid',
               arch=args.arch, size=args.size, eval_size=args.eval_size or args.size, views=args.views,
               freeze_epochs=args.freeze_epochs, epochs=args.epochs, lr=lr, lr_found=lr_found, lr2=args.lr2,
               body_div=args.body_div, label_smoothing=args.label_smoothing, tta=args.tta,
               stage1_val_acc=stage1_acc, best_val_acc_centre_crop=learn.best_acc,
               accuracy=ev.accuracy, top5=ev.topk_accuracy(5), n_valid=ev.n,
               seconds=dict(setup=round(t_data, 1), stage1=round(t_stage1, 1), stage2=round(t_stage2, 1),
                            eval=round(t_eval, 1), total=round(total, 1)),
               history=hist, threads=torch.get_num_threads(), cpus=os.cpu_count(), torch=torch.__version__)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(DEFAULT_DATA), help="folder with train/ and valid/ (default: %(default)s)")
    p.add_argument('--holdout', type=float, default=0.0, help="measure on this fraction of train instead of valid")
    p.add_argument('--arch', default='efficientnet_lite0')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--eval-size', type=int, default=None, help="image size for the final evaluation (default: --size)")
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--views', type=int, default=4, help="augmented views per image in the stage-1 feature cache")
    p.add_argument('--freeze-epochs', type=int, default=10)
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--lr', type=float, default=None, help="stage-1 learning rate (default: the LR finder's suggestion)")
    p.add_argument('--lr2', type=float, default=None, help="stage-2 learning rate of the head (default: lr/2)")
    p.add_argument('--body-div', type=float, default=10)
    p.add_argument('--label-smoothing', type=float, default=0.1)
    p.add_argument('--tta', action=argparse.BooleanOptionalAction, default=True)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--progress', action='store_true')
    p.add_argument('--json', type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    out = run(args)
    print(json.dumps({k: v for k, v in out.items() if k != 'history'}, indent=1))
    if args.json: args.json.write_text(json.dumps(out, indent=1))


if __name__ == '__main__': main()
