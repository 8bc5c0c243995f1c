"""The frozen stages with BatchNorm folded into their convolutions (`flower_tl.models.fold_bn`) against the same
stages as the model holds them, side by side in one process, in float32.

Three kinds of work of the CPU recipe, EfficientNet-Lite0 at `--size` px, batch `--bs`, channels-last:

- `prefix`: the stages stage 2 keeps frozen (before `freeze_to`, 6), forward only, no gradients;
- `body`: the whole body, forward only: stage 1's feature pass over every photo;
- `step`: a whole stage-2 training step on photos: the frozen stages forward, then the trainable ones forward and
  backward, and an SGD + Lookahead step (`FrozenPrefix` with the folded copy, or with the model's own stages);
- `predict`: the whole network, forward, on a batch of 8 (the CPU default of `flower_tl predict` and `evaluate`,
  whose `Predictor.net` is the folded model).

Each takes turns, plain and folded, `--repeats` times; each figure is the median of the repeats, each repeat the
mean of `--steps` calls after two warm-up calls. Synthetic batches: the model's speed, not the loader's. A ratio
above 1 means the folded stages are faster. The folded and plain outputs are compared too.

    python bench/bench_fold.py --json bench/results/fold_cpu.json
    OMP_NUM_THREADS=1 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/bench_fold.py --threads 1 --repeats 3
"""
import json, os, statistics, time
from pathlib import Path

import torch

from bench_bf16 import parser, stage2_learner   # the same options and set-up
from flower_tl.models import fold_bn, keep_modes, n_stages, split_at
from flower_tl.train import FrozenPrefix


def main(args) -> dict:
    learn, x, y = stage2_learner(args)
    model, dev, cut = learn.model, learn.device, learn.frozen_stages
    prefix, suffix = split_at(model, cut)
    body = split_at(model, n_stages(model) - 1)[0]
    plain = dict(prefix=prefix, body=body.eval(), step=FrozenPrefix(prefix, suffix, dev, None), predict=model)
    folded = dict(prefix=fold_bn(prefix), body=fold_bn(body), step=FrozenPrefix(fold_bn(prefix), suffix, dev, None),
                  predict=fold_bn(model))
    learn._train_mode()   # `body.eval()` above put the trainable stages in eval mode too
    with torch.no_grad():
        err = {w: ((plain[w](x) - folded[w](x)).abs().max()/plain[w](x).abs().max()).item() for w in ('prefix', 'body')}
    x8 = x[:8]

    def run(w, kind):
        m = (plain if kind == 'plain' else folded)[w]
        if w == 'step':
            learn.opt.zero_grad(set_to_none=True); learn.loss_func(m(x), y).backward(); learn.opt.step()
        elif w == 'predict':
            with torch.no_grad(), keep_modes(model):
                model.eval(); m(x8)
        else:
            with torch.no_grad(): m(x)
    times = {(w, k): [] for w in plain for k in ('plain', 'folded')}
    for w in plain:
        for k in ('plain', 'folded'): run(w, k); run(w, k)
    for _ in range(args.repeats):
        for w in plain:
            for k in ('plain', 'folded'):
                t = time.perf_counter()
                for _ in range(args.steps): run(w, k)
                times[(w, k)].append((time.perf_counter() - t)/args.steps)
    res = {w: dict(plain_s=statistics.median(times[(w, 'plain')]), folded_s=statistics.median(times[(w, 'folded')])) for w in plain}
    for w, v in res.items():
        v['ratio'] = v['plain_s']/v['folded_s']
        if w in err: v['max_rel_diff'] = err[w]
    out = dict(machine=dict(threads=args.threads, torch=torch.__version__, onednn_max_cpu_isa=os.environ.get('ONEDNN_MAX_CPU_ISA')),
               size=args.size, bs=args.bs, freeze_to=cut, repeats=args.repeats, steps=args.steps, results=res)
    for w, v in res.items():
        print(f"{w:>6}: plain {v['plain_s']*1000:7.0f} ms, folded {v['folded_s']*1000:7.0f} ms a batch: {v['ratio']:.2f}x"
              + (f" (outputs differ by {v['max_rel_diff']:.1e} of their largest value)" if 'max_rel_diff' in v else ''))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + '\n')
    return out


if __name__ == '__main__':
    main(parser(__doc__).parse_args())
