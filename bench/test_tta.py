"""Score a checkpoint under several test-time augmentations (TTA) on a labelled folder (issue 18, item 4).

`flower_tl evaluate` averages each photo's centre crop with its mirror image (flip TTA). This scores other sets of
views of each photo with the same model, to see whether more of them pay:

- `centre`: what `evaluate` sees, the predictor's own `eval_transform` (the short side resized to size*256/224, the
  centre cropped);
- `full`: the short side resized to `size`, the centre cropped (the whole short side, no zoom);
- `corners`: the four corner crops of the image `centre` crops from (with `centre`, torchvision's five-crop);
- each of them also mirrored (`+flip`).

A set's prediction is the mean of its views' softmax outputs. Every view is computed once per photo, so all the
sets cost one pass per view:

    python bench/test_tta.py --checkpoint runs/q/best.pth --folder HOLDOUT/valid --json out.json
"""
import argparse, json, sys, time
from pathlib import Path

import torch
from torchvision.transforms import v2

from flower_tl.data import _normalise
from flower_tl.photos import load_rgb
from flower_tl.predict import Predictor

SETS = {  # name -> the views it averages
    'centre': ['centre'],
    'centre+flip': ['centre', 'centre~'],
    'full+flip': ['full', 'full~'],
    'centre+full+flips': ['centre', 'centre~', 'full', 'full~'],
    'five-crop': ['centre', 'tl', 'tr', 'bl', 'br'],
    'five-crop+flips': ['centre', 'tl', 'tr', 'bl', 'br', 'centre~', 'tl~', 'tr~', 'bl~', 'br~'],
    'five-crop+full+flips': ['centre', 'tl', 'tr', 'bl', 'br', 'centre~', 'tl~', 'tr~', 'bl~', 'br~', 'full', 'full~'],
}

def views(p:Predictor, path:Path, norm) -> dict:
    "Every base view of one photo, read as `evaluate` reads it, as a normalised `(3, size, size)` tensor, keyed by name."
    img = load_rgb(path)
    x, size = v2.PILToTensor()(img), p.size
    tl, tr, bl, br, _ = v2.FiveCrop(size)(v2.Resize(round(size*256/224), antialias=True)(x))
    full = v2.CenterCrop(size)(v2.Resize(size, antialias=True)(x))
    return dict(centre=p.transform(img), **{k: norm(t) for k, t in dict(full=full, tl=tl, tr=tr, bl=bl, br=br).items()})

@torch.no_grad()
def view_probs(p:Predictor, folder:Path, bs:int=32) -> tuple:
    "`(probs, targets)`: softmax outputs per view name (mirrored views end in '~'), and each photo's class index."
    norm = v2.Compose(_normalise(p.mean, p.std))   # the library's normalisation, as in eval_transform
    dirs = [d for d in sorted(folder.iterdir()) if d.is_dir()]
    unknown = [d.name for d in dirs if d.name not in p.classes]
    if unknown:
        print(f"{folder}: class folders the model does not know: {', '.join(unknown[:10])}; "
              "give a labelled folder of the checkpoint's classes", file=sys.stderr)
        raise SystemExit(2)
    files = [(f, p.classes.index(d.name)) for d in dirs for f in sorted(d.iterdir())]
    out, targets = {}, torch.tensor([t for _, t in files])
    for i in range(0, len(files), bs):
        batch = [views(p, f, norm) for f, _ in files[i:i + bs]]
        for k in batch[0]:
            x = torch.stack([b[k] for b in batch])
            for name, xx in ((k, x), (k + '~', x.flip(3))):
                out.setdefault(name, []).append(p.probs(xx, tta=False))
    return {k: torch.cat(v) for k, v in out.items()}, targets

def score(probs:dict, targets:torch.Tensor) -> dict:
    "Accuracy (%) of each set of views in `SETS`."
    return {s: round(100*(torch.stack([probs[v] for v in vs]).mean(0).argmax(1) == targets).float().mean().item(), 2)
            for s, vs in SETS.items()}

if __name__ == '__main__':
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--checkpoint', type=Path, nargs='+', required=True, help="checkpoints from flower_tl train")
    a.add_argument('--folder', type=Path, required=True, help="a labelled folder, one subfolder per category id")
    a.add_argument('--device', default='cpu')
    a.add_argument('--json', type=Path, default=None, help="also write the results here")
    args = a.parse_args()
    res = {}
    for ck in args.checkpoint:
        t0 = time.perf_counter()
        p = Predictor.from_checkpoint(ck, device=args.device)
        probs, targets = view_probs(p, args.folder)
        name = f"{ck.parent.name}/{ck.name}"   # no machine's paths in the results
        res[name] = dict(n=len(targets), seconds=round(time.perf_counter() - t0, 1), **score(probs, targets))
        print(json.dumps({name: res[name]}), flush=True)
    if args.json: args.json.write_text(json.dumps(res, indent=1) + '\n')
