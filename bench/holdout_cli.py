"""`flower_tl train` scored on a holdout cut from `train`: how settings are chosen without looking at `valid`.

    python bench/holdout_cli.py --name mixup --holdout-seed 0 --out bench/results/holdout_mixup.json -- --mixup 0.2

makes the holdout (a seeded 15% of each class of `../shared/data/flowers102/train`, as `bench/full_run.py --holdout`
does; the rest is the training set), runs `flower_tl train --data HOLDOUT --arch efficientnet_lite0 --device cpu`
with the arguments after `--`, scores its `best.pth` on the holdout with `flower_tl evaluate` (with and without flip
TTA), and adds a row to `--out`: the command, stage 2's rate and how it was chosen, every epoch, the two accuracies
and the wall time.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from full_run import DEFAULT_DATA, holdout_split

def evaluate(ckpt, folder, tta, tmp) -> float:
    out = Path(tmp)/f"eval-{tta}.json"
    subprocess.run([sys.executable, '-m', 'flower_tl', 'evaluate', '--checkpoint', str(ckpt), '--data', str(folder), '--device', 'cpu',
                    '--json', str(out), '--plot', str(out.with_suffix('.png')), *([] if tta else ['--no-tta'])], check=True,
                   capture_output=True)
    return json.loads(out.read_text())['accuracy']

if __name__ == '__main__':
    argv = sys.argv[1:]
    extra = argv[argv.index('--') + 1:] if '--' in argv else []
    argv = argv[:argv.index('--')] if '--' in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--name', required=True, help="the row's name")
    p.add_argument('--holdout-seed', type=int, default=0)
    p.add_argument('--data', type=Path, default=DEFAULT_DATA)
    p.add_argument('--out', type=Path, required=True, help="the JSON of rows to add to")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        split = holdout_split(a.data, 0.15, a.holdout_seed, Path(tmp)/'holdout')
        cmd = ['flower_tl', 'train', '--data', 'HOLDOUT', '--arch', 'efficientnet_lite0', '--device', 'cpu', '--out', 'OUT', *extra]
        t = time.time()
        r = subprocess.run([sys.executable, '-m', 'flower_tl', 'train', '--data', str(split), '--arch', 'efficientnet_lite0',
                            '--device', 'cpu', '--out', str(Path(tmp)/'run'), *extra], capture_output=True, text=True)
        if r.returncode: sys.exit(f"training failed:\n{r.stderr[-3000:]}")
        seconds = round(time.time() - t)
        m = json.loads((Path(tmp)/'run'/'metrics.json').read_text())
        row = dict(name=a.name, date=time.strftime('%Y-%m-%d'), holdout_seed=a.holdout_seed, command=' '.join(cmd),
                   lr=m['lr'], lr2=m.get('lr2'), lr2_by=m.get('lr2_by'), stage2_note=m.get('stage2_note'), mixup=m.get('mixup'),
                   epochs=[dict(epoch=h['epoch'], stage=h['stage'], size=h.get('size'), val_acc=round(h['val_acc'], 4),
                                val_loss=round(h['val_loss'], 4)) for h in m['history']],
                   centre=evaluate(Path(tmp)/'run'/'best.pth', split/'valid', False, tmp),
                   flip_tta=evaluate(Path(tmp)/'run'/'best.pth', split/'valid', True, tmp), train_seconds=seconds,
                   machine=f"{os.cpu_count()} CPU cores")
    rows = json.loads(a.out.read_text()) if a.out.exists() else []
    a.out.write_text(json.dumps(rows + [row], indent=1) + '\n')
    print(json.dumps({k: v for k, v in row.items() if k != 'epochs'}))
