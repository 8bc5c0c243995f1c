"""Distributed training and prediction under torchrun, on the CPU with gloo on 127.0.0.1: the same weights as one
process, one writer, metrics over all processes, and failures (a rank that dies, a rank that hangs) that stop the
run with a message while the checkpoint on disk stays loadable."""
import csv, json, os, re, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli
from flower_tl.photos import sample_path
from flower_tl.distributed import free_port, torchrun_command
from flower_tl.predict import Predictor
from flower_tl.core import RUN_LOCK
from flower_tl.models import model_from_checkpoint, read_checkpoint

# The tests marked 'outcome' compare weights and accuracies of real runs: CI runs them again on other CPU kernels.
# The hung rank's test checks a timeout, not what training reaches, so it runs once.

SAMPLE = sample_path()
# One thread per process (2 shared cores), gloo on the loopback interface only, and a timeout that ends a hang in
# the tests well before pytest would.
ENV = dict(OMP_NUM_THREADS='1', MPLBACKEND='Agg', GLOO_SOCKET_IFNAME='lo', FLOWER_TL_DIST_TIMEOUT='120')
# 96 training images in global batches of 23: shards of 12 and 11 images (uneven, so the loss weighting matters)
# and a last batch of 4; 24 validation images: a batch of 23 and one of a single image, so rank 1 gets a stand-in.
TRAIN = ['train', '--data', SAMPLE, '--arch', 'efficientnet_lite0', '--size', '64', '--bs', '23', '--freeze-epochs', '1',
         '--epochs', '1', '--lr', '0.01', '--seed', '0', '--workers', '0', '--device', 'cpu']
FILES = ['best.pth', 'curves.png', 'epochs.png', 'last.pth', 'metrics.json']

def launch(args, nproc=2, env=None, timeout=300, module='flower_tl'):
    "`torchrun --nproc-per-node=NPROC -m flower_tl ARGS` (or a script), on 127.0.0.1; the CompletedProcess."
    return subprocess.run(torchrun_command(args, nproc, module=module), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV, **(env or {})}, cwd=ROOT)

def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-5000:])
    return r

