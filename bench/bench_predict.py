"""Batched folder prediction (`Predictor.predict_folder`) against the classic loop (batch size 1, one image at a time).

Both run the same model, in eval mode, on the same real images (decoding and resizing included), interleaved
in one process so that both see the same machine load; we report the median wall time and CPU time of each
(CPU time is steadier on a shared machine), the speed-up ratios and images/s, and check that both predict the
same classes.

    .venv/bin/python bench/bench_predict.py                   # 128 images of ../shared/data/flowers102/valid, CPU, bs 8 and 64
    .venv/bin/python bench/bench_predict.py --n 64 --bs 1 4 8 16 64 --threads 1
    .venv/bin/python bench/bench_predict.py --n 512 --bs 64 256 --workers 4 --device cuda

The batched runs go through `Predictor.predict_folder` exactly as `flower_tl predict` does (channels-last layout,
loader, collate that tolerates unreadable files); the classic run is the classic notebook's loop.
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from flower_tl.data import TestDataset
from flower_tl.photos import sample_path
from flower_tl.predict import Predictor
from flower_tl.models import arch_info, create_model

ROOT = Path(__file__).resolve().parents[1]

def subset(src:Path, n:int, dst:Path) -> Path:
    "Symlink `n` images of `src` (spread evenly over its sorted file list, folders kept) into `dst`."
    ds = TestDataset(src)
    files = [ds.name(i) for i in range(len(ds))]
    step = max(len(files)/n, 1)
    for f in sorted({files[int(i*step)] for i in range(min(n, len(files)))}):
        (dst/f).parent.mkdir(parents=True, exist_ok=True)
        (dst/f).symlink_to((src/f).resolve())
    return dst

def classic(model, folder, transform, device):
    "The classic notebook's loop: batch size 1, `.item()` per image. Returns the predicted class indices."
    dl = DataLoader(TestDataset(folder, transform), batch_size=1, shuffle=False)
    out = {}
    model.eval()
    with torch.no_grad():
        for x, _, name in dl:
            out[name[0]] = model(x.to(device)).max(dim=1)[1][0].item()
    return out

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', type=Path, default=ROOT.parent/'shared/data/flowers102/valid',
                   help="folder of real images (default: ../shared/data/flowers102/valid, else the bundled sample)")
    p.add_argument('--n', type=int, default=128, help="images to use (spread over the folder)")
    p.add_argument('--arch', default='efficientnet_lite0')
    p.add_argument('--size', type=int, default=None, help="input size (default: the architecture's)")
    p.add_argument('--bs', type=int, nargs='+', default=[8, 64], help="batch size(s) of the batched runs (default: 8 64)")
    p.add_argument('--workers', type=int, default=0, help="loader processes for the batched runs (default: 0)")
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=2, help="torch CPU threads")
    p.add_argument('--device', default='cpu')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = a.data if a.data.is_dir() else sample_path()/'valid'
    info = arch_info(a.arch)
    size = a.size or info['size']
    model = create_model(a.arch, 102, pretrained=False)  # speed does not depend on the weights
    pred = Predictor(model, [str(i) for i in range(1, 103)], None, info['mean'], info['std'], size, a.device, a.arch)
    with tempfile.TemporaryDirectory() as tmp:
        folder = subset(data, a.n, Path(tmp))
        n = len(TestDataset(folder))
        print(f"{n} images from {data}, {a.arch} at {size}px on {pred.device} ({torch.get_num_threads()} threads), "
              f"classic bs=1 vs batched bs={'/'.join(map(str, a.bs))} (workers={a.workers}); {a.repeats} interleaved repeats")
        jobs = {'classic bs=1': lambda: classic(pred.model, folder, pred.transform, pred.device)}
        for bs in a.bs:
            jobs[f'batched bs={bs}'] = lambda bs=bs: pred.predict_folder(folder, bs=bs, num_workers=a.workers, progress=False)
        # warm-up (allocator, page cache), not timed; and the check that both predict the same classes
        ref = classic(pred.model, folder, pred.transform, pred.device)
        got = pred.predict_folder(folder, bs=a.bs[-1], num_workers=a.workers, progress=False)
        agree = sum(ref[f] == i for f, i in zip(got.files, got.idxs.tolist()))
        wall, cpu = {k: [] for k in jobs}, {k: [] for k in jobs}
        for r in range(a.repeats):
            for name, fn in jobs.items():
                if pred.device.type == 'cuda': torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time(); fn()
                if pred.device.type == 'cuda': torch.cuda.synchronize()
                wall[name].append(time.perf_counter() - t0); cpu[name].append(time.process_time() - c0)
                print(f"  repeat {r+1} {name:14s} {wall[name][-1]:7.2f} s wall, {cpu[name][-1]:7.2f} s CPU", flush=True)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in jobs}
    base = med['classic bs=1']
    print(f"medians over {a.repeats} repeats ({n} images; CPU time of this process"
          f"{', loader workers not counted' if a.workers else ''}):")
    for k, (w, c) in med.items():
        print(f"  {k:14s} {w:7.2f} s wall  {n/w:7.1f} images/s  {c:7.2f} s CPU   speed-up vs classic: "
              f"{base[0]/w:.2f}x wall, {base[1]/c:.2f}x CPU")
    print(f"same class from classic and batched for {agree}/{n} images")

if __name__ == '__main__': main()
