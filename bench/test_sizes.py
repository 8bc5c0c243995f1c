"""Score a checkpoint at several test resolutions, centre crop and flip TTA (issue 18: "test at a higher resolution").

`flower_tl evaluate` scores at the size the checkpoint was trained at. This builds a `Predictor` on the same model
for each other size (resize the short side to size*256/224, crop the centre) and scores the labelled folder:

    python bench/test_sizes.py --checkpoint runs/p/best.pth --folder HOLDOUT/valid --sizes 160 192 224 256
"""
import argparse, json
from pathlib import Path

from flower_tl.predict import Predictor


def score(p:Predictor, folder:Path, sizes:list) -> dict:
    "Accuracy (%) of `p`'s model on the labelled `folder` at each test size: `centre` crop, and with flip `tta`."
    out = {}
    for s in sizes:
        ps = Predictor(p.model, p.classes, p.names, p.mean, p.std, s, p.device, p.arch)
        out[s] = {k: round(100*ps.evaluate(folder, tta=tta, progress=False).accuracy, 2)
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
    p = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    print(json.dumps(dict(trained_at=p.size, test=score(p, args.folder, args.sizes))))
