"Training faults and guarantees that notebooks test badly: resume after Ctrl-C (also a real SIGINT to another process), crashes while saving, worker processes, determinism."
import copy, math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn

from flower_tl.core import UserError
from flower_tl.data import FlowerData, IMAGENET_STATS, LITE_STATS
from flower_tl.loop import LossNotFinite
from flower_tl.models import create_model, read_checkpoint, model_from_checkpoint, get_head, n_trainable
from flower_tl.lookahead import sgd_lookahead
from flower_tl.callbacks import DivergenceGuard
from flower_tl.train import Learner
from flower_tl.fine_tune import Recipe
from flower_tl.cache import FeatureCache
from tests.conftest import ROOT, ctrl_c_delivered

torch.set_num_threads(1)  # a small shared CPU: more threads only fight each other

def tiny_sample(root=None) -> Path:
    "A subset of the bundled sample (6 classes, 4 train and 2 valid images each), made once per process."
    import shutil, tempfile
    from flower_tl.photos import sample_path
    if root is None and not os.environ.get('FLOWER_TL_TINY'):
        import atexit
        root = tempfile.mkdtemp(prefix='tiny_flowers_')
        atexit.register(shutil.rmtree, root, ignore_errors=True)  # made here, so removed when this process ends
    root = Path(root or os.environ['FLOWER_TL_TINY'])
    if not (root/'valid').is_dir():
        for split, n in (('train', 4), ('valid', 2)):
            for d in sorted((sample_path()/split).iterdir()):
                (root/split/d.name).mkdir(parents=True, exist_ok=True)
                for f in sorted(d.glob('*.jpg'))[:n]: shutil.copy(f, root/split/d.name/f.name)
        os.environ['FLOWER_TL_TINY'] = str(root)  # subprocesses started by the tests reuse it
    return root

def make(path=None, loss_func=None, workers=0, arch='resnet18', size=32, stats=IMAGENET_STATS, opt_func=None, guard=True,
         amp=None, **attrs):
    "A fresh learner on a tiny real sample at a tiny size, with random (not pretrained) weights and seed 0, silent; `attrs` set on it (`bn_eval`, `max_cache_gb`)."
    data = FlowerData.from_folder(tiny_sample(), size=size, mean=stats[0], std=stats[1], bs=8, num_workers=workers)
    model = create_model(arch, data.n_classes, pretrained=False)
    l = Learner(data, model, loss_func=loss_func, opt_func=opt_func, path=path, seed=0, progress=False)
    if not guard: l.remove_cb(DivergenceGuard)
    if amp is not None: l.set_precision(amp=amp)
    for k, v in attrs.items():
        assert hasattr(l, k), k
        setattr(l, k, v)
    return l

def same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

def strip(history): return [{k: v for k, v in r.items() if k != 'time'} for r in history]

class InterruptAt:
    "Cross-entropy that raises KeyboardInterrupt (as Ctrl-C does) at its `n`-th call."
    def __init__(self, n): self.n, self.calls = n, 0
    def __call__(self, out, y):
        self.calls += 1
        if self.calls == self.n: raise KeyboardInterrupt
        return nn.functional.cross_entropy(out, y)

def calls_per_epoch(l): return len(l.data.train_dl) + len(l.data.valid_dl)

@pytest.mark.outcome
@pytest.mark.parametrize('workers', [0, 2])
def test_resume_after_interrupt_is_bitwise_identical(tmp_path, workers):
    "Ctrl-C in epoch 2, resume: the same weights and history as an uninterrupted run (which also shows two runs with one seed agree, workers or not)."
    n = 3 if workers == 0 else 2  # worker processes start at every epoch: slow on a small CPU
    a = make(workers=workers)   # the reference run keeps no checkpoints: less on the disk
    a.fit(n, lr=0.05, sched='one_cycle')
    b = make(tmp_path/'b', workers=workers)
    b.loss_func = InterruptAt(calls_per_epoch(b) + 3)  # in epoch 2
    with pytest.raises(KeyboardInterrupt): b.fit(n, lr=0.05, sched='one_cycle')
    last, best = read_checkpoint(tmp_path/'b'/'last.pth'), read_checkpoint(tmp_path/'b'/'best.pth')
    assert last['epoch'] == 1 and best['epoch'] == 1
    c = make(tmp_path/'b', workers=workers)
    c.fit(n, lr=0.05, sched='one_cycle', resume=tmp_path/'b'/'last.pth')
    assert same_weights(a, c)
    assert strip(c.history) == strip(a.history)
    assert c.train_stats.smooth_losses == a.train_stats.smooth_losses
    assert c.opt.state_dict()['lookahead']['steps'] == a.opt.state_dict()['lookahead']['steps']
    assert (c.best_epoch, c.best_acc) == (a.best_epoch, a.best_acc)

