"""Score a checkpoint at several test resolutions, centre crop and flip TTA (issue 18: "test at a higher resolution").

`flower_tl evaluate` scores at the size the checkpoint was trained at. This swaps the `Predictor`'s size and
transform (resize the short side to size*256/224, crop the centre) and scores the labelled folder at each size:

    python bench/test_sizes.py --checkpoint runs/p/best.pth --folder HOLDOUT/valid --sizes 160 192 224 256
"""
import argparse, json
from pathlib import Path

from flower_tl.data import eval_transform
from flower_tl.predict import Predictor


def score(ckpt:Path, folder:Path, sizes:list, device:str='cpu') -> dict:
    "Accuracy (%) of `ckpt` on the labelled `folder` at each test size: `centre` crop, and with flip `tta`."
    p, out = Predictor.from_checkpoint(ckpt, device=device), {}
    for s in sizes:
        p.size, p.transform = s, eval_transform(s, p.mean, p.std)
        out[s] = {k: round(100*p.evaluate(folder, tta=tta, progress=False).accuracy, 2)
                  for k, tta in (('centre', False), ('tta', True))}
        print(f"test size {s}: {out[s]}", flush=True)
    return out


if __name__ == '__main__':
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--checkpoint', type=Path, required=True, help="a checkpoint from flower_tl train")
    a.add_argument('--folder', type=Path, required=True, help="a labelled folder, one subfolder per category id")
    a.add_argument('--sizes', type=int, nargs='+', default=[224], help="test sizes in pixels")
    a.add_argument('--device', default='cpu')
    args = a.parse_args()
    print(json.dumps(dict(trained_at=Predictor.from_checkpoint(args.checkpoint, device=args.device).size,
                          test=score(args.checkpoint, args.folder, args.sizes, args.device))))