def max_diff(a:dict, b:dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "The same `flower_tl train` in one process and under torchrun with two: both stages, lite0 at 64 px."
    tmp = tmp_path_factory.mktemp('ddp')
    one = ok(run_cli(*TRAIN, '--out', tmp/'one', env={k: v for k, v in ENV.items() if k != 'MPLBACKEND'}))
    two = ok(launch([*TRAIN, '--out', tmp/'two']))
    return tmp/'one', tmp/'two', one, two

@pytest.mark.outcome
def test_ddp_writes_one_checkpoint_and_one_metrics_file(runs):
    one, two, _, r = runs
    test_files = sorted(p.name for p in two.iterdir())
    assert test_files == FILES == sorted(p.name for p in one.iterdir())   # one of each, no per-rank copies, no temp files
    m = json.loads((two/'metrics.json').read_text())
    assert m['processes'] == 2 and len(m['history']) == 2
    # rank 0 alone prints: one epoch table per stage, one summary
    assert r.stdout.count('Trn_loss') == 2 and r.stdout.count('best validation accuracy') == 1, r.stdout

@pytest.mark.outcome
def test_ddp_weights_equal_single_process(runs):
    one, two, *_ = runs
    a, b = read_checkpoint(one/'last.pth'), read_checkpoint(two/'last.pth')
    assert a['epoch'] == b['epoch'] == 2
    assert max_diff(a['model'], b['model']) < 1e-5
    # best.pth is the same epoch's weights, unless a near-tie of validation accuracy (below) picked another epoch
    a, b = read_checkpoint(one/'best.pth'), read_checkpoint(two/'best.pth')
    if a['epoch'] == b['epoch']: assert max_diff(a['model'], b['model']) < 1e-5
    h1 = json.loads((one/'metrics.json').read_text())['history']
    h2 = json.loads((two/'metrics.json').read_text())['history']
    for a, b in zip(h1, h2):   # metrics added up over both processes: what one process measures
        assert abs(a['val_loss'] - b['val_loss']) < 1e-4 and abs(a['trn_loss'] - b['trn_loss']) < 1e-4
        # accuracies too, but a near-tie between two classes may tip either way at float rounding: one image at most
        assert abs(a['val_acc'] - b['val_acc']) <= 1/24 + 1e-9 and abs(a['trn_acc'] - b['trn_acc']) <= 1/96 + 1e-9

SCRIPT = '''
import json, sys, torch
from torch import nn
from flower_tl.data import FlowerData
from flower_tl.photos import sample_path
from flower_tl.train import Learner

class Tiny(nn.Module):
    "A small CNN without BatchNorm or dropout, so that several processes can match one exactly."
    def __init__(self, n):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, n)
    def forward(self, x): return self.fc(self.body(x))

torch.manual_seed(0)
# 96 images in global batches of 19: five of 19 (shards of 10 and 9) and a last one of a single image, kept (the
# model has no BatchNorm to mind), so that rank 1 takes a stand-in; 24 validation images: 19 and 5
data = FlowerData.from_folder(sample_path(), size=32, bs=19, num_workers=0)   # flower_tl.data.MIN_SIZE: the smallest it takes
data.train_dl = data.loader(data.train_ds, shuffle=True, drop_last=False)
learn = Learner(data, Tiny(data.n_classes), device='cpu', seed=0, progress=False)
learn.fit(2, 0.05)
d = learn.dist
if d.is_main: torch.save(learn.model.state_dict(), sys.argv[1])
with open(f"{sys.argv[2]}.{d.rank}", 'w') as f:   # every rank says what it measured
    json.dump(dict(history=[{k: v for k, v in r.items() if k != 'time'} for r in learn.history], world=d.world_size,
                   n=learn.train_stats.total, losses=learn.train_stats.losses), f)
'''

@pytest.mark.outcome
def test_python_api_uneven_shards_and_stand_in(tmp_path):
    "A `Learner` in a script detects torchrun's variables; 2 processes (uneven shards, a stand-in) match 1."
    (tmp_path/'fit.py').write_text(SCRIPT)
    ok(subprocess.run([sys.executable, tmp_path/'fit.py', tmp_path/'w1.pt', tmp_path/'one'], capture_output=True,
                      text=True, timeout=300, env={**os.environ, **ENV}, cwd=ROOT))
    ok(launch([tmp_path/'fit.py', tmp_path/'w2.pt', tmp_path/'two'], nproc=2, module=None))
    a, b = torch.load(tmp_path/'w1.pt', weights_only=True), torch.load(tmp_path/'w2.pt', weights_only=True)
    assert max_diff(a, b) < 1e-5
    h1 = json.loads((tmp_path/'one.0').read_text())
    h2 = [json.loads((tmp_path/f'two.{r}').read_text()) for r in range(2)]
    assert h1['world'] == 1 and all(h['world'] == 2 for h in h2)
    assert h2[0] == h2[1]                       # every rank reports the same numbers, to the last bit
    assert h1['n'] == h2[0]['n'] == 96          # every image counted once in the epoch: the stand-in counts for nothing
    assert len(h1['losses']) == len(h2[0]['losses']) == 2*6   # 6 steps per epoch, the last of a single image
    for a, b in zip(h1['history'], h2[0]['history']):
        assert abs(a['val_loss'] - b['val_loss']) < 1e-5 and abs(a['val_acc'] - b['val_acc']) <= 1/24 + 1e-9

@pytest.mark.outcome
def test_dead_rank_stops_the_run_and_resume_finishes_it(runs, tmp_path):
    "Rank 1 dies in epoch 2: torchrun stops the run at once, epoch 1's checkpoint is intact, and --resume finishes the run."
    out = tmp_path/'out'
    t0 = time.monotonic()
    # a long collective timeout: the run must end because torchrun and gloo notice the death, not by timing out;
    # the fault is a callback of the tests (tests/fault_hooks.py), installed into `flower_tl train` by its runner
    r = launch(['1:2:2', *TRAIN, '--out', out], env={'FLOWER_TL_DIST_TIMEOUT': '900'}, module='tests.fault_hooks')
    took = time.monotonic() - t0
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert 'test fault: rank 1 exits at epoch 2, iteration 2' in text
    assert re.search(r'rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*1', text), text[-3000:]  # torchrun names it
    assert took < 300
    # no temp file, no metrics: not finished (the run lock of the killed rank 0 may stay: the next run takes it over)
    assert sorted(p.name for p in out.iterdir() if p.name != RUN_LOCK) == ['best.pth', 'last.pth']
    ckpt = read_checkpoint(out/'last.pth')
    assert ckpt['epoch'] == 1 and ckpt['train_state']['stage'] == 'frozen'
    model_from_checkpoint(out/'best.pth')
    # every process reads the same last.pth and the run ends where the uninterrupted one (`runs`) ended
    r = ok(launch([*TRAIN, '--resume', out/'last.pth']))
    assert 'Trn_loss' in r.stdout and sorted(p.name for p in out.iterdir()) == FILES
    a, b = read_checkpoint(runs[1]/'last.pth'), read_checkpoint(out/'last.pth')
    assert b['epoch'] == 2 and max_diff(a['model'], b['model']) < 1e-6

def test_hung_rank_times_out_without_torchrun(tmp_path):
    "Two processes started by hand (no torchrun to watch them); rank 1 hangs: rank 0 gives up after the timeout."
    out, port = tmp_path/'out', free_port()
    env = {**os.environ, **ENV, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port), 'WORLD_SIZE': '2',
           'FLOWER_TL_DIST_TIMEOUT': '15'}   # 15 s: room for a loaded machine (pytest -n 2) between two healthy collectives
    cmd = [sys.executable, '-m', 'tests.fault_hooks', '1:2:2:hang', *map(str, TRAIN), '--out', str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**env, 'RANK': str(r), 'LOCAL_RANK': str(r)}) for r in (0, 1)]
    try:
        so, se = procs[0].communicate(timeout=300)
        err = procs[1].poll()
        assert err is None                      # rank 1 still hangs, and rank 0 did not wait for it
        assert procs[0].returncode == 1, (so[-2000:], se[-3000:])
        lines = [l for l in se.splitlines() if l.startswith('flower_tl train: error:')]
        assert len(lines) == 1 and 'Traceback' not in se, se[-3000:]
        assert 'rank 0 of 2' in lines[0] and 'waited 15 s' in lines[0] and 'FLOWER_TL_DIST_TIMEOUT' in lines[0]
    finally:
        for p in procs:
            if p.poll() is None: p.kill()
            p.communicate()
    assert read_checkpoint(out/'last.pth')['epoch'] == 1

