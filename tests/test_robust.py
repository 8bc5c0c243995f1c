"""Training that never fails silently: the README's own Python example, the divergence guard from the command line,
one test per trap that could pass silently, and every recipe run on this CPU."""
import json, os, re, subprocess, sys, textwrap

import pytest
import torch

from tests.conftest import ROOT, run_cli
from flower_tl.data import FlowerData
from flower_tl.photos import sample_path
from flower_tl.models import read_checkpoint

SAMPLE = sample_path()
FAST = ['--workers', '0', '--device', 'cpu']

def readme_python() -> list:
    "The code blocks of the README's 'From Python' section, verbatim: the example, then the callback."
    text = (ROOT/'README.md').read_text()
    section = text.split('## From Python', 1)[1].split('\n## ', 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)

@pytest.mark.outcome
def test_readme_python_example(tmp_path):
    "The README's example as a user would paste it: well above chance (6 classes); stage 2 trains at a rate >= 1e-4 and ends no worse than the head."
    check = textwrap.dedent("""
        import json, pathlib
        pathlib.Path('result.json').write_text(json.dumps(dict(history=learn.history, status=learn.status,
                                                               valid=learn.validate(), stage_lrs=learn.stage_lrs)))
        """)
    script = tmp_path/'example.py'
    example, callback = readme_python()
    script.write_text(example + check + callback + "\nprint('the callback trained', learn.history[-1]['epoch'])\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=900,
                       env=dict(os.environ, MPLBACKEND='Agg'))
    assert r.returncode == 0 and 'the callback trained' in r.stdout, r.stderr[-3000:]
    res = json.loads((tmp_path/'result.json').read_text())
    final = res['history'][-1]
    assert final['val_acc'] >= 0.9, res['history']
    assert res['status'] == 'ok', res
    s = res['stage_lrs']
    assert s['lr2'] >= 1e-4 and ('too short' in s['lr2_by'] or s['lr2_by'] == 'range test'), s   # a rate chosen for a reason
    head = max((h for h in res['history'] if h['stage'] == 'frozen'), key=lambda h: h['val_acc'])
    loss, acc = res['valid']                                  # the model the example ends with
    assert loss <= head['val_loss'] + 1e-6 and acc >= head['val_acc'] - 1e-9, (res['valid'], head, s)

def train(out, *args):
    return run_cli('train', '--data', SAMPLE, '--arch', 'efficientnet_lite0', '--out', out, *FAST, *args)

@pytest.mark.outcome
def test_divergence_is_never_a_silent_success(tmp_path):
    "An absurd stage-2 rate: the guard reloads the best weights and cuts the rate; the run recovers or says 'diverged' and exits 1."
    out = tmp_path/'run'
    r = train(out, '--size', '64', '--freeze-epochs', '3', '--epochs', '3', '--lr2', '30')
    m = json.loads((out/'metrics.json').read_text())
    assert m['guard'], (m['history'], r.stdout)                       # it stepped in
    assert all({'stage', 'val_acc', 'epoch'} <= set(h) for h in m['history'])
    if m['status'] == 'diverged': assert r.returncode == 1 and 'diverged' in r.stdout.splitlines()[-1], r.stdout
    else: assert m['status'] == 'recovered' and r.returncode == 0 and 'recovered' in r.stdout.splitlines()[-1], r.stdout
    # last.pth holds recovered weights: as good as the best epoch of the head, not a broken model
    head = max(h['val_acc'] for h in m['history'] if h['stage'] == 'frozen')
    ev = run_cli('evaluate', '--checkpoint', out/'last.pth', '--data', SAMPLE, '--json', tmp_path/'ev.json', '--device', 'cpu')
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads((tmp_path/'ev.json').read_text())['accuracy'] >= head - 2/24, m['history']

