"""Loader throughput: flower_tl.data's loaders against the classic notebook's pipeline, side by side in one process.

Both read the same training images with the same number of worker processes and batch size:
- train: `FlowerData.train_dl`'s pipeline (load_rgb + train_transform) against `ImageFolder` + the classic
  augmentation with torchvision v1 transforms (pad 4 reflect, rotate 10, random resized crop, flip, normalise);
- eval: `eval_transform` (resize + centre crop) against `ImageFolder` + the classic test transform (random
  resized crop, the bug we fixed), both unshuffled.
Each run is one full pass of a fresh loader over the same fixed random subset of `--batches` batches, so no
prefetched work is left over: it reports images/s (wall clock, worker start-up included) and CPU ms per image
(the main process and its worker processes together, which depends much less on what else the machine runs).
The pipelines take turns within each repeat; the summary gives medians over the repeats and ours/classic ratios.

    python bench/bench_loader.py                      # ../shared/data/flowers102, 224 px, 2 workers, bs 64
    python bench/bench_loader.py --data DIR --batches 10 --repeats 3
"""
import argparse, json, os, resource, statistics, sys, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from flower_tl.core import UserError
from flower_tl.data import IMAGENET_STATS, FlowerData


def classic_dataset(folder, train:bool, size:int):
    "The classic notebook's dataset: ImageFolder with torchvision v1 transforms."
    norm = transforms.Normalize(*IMAGENET_STATS)
    aug = ([transforms.Pad(4, padding_mode='reflect'), transforms.RandomRotation(10)] if train else []) + \
          [transforms.RandomResizedCrop(size)] + ([transforms.RandomHorizontalFlip()] if train else [])
    return datasets.ImageFolder(str(folder), transforms.Compose(aug + [transforms.ToTensor(), norm]))


def cpu_s() -> float:
    "CPU seconds used so far by this process and by its children that have ended (the loader workers)."
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def one_pass(dl:DataLoader) -> tuple:
    "Images/s and CPU ms per image of one full pass over `dl` (its workers end with the pass)."
    n, t0, c0 = 0, time.perf_counter(), cpu_s()
    for xb, *_ in dl: n += len(xb)
    return n/(time.perf_counter() - t0), (cpu_s() - c0)/n*1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', type=Path, default=Path(__file__).resolve().parents[1].parent/'shared'/'data'/'flowers102',
                   help="folder with train/ and valid/ (or its train/ folder); default ../shared/data/flowers102")
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--batches', type=int, default=20, help="batches per pass")
    p.add_argument('--repeats', type=int, default=5)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    root = a.data.parent if a.data.name == 'train' else a.data
    try: data = FlowerData.from_folder(root, size=a.size, bs=a.bs, num_workers=a.workers, pin_memory=False)
    except UserError as e: sys.exit(f"bench_loader: {e}")
    n = a.batches*a.bs
    if len(data.train_ds) < n: sys.exit(f"bench_loader: {root/'train'} has {len(data.train_ds)} images; "
                                        f"{a.batches} batches of {a.bs} need {n}: lower --batches")
    idx = np.random.default_rng(0).permutation(len(data.train_ds))[:n].tolist()
    ours_eval = data.dataset('train', data.eval_tfm)
    classic_train, classic_eval = classic_dataset(root/'train', True, a.size), classic_dataset(root/'train', False, a.size)
    assert [Path(f) for f, _ in classic_train.samples] == data.train_ds.files, "the two pipelines must read the same files"
    pipelines = {'train ours': (data.train_ds, True), 'train classic': (classic_train, True),
                 'eval ours': (ours_eval, False), 'eval classic': (classic_eval, False)}
    runs = {k: [] for k in pipelines}
    for r in range(a.repeats):
        for k, (ds, shuffle) in pipelines.items(): runs[k].append(one_pass(data.loader(Subset(ds, idx), shuffle=shuffle)))
        print(f"repeat {r+1}/{a.repeats}: " + ", ".join(f"{k} {v[-1][0]:.0f} img/s {v[-1][1]:.1f} ms" for k, v in runs.items()),
              flush=True)
    med = {k: (statistics.median(x for x, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    print(f"\n{n} of the {len(data.train_ds)} training images in {root}, {a.size} px, batch {a.bs}, {a.workers} workers, "
          f"{a.repeats} repeats; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'pipeline':<15}{'median img/s':>14}{'min':>7}{'max':>7}{'median CPU ms/img':>19}")
    for k, v in runs.items():
        print(f"{k:<15}{med[k][0]:>14.0f}{min(x for x, _ in v):>7.0f}{max(x for x, _ in v):>7.0f}{med[k][1]:>19.1f}")
    for s in ('train', 'eval'):
        print(f"{s}: ours/classic images/s = {med[f'{s} ours'][0]/med[f'{s} classic'][0]:.2f}, "
              f"CPU per image = {med[f'{s} ours'][1]/med[f'{s} classic'][1]:.2f}")
    print(json.dumps({'median_images_per_s': {k: round(v[0], 1) for k, v in med.items()},
                      'median_cpu_ms_per_image': {k: round(v[1], 2) for k, v in med.items()}}))


if __name__ == '__main__': main()