def read_csv(path): return list(csv.DictReader(open(path, newline='', encoding='utf-8')))

@pytest.mark.outcome
def test_sharded_prediction_csv(runs, tmp_path):
    "Each process predicts a block of the sorted files; rank 0 writes one CSV in file-name order, as one process does."
    ckpt = runs[0]/'best.pth'
    folder = tmp_path/'test'
    folder.mkdir()
    for f in sorted((SAMPLE/'test').iterdir()): (folder/f.name).write_bytes(f.read_bytes())
    (folder/'zz_broken.jpg').write_bytes(b'not a jpeg')   # sorts last: in rank 1's block
    args = ['predict', '--checkpoint', ckpt, '--images', folder, '--bs', '5', '--details', '--workers', '0', '--device', 'cpu']
    # without --skip-bad, the process that meets the broken file stops them all with its message, and nothing is written
    r = launch([*args, '--csv', tmp_path/'bad.csv'])
    assert r.returncode != 0 and 'zz_broken.jpg' in r.stderr and '--skip-bad' in r.stderr, r.stderr[-3000:]
    assert not (tmp_path/'bad.csv').exists()
    two = ok(launch([*args, '--skip-bad', '--csv', tmp_path/'two.csv']))
    one = Predictor.from_checkpoint(ckpt, device='cpu').predict_folder(folder, bs=5, skip_bad=True, progress=False)
    a, b = one.rows(details=True), read_csv(tmp_path/'two.csv')
    assert [(x['file_name'], x['id']) for x in a] == [(x['file_name'], x['id']) for x in b]
    assert len(b) == 12 and [x['file_name'] for x in b] == sorted(x['file_name'] for x in b)
    assert all(abs(float(x['prob']) - float(y['prob'])) < 1e-3 for x, y in zip(a, b))
    assert two.stdout.count('wrote') == 1 and 'zz_broken.jpg' in two.stdout   # rank 0 reports, with the skipped file
    assert sorted(p.name for p in tmp_path.iterdir()) == ['test', 'two.csv']
