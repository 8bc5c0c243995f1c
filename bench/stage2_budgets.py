"""Stage 2 against the head, at every budget (issue 16, item 2): does fine-tuning keep what the head reached?

For each recipe (`flower_tl.fine_tune.recipe`: the quick one, the CPU default when the table in `bench/README.md` was measured, and the GPU one run on this CPU; `--recipes cpu` runs today's CPU default) and each epoch budget
(stage 1 + stage 2), train on 10 photos per class of Oxford 102 (the subset `compare_fastai.py` uses, seed 0) and
record the validation accuracy after each epoch, the stage-2 rate the range test picked and what the divergence
guard did. Stage 2 passes when its last epoch ends at most half a point below the best epoch of stage 1 (4 of the 818
validation photos); the lowest epoch of stage 2 is recorded too.

    python bench/stage2_budgets.py --json bench/results/stage2_budgets.json
    python bench/stage2_budgets.py --recipes quick --budgets 1+1,2+2 --size 96
"""
import argparse, json, os, tempfile, time, warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def run(path, name, fe, e, args) -> dict:
    from flower_tl.data import FlowerData
    from flower_tl.models import arch_info, create_model
    from flower_tl.train import Learner
    from flower_tl.fine_tune import recipe
    info = arch_info(args.arch)
    r = recipe('cpu', args.arch, name=name).replace(freeze_epochs=fe, epochs=e)
    data = FlowerData.from_folder(path, size=args.size, mean=info['mean'], std=info['std'], bs=r.bs,
                                  num_workers=0, seed=args.seed)
    learn = Learner(data, create_model(args.arch, data.n_classes), loss_func=r.loss_func(), seed=args.seed, progress=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fine_tune(recipe=r)
    h = learn.history
    head = max(x['val_acc'] for x in h if x['stage'] == 'frozen')
    s2 = [x['val_acc'] for x in h if x['stage'] != 'frozen']
    res = getattr(learn, 'stage2_lr_find', None)
    out = dict(recipe=name, budget=f"{fe}+{e}", seconds=round(time.perf_counter() - t0, 1), head=head, stage2=s2,
               final=h[-1]['val_acc'], lr=r.lr, **learn.stage_lrs, sweep_stop=None if res is None else res.stop,
               sweep_blowup=None if res is None or res.stop == 'done' else res.lrs[-1], guard=learn.guard_log, status=learn.status,
               ok=bool(s2) and s2[-1] >= head - 0.005)   # the end of stage 2: at most half a point below the head
    print(f"{name} {fe}+{e}: head {head:.3f}, stage 2 {' '.join(f'{a:.3f}' for a in s2)}, lr2 {out['lr2']:.3g} "
          f"(sweep {out['sweep_stop']} at {out['sweep_blowup']}), guard {len(learn.guard_log)}, {'ok' if out['ok'] else 'BELOW THE HEAD'}, "
          f"{out['seconds']:.0f} s", flush=True)
    return out


def main(argv=None):
    from compare_fastai import subset, shown_path, DEFAULT_DATA
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(DEFAULT_DATA))
    p.add_argument('--per-class', type=int, default=10)
    p.add_argument('--arch', default='efficientnet_lite0')
    p.add_argument('--size', type=int, default=96)
    p.add_argument('--recipes', default='quick,gpu')
    p.add_argument('--budgets', default='1+1,2+2,5+5')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--json', type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = subset(Path(args.data), args.per_class, args.seed, Path(tmp)/'data')
        for name in args.recipes.split(','):
            for b in args.budgets.split(','):
                fe, e = map(int, b.split('+'))
                rows.append(run(path, name, fe, e, args))
                if args.json: args.json.write_text(json.dumps(dict(settings=vars(args) | dict(json=None, data=shown_path(args.data)), rows=rows), indent=1, default=str))
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} runs kept the head's accuracy in stage 2")


if __name__ == '__main__':
    import sys; sys.path.insert(0, str(HERE)); main()