@pytest.mark.outcome
def test_fine_tune_resumes_in_stage_two(tmp_path):
    a = make()
    a.fine_tune(2, 0.05, freeze_epochs=2, recipe=Recipe(lr2=0.025))   # a fixed stage-2 rate: no range test to count loss calls of
    b = make(tmp_path/'b')
    n_frozen = len(b.data.train_dl) + len(b.data.valid_dl)  # cached stage 1: same number of loss calls
    b.loss_func = InterruptAt(2*n_frozen + calls_per_epoch(b) + 2)  # stage 2, second epoch
    with pytest.raises(KeyboardInterrupt): b.fine_tune(2, 0.05, freeze_epochs=2, recipe=Recipe(lr2=0.025))
    assert read_checkpoint(tmp_path/'b'/'last.pth')['train_state']['stage'] == 'unfrozen'
    c = make(tmp_path/'b')
    c.fine_tune(2, 0.05, freeze_epochs=2, recipe=Recipe(lr2=0.025), resume=tmp_path/'b'/'last.pth')
    assert same_weights(a, c) and strip(c.history) == strip(a.history)

@pytest.mark.outcome
def test_progressive_fit_resumes_bitwise(tmp_path):
    "Smaller photos first (`fit(sizes=...)`); Ctrl-C in epoch 2, resume: the same sizes, weights and history; other sizes are refused."
    kw = dict(lr=0.05, sched='one_cycle', sizes=[32, 48, 64])
    a = make(size=64); a.fit(3, **kw)
    assert [r['size'] for r in a.history] == [32, 48, 64]
    b = make(tmp_path/'b', size=64)
    b.loss_func = InterruptAt(calls_per_epoch(b) + 2)  # in epoch 2
    with pytest.raises(KeyboardInterrupt): b.fit(3, **kw)
    with pytest.raises(UserError, match=r'saved with sizes=\[32, 48, 64\]'):
        make(tmp_path/'b', size=64).fit(3, lr=0.05, sched='one_cycle', resume=tmp_path/'b'/'last.pth')
    c = make(tmp_path/'b', size=64); c.fit(3, **kw, resume=tmp_path/'b'/'last.pth')
    assert same_weights(a, c) and strip(c.history) == strip(a.history)

def test_stage_two_trains_with_its_own_optimizer():
    made = []
    def opt_func(groups, lr):
        made.append(sgd_lookahead(groups, lr)); return made[-1]
    l = make(opt_func=opt_func)
    l.fine_tune(1, 0.05, freeze_epochs=1, recipe=Recipe(lr2=0.025))   # lr2 given: no sweep-only optimizer for a range test
    assert len(made) == 2 and l.opt is made[1]
    head = {id(p) for p in get_head(l.model).parameters()}
    assert {id(p) for g in made[0].param_groups for p in g['params']} == head
    body = [p for g in made[1].param_groups if g['name'] == 'body' for p in g['params']]
    assert len(body) == len(list(l.model.parameters())) - 2
    assert all('momentum_buffer' in made[1].state[p] for p in body)   # stage 2's optimizer stepped the body
    assert not any(p in made[0].state for p in body)

def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    l = make(tmp_path)
    real = torch.save
    saves = []
    def crashing(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 3:  # epoch 2's last.pth (epoch 1 wrote best.pth and last.pth)
            f.write(b'half a checkpoint'); raise OSError('disk full')
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, 'save', crashing)
    with pytest.raises(OSError, match='disk full'): l.fit(2, lr=0.05)
    monkeypatch.setattr(torch, 'save', real)
    assert read_checkpoint(tmp_path/'last.pth')['epoch'] == 1
    model_from_checkpoint(tmp_path/'last.pth')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pth', 'last.pth']

@pytest.mark.outcome
def test_nan_loss_stops_with_epoch_and_iteration():
    "Without a guard (with one, see tests/test_robust.py) a nan loss stops training, saying where and what to try."
    l = make(guard=False)
    class NanAt(InterruptAt):
        def __call__(self, out, y):
            self.calls += 1
            loss = nn.functional.cross_entropy(out, y)
            return loss*float('nan') if self.calls == self.n else loss
    l.loss_func = NanAt(calls_per_epoch(l) + 3)
    with pytest.raises(LossNotFinite, match='epoch 2, iteration 3') as e: l.fit(2, lr=0.05)
    assert isinstance(e.value, UserError) and 'lower learning rate' in str(e.value)
    assert all(torch.isfinite(p).all() for p in l.model.parameters())

