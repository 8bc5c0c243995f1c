"Lookahead resumes bit for bit in a new process, from a checkpoint file loaded with weights_only=True."
import subprocess, sys
import pytest

# Trains a small MLP with Lookahead(inner) on fixed mini-batches, from step START to STOP. With a checkpoint
# path to load, it starts from it; with one to save, it saves there after SAVE_AT steps. It writes the final
# parameters to OUT.
SCRIPT = r'''
import sys, torch, torch.nn.functional as F
from torch import nn
from flower_tl.lookahead import Lookahead
torch.set_num_threads(1)
inner, start, stop, save_at, load, save, out = sys.argv[1:]
start, stop, save_at = int(start), int(stop), int(save_at)
torch.manual_seed(0 if load == '-' else 1)   # the resumed run starts from other weights, then loads
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
make = {'sgd': lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
        'adamw': lambda ps: torch.optim.AdamW(ps, lr=1e-2)}[inner]
opt = Lookahead(make(model[2].parameters()), alpha=0.6 if load == '-' else 0.5, k=3 if load == '-' else 5)
opt.add_param_group({'params': model[0].parameters(), 'lr': 0.05})   # a second group, with its own counter
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
if load != '-':
    ck = torch.load(load, weights_only=True)
    model.load_state_dict(ck['model']); opt.load_state_dict(ck['opt']); sched.load_state_dict(ck['sched'])
for i in range(start, stop):
    g = torch.Generator().manual_seed(1000 + i)
    x, y = torch.randn(5, 8, generator=g), torch.randint(0, 3, (5,), generator=g)
    opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step(); sched.step()
    if save != '-' and i + 1 == save_at:
        torch.save({'model': model.state_dict(), 'opt': opt.state_dict(), 'sched': sched.state_dict()}, save)
torch.save([p.detach() for p in model.parameters()], out)
'''

def run(*args):
    r = subprocess.run([sys.executable, '-c', SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

@pytest.mark.outcome
@pytest.mark.parametrize('inner', ['sgd', 'adamw'])
def test_resume_in_new_process_is_bitwise(tmp_path, inner):
    import torch
    ck, straight, resumed = tmp_path/'ck.pt', tmp_path/'straight.pt', tmp_path/'resumed.pt'
    run(inner, 0, 13, 7, '-', ck, straight)       # 13 steps in one go, checkpoint after 7 (mid-round)
    run(inner, 7, 13, 0, ck, '-', resumed)        # a new process: fresh model and optimizer, load, 6 more steps
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert len(a) == len(b) == 4
    assert all(torch.equal(x, y) for x, y in zip(a, b))
