"The LR range test with what notebooks do badly: worker processes, an interrupted sweep, the file system."
import copy, inspect, os, random, tempfile

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flower_tl.clr import lr_find

torch.set_num_threads(1)


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def data(n=64):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 10, 10, generator=g), torch.randint(0, 3, (n,), generator=g))


def loader(ds, seed=1, **kw):
    return DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed), **kw)


def state(model, opt):
    return (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), [m.training for m in model.modules()],
            torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())


def same(a, b):
    if isinstance(a, torch.Tensor): return torch.equal(a, b)
    if isinstance(a, np.ndarray): return np.array_equal(a, b)
    if isinstance(a, dict): return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize('persistent', [False, True])
def test_worker_loader_continues_as_if_untouched(persistent):
    "With worker processes, the loader's next epoch is the one it would have been without the sweep."
    ds = data()
    swept, twin = (loader(ds, num_workers=2, persistent_workers=persistent) for _ in range(2))
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = state(model, opt)
    res = lr_find(model, swept, nn.CrossEntropyLoss(), opt, num_it=20, show_progress=False)
    assert len(res.lrs) == 20
    assert same(before, state(model, opt))
    if persistent: assert swept._iterator is None  # the sweep's workers are not left running for the next epoch
    for (xa, ya), (xb, yb) in zip(swept, twin): assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_interrupt_restores_everything():
    "Ctrl-C in the middle of a sweep: the model, optimizer and RNGs are put back before the interrupt goes on."
    model, dl = net(), loader(data())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for x, y in dl:  # momentum buffers to protect
        opt.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); opt.step()
    model.train(); model[1].eval()
    before, gen = state(model, opt), dl.generator.get_state()
    calls = []
    def loss(out, y):
        calls.append(1)
        if len(calls) == 12: raise KeyboardInterrupt
        return nn.functional.cross_entropy(out, y)
    with pytest.raises(KeyboardInterrupt): lr_find(model, dl, loss, opt, end_lr=100, show_progress=False)
    assert len(calls) == 12
    assert same(before, state(model, opt)) and torch.equal(gen, dl.generator.get_state())


@pytest.mark.filterwarnings('ignore:lr_find. the loss was still falling')   # 10 steps need not reach the turn
def test_nothing_written_to_disk(tmp_path, monkeypatch):
    "The state is kept in memory: no checkpoint file appears in the working folder or the temp folder."
    monkeypatch.chdir(tmp_path)
    tmp = tmp_path/'tmp'; tmp.mkdir()
    monkeypatch.setenv('TMPDIR', str(tmp))
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp))   # tempfile caches its folder: the variable alone is too late
    assert tempfile.gettempdir() == str(tmp)
    def no_save(*args, **kwargs): raise AssertionError("lr_find saved something with torch.save")
    monkeypatch.setattr(torch, 'save', no_save)
    model, dl = net(), loader(data())
    lr_find(model, dl, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01), num_it=10,
            show_progress=False)
    own = [f for f in os.listdir(tmp) if not f.startswith('torchinductor_')]   # torch's compile cache, made on first use in a process
    assert sorted(os.listdir(tmp_path)) == ['tmp'] and own == []

def test_fall_is_the_rule_the_benchmark_chose():
    "`flower_tl.clr.fall` gives the rate `bench/lr_suggest.py` scored as 'fall 0.8', on every range test it stored."
    import json, sys
    from tests.conftest import ROOT
    from flower_tl.clr import fall, lr_find
    sys.path.insert(0, str(ROOT/'bench'))
    try: import lr_suggest
    finally: sys.path.remove(str(ROOT/'bench'))
    stored = json.loads((ROOT/'bench'/'results'/'lr_suggest.json').read_text())
    curves = [s['lr_find'] for sc in stored.values() for s in sc['seeds'].values()]
    assert len(curves) == 32   # the 11 scenarios of the study (29) and the CPU recipe's stage 1 (3)
    for c in curves:
        lrs, sm = lr_suggest._ftl_cut(c['lrs'], c['losses'])
        assert fall(lrs, sm) == lr_suggest.RULES['fall 0.8'][0](c['lrs'], c['losses'])
    assert inspect.signature(lr_find).parameters['suggest'].default == 'fall'