@pytest.mark.outcome
def test_huge_learning_rate_is_caught():
    l = make()
    with pytest.raises(LossNotFinite, match='lower learning rate'): l.fit(3, lr=1e12)

def test_bn_statistics_stay_frozen_with_bn_eval():
    l = make(arch='efficientnet_lite0', stats=LITE_STATS)
    assert l.bn_eval  # the default for efficientnet_lite0
    bn = l.model.bn1
    before = bn.running_mean.clone()
    l.fit(1, lr=0.01)
    assert torch.equal(bn.running_mean, before) and not torch.equal(bn.weight, torch.ones_like(bn.weight))
    l2 = make(arch='efficientnet_lite0', stats=LITE_STATS, bn_eval=False)
    l2.fit(1, lr=0.01)
    assert not torch.equal(l2.model.bn1.running_mean, before)

def test_frozen_fit_trains_only_the_head():
    l = make()
    l.freeze(bn=True)
    body = {k: v.clone() for k, v in l.model.state_dict().items() if not k.startswith('fc.')}
    l.fit(2, lr=0.05)
    assert n_trainable(l.model) == 512*6 + 6
    assert all(torch.equal(v, l.model.state_dict()[k]) for k, v in body.items())  # BN buffers too: body in eval mode

def test_resume_errors(tmp_path):
    l = make(tmp_path)
    l.fit(1, lr=0.05)
    with pytest.raises(UserError, match='same number of epochs'): make().fit(3, lr=0.05, resume=tmp_path/'last.pth')
    f = make(); f.freeze(bn=True)
    with pytest.raises(UserError, match='unfreeze'): f.fit(1, lr=0.05, resume=tmp_path/'last.pth')
    with pytest.raises(UserError, match='cannot resume'): make().fit(1, lr=0.05, resume=tmp_path/'best.pth')
    with pytest.raises(UserError, match='holds a resnet18'): make(arch='resnet34').fit(1, lr=0.05, resume=tmp_path/'last.pth')

def test_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self): return (print, ('this would have run',))
    torch.save({'model': Evil()}, tmp_path/'evil.pth')
    with pytest.raises(UserError, match='evil.pth'): read_checkpoint(tmp_path/'evil.pth')

def test_download_failure_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def offline(*a, **k): raise URLError('no network')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', offline)
    with pytest.raises(UserError) as e: create_model('resnet18')
    msg = str(e.value)
    assert 'resnet18-' in msg and str(tmp_path) in msg and 'weights=' in msg and 'no network' in msg

def test_data_and_model_must_agree(tmp_path):
    import torchvision
    data = FlowerData.from_folder(tiny_sample(), size=32, bs=16, num_workers=0)
    plain = torchvision.models.resnet18(num_classes=6)  # no .arch: fine to train, but checkpoints need create_model
    Learner(data, plain, progress=False).fit(1, lr=0.01)
    with pytest.raises(UserError, match='create_model'): Learner(data, plain, path=tmp_path)
    with pytest.raises(UserError, match='6 classes'): Learner(data, create_model('resnet18', 5, pretrained=False))
    with pytest.warns(UserWarning, match='normalised'): Learner(data, create_model('efficientnet_lite0', 6, pretrained=False))

SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from tests.test_train import make
    make({path!r}).fit({epochs}, lr=0.05, sched='one_cycle')