def test_freeze_is_freeze_to_minus_one():
    "One BatchNorm default: Learner.freeze() freezes what Learner.freeze_to(-1) freezes, so the head trains on the cache."
    from flower_tl.train import Learner
    from flower_tl.models import arch_info, create_model, n_stages
    info = arch_info('efficientnet_lite0')
    data = FlowerData.from_folder(size=64, mean=info['mean'], std=info['std'], bs=16, num_workers=0)
    a = Learner(data, create_model('efficientnet_lite0', 6, pretrained=False), progress=False).freeze()
    b = Learner(data, create_model('efficientnet_lite0', 6, pretrained=False), progress=False).freeze_to(-1)
    assert [p.requires_grad for p in a.model.parameters()] == [p.requires_grad for p in b.model.parameters()]
    assert a.frozen_stages == b.frozen_stages == n_stages(a.model) - 1 > 0   # the body frozen: all but the head

def test_lr_find_command_sweeps_what_train_sweeps(tmp_path):
    "`flower_tl lr-find` and `train --lr-find` run the same range test (loss, cache, data), so they suggest the same rate."
    from flower_tl.cli import lr_find_job, train_job
    kw = dict(arch='efficientnet_lite0', size=64, num_workers=0, device='cpu', progress=False)
    res = lr_find_job(SAMPLE, plot=tmp_path/'lr.png', **kw)
    run = train_job(SAMPLE, lr_find=True, freeze_epochs=1, epochs=0, out=tmp_path/'run', **kw)
    assert run['metrics']['lr'] == res.suggestion, (run['metrics']['lr'], res)
    assert run['metrics']['label_smoothing'] == 0.1   # the CPU recipe's loss, in both

@pytest.mark.outcome
@pytest.mark.parametrize('name,freeze_to,cache,body_div,stage2', [
    ('cpu', 6, False, 10.0, 'partial'), ('quick', -4, True, 2.0, 'partial'),
    ('gpu', None, True, 10.0, 'unfrozen'), ('long', None, False, 10.0, 'unfrozen')])
def test_every_recipe_on_the_cpu(tmp_path, name, freeze_to, cache, body_div, stage2):
    "Every recipe on this CPU, shortened: the CPU recipe (the late stages on photos), quick (the last block on its cache), gpu (the classic recipe) and long (the whole network after cpu's head): no collapse."
    out = tmp_path/'run'
    r = train(out, '--recipe', name, '--size', '64', '--freeze-epochs', '3', '--epochs', '2')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert (m['freeze_to'], m['cache'], m['body_div']) == (freeze_to, cache, body_div), m
    assert m['lr2'] == pytest.approx(m['lr']*m['lr2_frac']) and 'too short to pay for a range test' in m['lr2_by'], m
    # the CPU recipes' stage 2 starts at most at twice (cpu) or once (quick, long) their head's rate (0.05, not gpu's
    # 0.01): on these 96 photos, 3 steps an epoch, a first epoch of much of the network can overshoot; the guard must
    # catch it and end on weights at least as good as the head's
    assert m['status'] in (('ok',) if name == 'gpu' else ('ok', 'recovered')), (m['status'], m['guard'])
    stages = [h['stage'] for h in m['history']]
    assert stages in (['frozen']*3 + [stage2]*2, ['frozen']*3 + [stage2]), stages   # Stage2Watch may end stage 2 early
    head = max(h['val_acc'] for h in m['history'] if h['stage'] == 'frozen')
    assert m['history'][-1]['val_acc'] >= head - 1/24 or m.get('stage2_note'), (m['history'], m.get('stage2_note'))
    assert len(stages) == 5 or 'stopped after epoch 4' in m['stage2_note'], m.get('stage2_note')

class NanOnce:
    "Cross-entropy, except for the call numbered `at`, whose loss is nan (fault injection: one batch blows up)."
    def __init__(self): self.calls, self.at = 0, None
    def __call__(self, out, y):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss*float('nan') if self.calls == self.at else loss

