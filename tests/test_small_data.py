"""Stage 2 on small data: it trains at a rate chosen for a reason, never near zero, and never leaves the model worse
than the head it started from. `flower_tl train`'s small-data path keeps that promise here, the README's Python example
in tests/test_robust.py."""
import json

import pytest

from flower_tl.fine_tune import Stage2Watch
from tests.conftest import run_cli


def head_best(history):
    "The head's best epoch: the one `Stage2Watch` would go back to."
    head = [r for r in history if r['stage'] == 'frozen']
    return max(head, key=lambda r: r['val_acc'])


@pytest.mark.outcome
def test_cli_small_data(tmp_path):
    "`flower_tl train` with its defaults on the bundled sample: the rule's rate for a short stage 2, and no harm done."
    from flower_tl.photos import sample_path
    r = run_cli('train', '--data', sample_path(), '--size', 64, '--freeze-epochs', 3, '--epochs', 2, '--device', 'cpu',
                '--out', tmp_path/'run', env=dict(OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['lr2'] >= 1e-4 and m['lr2'] == pytest.approx(m['lr']*m['lr2_frac']), m['lr2_by']
    assert 'too short to pay for a range test' in m['lr2_by'] and 'too short' in r.stdout
    best, last = head_best(m['history']), m['history'][-1]
    assert last['val_loss'] <= best['val_loss'] or 'head' in (m.get('stage2_note') or ''), (last, best, m.get('stage2_note'))


class FakeLearn:
    "The few attributes `Stage2Watch` reads, and the state it may load back."
    def __init__(self, history, best_epoch, size=64):
        self.history, self.best_epoch, self.verbose, self.stage_lrs = history, best_epoch, False, {}
        self.best_acc = max(r['val_acc'] for r in history)
        self.best_state, self.loaded = {'w': 'head'}, None
        self.data = type('D', (), dict(size=size))()
        self.model = type('M', (), dict(load_state_dict=lambda m, sd: setattr(self, 'loaded', sd)))()


def test_stage2_watch_rules():
    "An epoch at full size 5 points down stops stage 2; at a smaller size only a collapse does; an end worse than the head restores it."
    head = [dict(epoch=1, stage='frozen', val_acc=0.90, val_loss=0.40)]
    def watch(records, size=64):
        l = FakeLearn(list(head), 1, size); w = Stage2Watch(); w.learn = l; w.before_fit()
        for r in records:
            l.history.append(r); l.record = r; w.after_epoch()
            if w.stop: break
        w.after_fit()
        return w, l
    w, l = watch([dict(epoch=2, stage='unfrozen', val_acc=0.84, val_loss=0.5)])
    assert w.stop and 'stopped after epoch 2' in l.stage_lrs['stage2_note'] and l.loaded == {'w': 'head'}
    w, l = watch([dict(epoch=2, stage='partial', val_acc=0.84, val_loss=0.5, size=48)])   # smaller photos: a dip, not a collapse
    assert not w.stop and 'ended below the head' in l.stage_lrs['stage2_note']             # ... but it ended worse
    assert l.stage_lrs['stage2_dips'] == [2]                                                # and the dip is on record
    w, l = watch([dict(epoch=2, stage='partial', val_acc=0.70, val_loss=0.9, size=48)])
    assert w.stop
    w, l = watch([dict(epoch=2, stage='unfrozen', val_acc=0.93, val_loss=0.45)])   # more accurate, higher loss: kept
    assert not w.stop and 'stage2_note' not in l.stage_lrs and l.loaded is None
