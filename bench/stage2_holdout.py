"""Which stage-2 rate on the full data? The quick recipe's stage 2 (the CPU default until issue 18) at several fractions of the rate where stage 2's
range test blew up, scored on a held-out 15% of `train` (issue 16, item 2; never on `valid`).

The split is `full_run.py --holdout 0.15`'s (seed 0: 5572 training photos, 980 held out). One learner caches the
inputs of the last block once (224 px, plain centre crops, as the quick recipe), trains the head for the recipe's 20
epochs at its 0.05, runs stage 2's range test once (the body at half the head's rate), and then, from the same
trained head each time, trains stage 2 for the recipe's 6 epochs at each rate asked for.

    python bench/stage2_holdout.py --json bench/results/stage2_holdout.json
"""
import argparse, copy, json, tempfile, time, warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main(argv=None):
    import sys; sys.path.insert(0, str(HERE))
    from full_run import holdout_split, DEFAULT_DATA
    from compare_fastai import shown_path
    from flower_tl.data import FlowerData
    from flower_tl.models import arch_info, create_model
    from flower_tl.train import Learner
    from flower_tl.fine_tune import recipe
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(DEFAULT_DATA))
    p.add_argument('--fractions', default='10,5,3,2', help="stage-2 head rate = blow-up rate / each of these")
    p.add_argument('--fixed', default='0.1', help="also these fixed head rates (the old recipe's 0.1)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    arch, r = 'efficientnet_lite0', recipe('cpu', 'efficientnet_lite0', 'quick')
    info, rows = arch_info(arch), []
    with tempfile.TemporaryDirectory() as tmp:
        path = holdout_split(Path(args.data), 0.15, args.seed, Path(tmp)/'holdout')
        data = FlowerData.from_folder(path, size=224, mean=info['mean'], std=info['std'], bs=r.bs, num_workers=0, seed=args.seed)
        learn = Learner(data, create_model(arch, data.n_classes), loss_func=r.loss_func(), seed=args.seed, progress=False)
        t0 = time.perf_counter()
        learn.freeze().cache_inputs(r.freeze_to, r.views, r.clean)
        print(f"cache: {time.perf_counter() - t0:.0f} s; {len(data.train_ds)} training, {len(data.valid_ds)} held out", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            learn.fit(r.freeze_epochs, r.lr, sched='one_cycle', views=r.views, clean=r.clean)
        head_acc, head = learn.best_acc, copy.deepcopy(learn.model.state_dict())
        learn.freeze_to(r.freeze_to)
        res = learn.lr_find(views=r.views, clean=r.clean, body_div=r.body_div)
        blowup = res.lrs[-1] if res.stop != 'done' else None
        print(f"head: {head_acc:.4f} on the holdout; stage 2's range test: {res.stop} at {blowup}", flush=True)
        rates = [(f"blow-up/{d}", blowup/float(d)) for d in args.fractions.split(',') if blowup] + \
                [(f"fixed {v}", float(v)) for v in args.fixed.split(',') if v]
        for name, lr2 in rates:
            learn.model.load_state_dict(head); learn.freeze_to(r.freeze_to)
            learn.history, learn.best_acc, learn.best_epoch, learn.best_state, learn.guard_log = [], -1.0, None, None, []
            t = time.perf_counter()
            h = learn.fit(r.epochs, lr2, body_lr=lr2/r.body_div, sched='one_cycle', views=r.views, clean=r.clean, flip=r.flip)
            row = dict(rule=name, lr2=lr2, accs=[x['val_acc'] for x in h], final=h[-1]['val_acc'],
                       seconds=round(time.perf_counter() - t, 1), guard=list(learn.guard_log))
            rows.append(row)
            print(f"{name:>12} lr2 {lr2:.3g}: holdout {' '.join(f'{a:.4f}' for a in row['accs'])} ({row['seconds']:.0f} s)", flush=True)
            if args.json:
                args.json.write_text(json.dumps(dict(settings=vars(args) | dict(json=None, data=shown_path(args.data)),
                                                     head=head_acc, sweep=dict(stop=res.stop, blowup=blowup), rows=rows),
                                                indent=1, default=str))


if __name__ == '__main__': main()