@pytest.mark.outcome
def test_guard_recovers_from_a_nan_in_mid_epoch():
    "A nan training loss in the middle of an epoch: the best weights come back, the rate is cut, the schedule goes on."
    from flower_tl.train import Learner
    from flower_tl.models import arch_info, create_model
    from flower_tl.loop import Callback
    from flower_tl.callbacks import LRSchedule
    class KeepSchedule(Callback):
        "Keep the fit's scheduler, which goes with the fit's `LRSchedule`."
        def after_fit(self): self.sched = next(cb for cb in self.learn.cbs if isinstance(cb, LRSchedule)).sched
    info = arch_info('efficientnet_lite0')
    data = FlowerData.from_folder(size=64, mean=info['mean'], std=info['std'], bs=16, num_workers=0)
    loss = NanOnce()
    learn = Learner(data, create_model('efficientnet_lite0', 6), loss_func=loss, seed=0, progress=False)
    learn.freeze().fit(2, 0.05, sched='one_cycle')
    head = learn.best_acc
    loss.at = loss.calls + 3                        # the third training step of the next fit
    kept = KeepSchedule()
    h = learn.fit(3, 0.05, sched='one_cycle', cbs=[kept])
    assert [r.get('guard') for r in h] == ['recovered', None, None], h
    assert 'the loss became nan' in learn.guard_log[0]['reason'] and learn.status == 'recovered'
    assert kept.sched.last_epoch == 3*len(data.train_dl)   # the one-cycle schedule ran to its end
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert h[-1]['val_acc'] >= head - 2/24, (head, h)

def test_time_budget(tmp_path):
    "`--time` prints the plan before training, fits the epochs to the budget, and refuses a budget nothing fits in."
    import time
    out = tmp_path/'run'
    t = time.time()
    r = train(out, '--size', '64', '--freeze-epochs', '3', '--epochs', '2', '--time', '3m')
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    plan = next(i for i, l in enumerate(lines) if l.startswith('time budget 3.0 min; plan:'))
    assert plan < next(i for i, l in enumerate(lines) if l.startswith('Stage 1'))
    m = json.loads((out/'metrics.json').read_text())
    assert m['time_budget'] == 180 and m['seconds'] <= 180 and time.time() - t < 300, m['seconds']
    r = train(tmp_path/'short', '--size', '64', '--time', '1s')
    assert r.returncode == 2 and 'is too short' in r.stderr and 'give at least' in r.stderr, r.stderr
    assert not (tmp_path/'short').exists()
    r = train(tmp_path/'bad', '--time', 'soon')
    assert r.returncode == 2 and "--time: 'soon' is not a duration" in r.stderr, r.stderr

def test_stage2_rate_by_length():
    "A stage 2 shorter than `lr2_cap_steps` skips its range test for `lr2_frac` of stage 1's rate; a long enough one measures, within `lr2_cap` and the floor."
    import flower_tl.fine_tune as ft
    from flower_tl.train import Learner
    from flower_tl.models import arch_info, create_model
    info = arch_info('efficientnet_lite0')
    def stage2(min_steps):
        "Stage 2's rates, and its range test if one ran, with `lr2_cap_steps=min_steps`."
        r = ft.recipe('cpu', 'efficientnet_lite0').replace(freeze_epochs=2, epochs=1, lr=0.01, lr2_cap_steps=min_steps)
        data = FlowerData.from_folder(SAMPLE, size=64, mean=info['mean'], std=info['std'], bs=r.bs, num_workers=0)
        learn = Learner(data, create_model('efficientnet_lite0', data.n_classes), loss_func=r.loss_func(), seed=0, progress=False)
        learn.fine_tune(recipe=r)
        return r, getattr(learn, 'stage2_lr_find', None), learn.stage_lrs
    r, sweep, short = stage2(10**6)                        # 3 steps: no range test, the recipe's fraction
    assert sweep is None and short['lr2'] == pytest.approx(r.lr*r.lr2_frac) and short['lr2_cap'] == 1.0, short
    assert "a stage 2 of 3 steps is too short to pay for a range test (1000000 or more)" in short['lr2_by'], short
    r, sweep, long = stage2(1)                             # "long enough": measured, up to lr2_cap times stage 1's rate
    assert sweep is not None and long['lr2_cap'] == r.lr2_cap, long
    assert r.lr/100 <= long['lr2'] <= r.lr2_cap*r.lr, long
    assert long['lr2_by'] == 'range test' or 'the range test allowed' in long['lr2_by'] or 'blew up' in long['lr2_by'], long
    print(f"stage 1 at {r.lr}: stage 2 at {short['lr2']:.3g} (3 steps: {short['lr2_by']}), {long['lr2']:.3g} ({long['lr2_by']})")
