"""A stage-2 training step of the CPU recipe on smaller photos (progressive resizing) against the full size, side by
side in one process, in float32.

EfficientNet-Lite0, batch `--bs`, channels-last, the stages from `freeze_to` (6) on training, the frozen ones folded
(`FrozenPrefix`, as `fit` runs them): forward, backward and an SGD + Lookahead step on one synthetic batch of
`--size` px, scaled down to each side of `flower_tl.train.progressive_sizes` as `fit(sizes=...)` does
(`flower_tl.train.resized`: bilinear, antialiased, on the device). The sides take turns, `--repeats` times; each
figure is the median of the repeats, each repeat the mean of `--steps` steps after two warm-up steps. A ratio
below 1 means the smaller photos cost less than the full size. The scaling is part of what is timed.

    python bench/bench_sizes.py --json bench/results/sizes_cpu.json
    OMP_NUM_THREADS=1 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/bench_sizes.py --threads 1 --repeats 3 --steps 2
"""
import json, os, statistics, time
from pathlib import Path

import torch

from bench_bf16 import parser, stage2_learner   # the same options and set-up
from flower_tl.models import fold_bn, split_at
from flower_tl.train import FrozenPrefix, progressive_sizes, resized


def main(args) -> dict:
    learn, x, y = stage2_learner(args)
    cut = learn.frozen_stages
    prefix, suffix = split_at(learn.model, cut)
    model = FrozenPrefix(fold_bn(prefix), suffix, learn.device, None)
    sides = sorted(set(progressive_sizes(args.size, 10)))

    def step(side):
        (xs, ys, _), = resized([(x, y, False)], side, channels_last=True)
        learn.opt.zero_grad(set_to_none=True); learn.loss_func(model(xs), ys).backward(); learn.opt.step()

    times = {s: [] for s in sides}
    for s in sides: step(s); step(s)
    for _ in range(args.repeats):
        for s in sides:
            t = time.perf_counter()
            for _ in range(args.steps): step(s)
            times[s].append((time.perf_counter() - t)/args.steps)
    full = statistics.median(times[args.size])
    res = {str(s): dict(step_s=statistics.median(v), ratio=statistics.median(v)/full, pixels=(s/args.size)**2) for s, v in times.items()}
    sched = progressive_sizes(args.size, 10)
    out = dict(machine=dict(threads=args.threads, torch=torch.__version__, onednn_max_cpu_isa=os.environ.get('ONEDNN_MAX_CPU_ISA')),
               size=args.size, bs=args.bs, freeze_to=cut, repeats=args.repeats, steps=args.steps, results=res,
               ten_epochs=dict(sizes=sched, full_size_epochs=sum(res[str(s)]['ratio'] for s in sched)))
    for s, v in res.items():
        print(f"{s:>4} px: {v['step_s']*1000:6.0f} ms a step, {v['ratio']:.2f} of the full size's (pixels: {v['pixels']:.2f})")
    print(f"ten epochs of {sched}: the steps of {out['ten_epochs']['full_size_epochs']:.1f} full-size epochs")
    if args.json: Path(args.json).write_text(json.dumps(out, indent=1) + '\n')
    return out


if __name__ == '__main__':
    main(parser(__doc__).parse_args())