""")

def test_real_sigint_leaves_loadable_checkpoints_and_resumes(tmp_path):
    "Ctrl-C for real: SIGINT to a training process as soon as it has written a checkpoint."
    epochs, run = 3, tmp_path/'run'
    code = SCRIPT.format(root=str(ROOT), path=str(run), epochs=epochs)
    p = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=ctrl_c_delivered)
    deadline = time.time() + 300
    while not (run/'last.pth').exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0 or read_checkpoint(run/'last.pth')['epoch'] == epochs, err
    last = read_checkpoint(run/'last.pth')
    assert 1 <= last['epoch'] <= epochs and read_checkpoint(run/'best.pth')['epoch'] <= last['epoch']
    assert not [f for f in run.iterdir() if f.name.endswith('.tmp')]
    a = make(); a.fit(epochs, lr=0.05, sched='one_cycle')
    c = make(run); c.fit(epochs, lr=0.05, sched='one_cycle', resume=run/'last.pth')
    assert same_weights(a, c) and strip(c.history) == strip(a.history)

def test_bf16_and_channels_last_on_cpu():
    "The CUDA speed settings, exercised on the CPU: bfloat16 autocast and channels-last tensors."
    l = make(amp='bf16')
    assert l.channels_last   # the default on the CPU
    assert l.amp_dtype == torch.bfloat16 and l.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    h = l.fit(1, lr=0.05)
    assert math.isfinite(h[0]['trn_loss']) and all(p.dtype == torch.float32 for p in l.model.parameters())
    with pytest.raises(UserError, match='bf16'): make(amp='fp16')

def test_lr_find_on_the_whole_model_leaves_everything_as_it_was():
    l = make()
    l.fit(1, lr=0.05)
    before = {k: v.clone() for k, v in l.model.state_dict().items()}
    opt_before = copy.deepcopy(l.opt.state_dict())
    gen = l.data.train_dl.generator.get_state()
    res = l.lr_find(num_it=10)
    assert len(res.lrs) > 0
    assert all(torch.equal(v, l.model.state_dict()[k]) for k, v in before.items())
    after = l.opt.state_dict()
    assert all(torch.equal(opt_before['state'][i]['momentum_buffer'], after['state'][i]['momentum_buffer'])
               for i in opt_before['state'])
    assert torch.equal(gen, l.data.train_dl.generator.get_state())

@pytest.mark.outcome
def test_partial_fine_tune_on_cached_inputs_resumes_bitwise(tmp_path):
    "Stage 2 trains the last stages on cached inputs of the frozen ones; Ctrl-C in it, resume: the same weights and history."
    kw = dict(recipe=Recipe(freeze_to=-3, clean=True, views=1, lr2=0.025))   # resnet18: the last block, the pooling and the head train
    a = make()
    a.fine_tune(2, 0.05, freeze_epochs=1, **kw)
    assert [r['stage'] for r in a.history] == ['frozen', 'partial', 'partial'] and a.frozen_stages == 8
    assert a.cache.last.cut == 8 and a.cache.last.train[0].shape[:2] == (2, len(a.data.train_ds))
    b = make(tmp_path/'b')
    n = len(b.data.train_dl) + len(b.data.valid_dl)   # both stages cached: the same number of loss calls per epoch
    b.loss_func = InterruptAt(2*n + 2)   # stage 2, second epoch
    with pytest.raises(KeyboardInterrupt): b.fine_tune(2, 0.05, freeze_epochs=1, **kw)
    ts = read_checkpoint(tmp_path/'b'/'last.pth')['train_state']
    assert (ts['stage'], ts['frozen_stages'], ts['clean']) == ('partial', 8, True)
    c = make(tmp_path/'b')
    c.fine_tune(2, 0.05, freeze_epochs=1, resume=tmp_path/'b'/'last.pth', **kw)
    assert same_weights(a, c) and strip(c.history) == strip(a.history)
    d = make(tmp_path/'d')   # resuming with another split is refused, with what to do
    with pytest.raises(UserError, match='frozen stages'):
        d.fine_tune(2, 0.05, freeze_epochs=1, resume=tmp_path/'b'/'last.pth', recipe=Recipe(freeze_to=-4, clean=True))

def test_cache_size_limit_falls_back_to_the_slow_path():
    "A frozen prefix whose outputs would take more than max_cache_gb is trained the slow way, with the same stages frozen."
    l = make(max_cache_gb=1e-9)
    l.freeze_to(-3)
    l.fit(1, lr=0.05)
    assert l.cache.last is None and l.history[-1]['stage'] == 'partial'
    with pytest.raises(UserError, match='freeze_to'): make().fit(1, lr=0.05, cache=True)

def test_fine_tune_with_freeze_to_reads_the_images_once(monkeypatch):
    "Stage 1's pooled features are derived from stage 2's cache: one pass over the images per split, not two."
    l = make()
    calls = []
    real = FeatureCache.features
    monkeypatch.setattr(FeatureCache, 'features', lambda self, split, *a, **k: calls.append(split) or real(self, split, *a, **k))
    l.fine_tune(1, 0.05, freeze_epochs=1, recipe=Recipe(freeze_to=-3, views=0, clean=True, flip=True))
    assert calls == ['train', 'valid'] and sorted(l.cache.entries) == [8, 10]
    ts = l.history[-1]
    assert ts['stage'] == 'partial'
