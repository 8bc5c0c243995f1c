"""Does this CPU run bfloat16 natively? The frozen stages in bf16 (`learn.set_precision(frozen='bf16')`, `train --frozen-bf16`)
against float32, side by side in one process.

Three kinds of work of the CPU recipe, EfficientNet-Lite0 at `--size` px, batch `--bs`, channels-last, 2 threads:

- `prefix`: the frozen stages of stage 2 (before `freeze_to`, 6), forward only, no gradients: what bf16 speeds up;
- `step`: a whole stage-2 training step on photos: the frozen stages forward, then the trainable ones forward and
  backward (float32 in both cases) and an SGD + Lookahead step;
- `eval`: the whole network forward, no gradients: the feature pass of stage 1 and the validation pass.

Each takes turns in float32 and bf16, `--repeats` times; each figure is the median of the repeats, each repeat the
mean of `--steps` calls after two warm-up calls. Synthetic batches: the model's speed, not the loader's. The ratio
float32 / bf16 above 1 means bf16 is faster. On a CPU without native bf16 (no AMX, or oneDNN held to AVX2 with
`ONEDNN_MAX_CPU_ISA=AVX2`) bf16 runs many times slower: use `--frozen-bf16` only where this says it pays.

    python bench/bench_bf16.py --json bench/results/bf16_cpu.json
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/bench_bf16.py --repeats 2 --steps 1
"""
import argparse, json, os, platform, statistics, time
from pathlib import Path

import torch

from flower_tl.core import autocast
from flower_tl.data import FlowerData
from flower_tl.fine_tune import LATE_STAGES
from flower_tl.models import arch_info, create_model, split_at
from flower_tl.train import FrozenPrefix, Learner


def cpu_flags() -> dict:
    "Which bf16 instructions the processor reports (Linux), and whether oneDNN is held to an older instruction set."
    try: info = {k.strip(): v.strip() for k, _, v in (l.partition(':') for l in open('/proc/cpuinfo').read().split('\n\n')[0].splitlines())}
    except OSError: info = {}
    flags = set(info.get('flags', '').split())
    return dict(amx_bf16='amx_bf16' in flags, avx512_bf16='avx512_bf16' in flags,
                onednn_max_cpu_isa=os.environ.get('ONEDNN_MAX_CPU_ISA'), model=info.get('model name') or platform.processor() or None)


def main(args) -> dict:
    learn, x, y = stage2_learner(args)
    model, dev = learn.model, learn.device
    fwd = {'fp32': model, 'bf16': FrozenPrefix(*split_at(model, learn.frozen_stages), dev, torch.bfloat16)}
    prefix = split_at(model, learn.frozen_stages)[0]

    def step(kind):
        learn.opt.zero_grad(set_to_none=True); learn.loss_func(fwd[kind](x), y).backward(); learn.opt.step()
    def pre(kind):
        with torch.no_grad(), autocast(dev, None if kind == 'fp32' else torch.bfloat16): prefix(x)
    def ev(kind):
        with torch.no_grad(), autocast(dev, None if kind == 'fp32' else torch.bfloat16): model(x)
    work = dict(prefix=pre, step=step, eval=ev)
    times = {(w, k): [] for w in work for k in ('fp32', 'bf16')}
    for w, f in work.items():
        for k in ('fp32', 'bf16'): f(k); f(k)
    for _ in range(args.repeats):
        for w, f in work.items():
            for k in ('fp32', 'bf16'):
                t = time.perf_counter()
                for _ in range(args.steps): f(k)
                times[(w, k)].append((time.perf_counter() - t)/args.steps)
    res = {w: dict(fp32_s=statistics.median(times[(w, 'fp32')]), bf16_s=statistics.median(times[(w, 'bf16')])) for w in work}
    for v in res.values(): v['ratio'] = v['fp32_s']/v['bf16_s']
    out = dict(machine=dict(cpu_flags(), threads=args.threads, torch=torch.__version__), size=args.size, bs=args.bs,
               freeze_to=learn.frozen_stages, repeats=args.repeats, steps=args.steps, results=res)
    for w, v in res.items():
        print(f"{w:>6}: float32 {v['fp32_s']*1000:7.0f} ms, bf16 {v['bf16_s']*1000:7.0f} ms a batch: "
              f"bf16 {'%.2fx faster' % v['ratio'] if v['ratio'] >= 1 else '%.2fx slower' % (1/v['ratio'])}")
    print(out['machine'])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + '\n')
    return out


def stage2_learner(args) -> tuple:
    "The CPU recipe's stage 2 as these benchmarks time it: `(learner, images, targets)`, Lite0 frozen up to `LATE_STAGES`, its optimizer built, in training mode, one synthetic channels-last batch of `args.bs` at `args.size` px."
    torch.set_num_threads(args.threads); torch.manual_seed(0)
    arch, info = 'efficientnet_lite0', arch_info('efficientnet_lite0')
    data = FlowerData.from_folder(size=args.size, mean=info['mean'], std=info['std'], bs=args.bs, num_workers=0)
    learn = Learner(data, create_model(arch, data.n_classes), device='cpu', progress=False)
    learn.freeze_to(LATE_STAGES[arch], bn=True); learn.create_opt(1e-3, 1e-4); learn._train_mode()
    x = torch.randn(args.bs, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    return learn, x, torch.randint(0, data.n_classes, (args.bs,))

def parser(doc:str) -> argparse.ArgumentParser:
    "The options of a side-by-side timing of the CPU recipe's work (this script's, and `bench_fold.py`'s)."
    p = argparse.ArgumentParser(description=doc.split('\n')[0])
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--json', default=None, help="also write the figures here")
    return p


if __name__ == '__main__':
    main(parser(__doc__).parse_args())
