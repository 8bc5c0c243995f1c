"""flower_tl.data and flower_tl.photos where notebooks are a poor fit: loader worker processes (forked and spawned), unreadable files
injected into real data folders, and the official Oxford 102 split read from a fake local copy (never downloaded)."""
import hashlib, io, multiprocessing, pickle, sys, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from flower_tl.core import UserError
from flower_tl.data import FlowerData, TestDataset, show_batch, show_preds
from flower_tl.photos import BadImageError, find_bad_images, load_rgb, sample_path
import flower_tl.flowers102   # adds FlowerData.from_flowers102

torch.set_num_threads(2)
SAMPLE = sample_path()
JPG = sorted((SAMPLE/'test').glob('*.jpg'))[0].read_bytes()


def put(p, data=JPG):
    p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(data); return p

def make_data(root, train={'1': 3, '2': 3}, valid={'1': 2, '2': 2}, test=0):
    "A data folder at `root` of copies of a sample JPEG; `train`/`valid` map category ids to image counts."
    for split, counts in (('train', train), ('valid', valid)):
        for cat, k in counts.items():
            for j in range(k): put(root/split/cat/f'{cat}_{j}.jpg')
    for j in range(test): put(root/'test'/f'{j:03d}.jpg')
    return root

def digest(folder):
    "Every file under `folder` with its hash and modification time: what 'untouched' means."
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob('*')) if p.is_file()}

BAD = {'truncated': JPG[:len(JPG)//3], 'text': b'name,id\nimage_1.jpg,1\n', 'empty': b''}


# ---------------------------------------------------------------- unreadable files, in worker processes

@pytest.mark.parametrize('kind', sorted(BAD))
@pytest.mark.parametrize('split', ['train', 'valid', 'test'])
def test_bad_image_in_a_worker_names_the_file(tmp_path, kind, split):
    root = make_data(tmp_path/'data', test=3)
    bad = put(root/split/('2' if split != 'test' else '')/f'broken_{kind}.jpg', BAD[kind])
    before = digest(root)
    data = FlowerData.from_folder(root, size=32, bs=4, num_workers=2)
    with pytest.raises(BadImageError) as e:
        for _ in getattr(data, f'{split}_dl'): pass
    msg = str(e.value)
    assert str(bad) in msg and 'DataLoader worker process' in msg and '\n' not in msg, msg
    assert isinstance(e.value, UserError) and 'Traceback' in e.value.worker_trace
    # the failed loop's workers are gone now, not when Python collects the iterator that the error's traceback
    # keeps alive: a collection in a later loader's forked worker would close pipes that are not its own
    assert multiprocessing.active_children() == []
    assert find_bad_images(root) == [(bad, find_bad_images(bad.parent)[0][1])]
    assert digest(root) == before, "flower_tl changed, moved or removed a user file"


def test_find_bad_images_reasons(tmp_path):
    for kind, data in BAD.items(): put(tmp_path/f'{kind}.JPG', data)
    put(tmp_path/'fine.jpg'); put(tmp_path/'notes.txt', b'not an image, not checked')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        found = {p.name: r for p, r in find_bad_images(tmp_path, threads=2)}
    assert [str(m.message) for m in w] == [f"skipped 1 file in {tmp_path} that flower_tl does not read: notes.txt "
                                           "(not a format flower_tl reads)"]   # never opened, but named
    assert set(found) == {'truncated.JPG', 'text.JPG', 'empty.JPG'}
    assert found['empty.JPG'] == 'empty file (0 bytes)'
    assert 'truncated' in found['truncated.JPG'] and 'not an image' in found['text.JPG']
    with pytest.raises(UserError, match='no_such'): find_bad_images(tmp_path/'no_such')


# ---------------------------------------------------------------- links to folders are never followed

def test_folder_links_are_not_followed(tmp_path):
    root = make_data(tmp_path/'data', test=2)
    (root/'train'/'1'/'loop').symlink_to('..')          # train/1/loop/1/loop/...: once 60 photos became 2460
    (root/'test'/'up').symlink_to('..')                 # the whole data folder, as "test images"
    (root/'valid'/'2'/'copy.jpg').symlink_to(root/'valid'/'2'/'2_0.jpg')   # a link to an image is an image
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        data = FlowerData.from_folder(root, size=32, num_workers=0)
        found = find_bad_images(root)
    assert (len(data.train_ds), len(data.valid_ds), len(data.test_ds)) == (6, 5, 2) and found == []
    assert data.train_ds.targets == [0, 0, 0, 1, 1, 1]
    said = ' '.join(str(m.message) for m in w)
    assert f"in {root/'train'/'1'} (loop)" in said and f"in {root/'test'} (up)" in said


# ---------------------------------------------------------------- every kind of image becomes RGB

def _save(img, fmt, **kw):
    b = io.BytesIO(); img.save(b, fmt, **kw); return b.getvalue()

def test_every_image_mode_becomes_rgb_through_workers(tmp_path):
    rgb = Image.open(io.BytesIO(JPG)).convert('RGB')
    grey16 = Image.fromarray(np.asarray(rgb.convert('L'), dtype=np.uint16)*257)
    rgba = rgb.convert('RGBA'); rgba.putalpha(128)
    variants = {'grey.jpg': _save(rgb.convert('L'), 'JPEG'), 'cmyk.jpg': _save(rgb.convert('CMYK'), 'JPEG'),
                'palette.png': _save(rgb.convert('P', palette=Image.ADAPTIVE), 'PNG'), 'rgba.png': _save(rgba, 'PNG'),
                'la.png': _save(rgb.convert('LA'), 'PNG'), 'bilevel.bmp': _save(rgb.convert('1'), 'BMP'),
                'grey16.png': _save(grey16, 'PNG'), 'rgba.webp': _save(rgba, 'WEBP'), 'upper.JPEG': JPG}
    root = tmp_path/'data'
    for name, b in variants.items(): put(root/'train'/'1'/name, b); put(root/'valid'/'1'/name, b)
    put(root/'train'/'2'/'other.jpg'); put(root/'valid'/'2'/'other.jpg')   # a classifier needs two classes
    for name, b in variants.items():
        img = load_rgb(root/'train'/'1'/name)
        assert img.mode == 'RGB' and img.size == rgb.size, name
    data = FlowerData.from_folder(root, size=48, bs=4, num_workers=2)
    assert len(data.train_ds) == len(variants) + 1
    for dl in (data.train_dl, data.valid_dl):
        for xb, yb in dl:
            assert xb.shape[1:] == (3, 48, 48) and torch.isfinite(xb).all()


# ---------------------------------------------------------------- reproducible loaders, with workers

def _epoch(dl): return [(x.clone(), y.clone()) for x, y in dl]

def test_same_seed_same_batches_with_workers():
    a = FlowerData.from_folder(size=32, bs=16, num_workers=2, seed=3)
    b = FlowerData.from_folder(size=32, bs=16, num_workers=2, seed=3)
    a1, b1, a2, b2 = _epoch(a.train_dl), _epoch(b.train_dl), _epoch(a.train_dl), _epoch(b.train_dl)
    for ea, eb in ((a1, b1), (a2, b2)):   # same seed: same order and same augmentation, epoch after epoch
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(ea, eb))
    assert not torch.equal(torch.cat([y for _, y in a1]), torch.cat([y for _, y in a2]))  # reshuffled each epoch
    c1 = _epoch(FlowerData.from_folder(size=32, bs=16, num_workers=2, seed=4).train_dl)
    assert not torch.equal(torch.cat([y for _, y in a1]), torch.cat([y for _, y in c1]))
    # the evaluation loaders do not depend on the seed at all
    v = [torch.cat([x for x, _ in d.valid_dl]) for d in (a, FlowerData.from_folder(size=32, num_workers=2, seed=9))]
    assert torch.equal(*v)


def test_no_training_batch_of_one(tmp_path):
    root = make_data(tmp_path/'d', train={'1': 5, '2': 4}, valid={'1': 1, '2': 1})   # 9 images
    for bs, sizes in [(8, [8]), (4, [4, 4]), (3, [3, 3, 3]), (2, [2, 2, 2, 2])]:
        data = FlowerData.from_folder(root, size=32, bs=bs, num_workers=2)
        assert [len(y) for _, y in data.train_dl] == sizes
        assert sum(len(y) for _, y in data.valid_dl) == 2


# ---------------------------------------------------------------- pickling, spawned workers

def test_spawned_workers_and_pickling():
    data = FlowerData.from_folder(size=32, bs=8, num_workers=1)
    again = pickle.loads(pickle.dumps(data))
    assert again.classes == data.classes and len(again.train_ds) == 96 and again.cat_to_name('84') == 'columbine'
    dl = DataLoader(data.test_ds, batch_size=6, num_workers=1, multiprocessing_context='spawn')
    xb, zeros, names = next(iter(dl))
    assert xb.shape == (6, 3, 32, 32) and zeros.tolist() == [0]*6 and names[0] == 'image_00249.jpg'


# ---------------------------------------------------------------- pictures, in a script (Agg)

def test_pictures_are_figures():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    data = FlowerData.from_folder(size=32, num_workers=0)
    n_open = len(plt.get_fignums())
    fig = show_batch(data, n=5, ncols=5)
    fig2 = show_preds(data, np.zeros(len(data.valid_ds), dtype=int), n=6)
    assert len([a for a in fig.axes if a.images]) == 5 and len([a for a in fig2.axes if a.images]) == 6
    assert len(plt.get_fignums()) == n_open, "plots must not stay registered with pyplot"
    fig.savefig(io.BytesIO(), format='png', dpi=40)


# ---------------------------------------------------------------- the official split, from a fake local copy

def _fake_flowers102(root, n_images=8189, n_classes=102):
    "A copy laid out as torchvision stores it; every photo is the same tiny JPEG; split sizes as the real one's."
    savemat = pytest.importorskip('scipy.io').savemat
    base = root/'flowers-102'; (base/'jpg').mkdir(parents=True)
    tiny = _save(Image.open(io.BytesIO(JPG)).convert('RGB').resize((20, 16)), 'JPEG')
    labels = (np.arange(n_images) % n_classes + 1).astype(np.uint8)   # image i (1-based) is of class (i-1) % 102 + 1
    ids = {c: [i + 1 for i in range(n_images) if labels[i] == c] for c in range(1, n_classes + 1)}
    split = {'trnid': [i for c in ids for i in ids[c][:10]], 'valid': [i for c in ids for i in ids[c][10:20]],
             'tstid': [i for c in ids for i in ids[c][20:]]}
    for i in range(1, n_images + 1): (base/'jpg'/f'image_{i:05d}.jpg').write_bytes(tiny)
    savemat(base/'imagelabels.mat', {'labels': labels[None]})
    savemat(base/'setid.mat', {k: np.array(v, dtype=np.uint16)[None] for k, v in split.items()})
    return base

@pytest.fixture(scope='module')
def flowers102(tmp_path_factory):
    return _fake_flowers102(tmp_path_factory.mktemp('oxford'))

def test_flowers102_official_split(flowers102):
    root = flowers102.parent
    before = digest(root)
    with pytest.warns(UserWarning, match='checksum differs'):
        data = FlowerData.from_flowers102(root, size=32, bs=64, num_workers=2)
    assert (len(data.train_ds), len(data.valid_ds), len(data.test_ds)) == (1020, 1020, 6149)
    assert data.n_classes == 102 and data.classes[:4] == ['1', '10', '100', '101']   # text order, as from_folder
    assert data.cat_to_name('1') == 'pink primrose' and data.cat_to_name(102) == 'blackberry lily'
    assert data.path == flowers102
    x, y, name = data.test_ds[0]
    assert x.shape == (3, 32, 32) and name == data.test_ds.files[0].name
    assert data.idx_to_cat(y) == str((int(name[6:11]) - 1) % 102 + 1)   # the label from imagelabels.mat
    xb, yb = next(iter(data.train_dl))
    assert xb.shape == (64, 3, 32, 32)
    xt, yt, names = next(iter(data.test_dl))
    assert len(names) == 64 and yt.dtype == torch.int64
    assert digest(root) == before

def test_flowers102_folder_itself_and_names_file(flowers102, tmp_path):
    (tmp_path/'names.json').write_text('{' + ', '.join(f'"{c}": "flower {c}"' for c in range(1, 103)) + '}')
    with pytest.warns(UserWarning):
        data = FlowerData.from_flowers102(flowers102, size=32, names=tmp_path/'names.json')
    assert data.cat_to_name('7') == 'flower 7'

def test_flowers102_missing_copy_says_what_to_do(tmp_path):
    (tmp_path/'flowers-102'/'jpg').mkdir(parents=True)
    with pytest.raises(UserError) as e: FlowerData.from_flowers102(tmp_path)
    msg = str(e.value)
    assert str(tmp_path/'flowers-102') in msg and 'missing: imagelabels.mat, setid.mat' in msg
    assert 'download=True' in msg and 'train/<category>/*.jpg' in msg and 'from_folder' in msg

def test_flowers102_download_failure_is_a_user_error(tmp_path, monkeypatch):
    pytest.importorskip('scipy.io')
    import torchvision.datasets
    calls = []
    class Offline:
        classes = torchvision.datasets.Flowers102.classes
        def __init__(self, root, split='train', download=False, **kw):
            calls.append((root, download)); raise OSError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torchvision.datasets, 'Flowers102', Offline)   # nothing is downloaded in tests
    with pytest.raises(UserError, match='could not download the Oxford 102 flowers') as e:
        FlowerData.from_flowers102(tmp_path/'dl', download=True)
    assert calls == [(str(tmp_path/'dl'), True)] and 'from_folder' in str(e.value)

def test_flowers102_without_scipy(flowers102, monkeypatch):
    monkeypatch.setitem(sys.modules, 'scipy', None); monkeypatch.setitem(sys.modules, 'scipy.io', None)
    with pytest.warns(UserWarning), pytest.raises(UserError, match='pip install scipy'):
        FlowerData.from_flowers102(flowers102.parent)

def test_flowers102_broken_copies(tmp_path):
    base = _fake_flowers102(tmp_path/'a', n_images=40, n_classes=2)   # 20 train, 20 valid, 0 test images
    with pytest.warns(UserWarning):
        data = FlowerData.from_flowers102(tmp_path/'a', size=32, bs=4, num_workers=0)
    assert (len(data.train_ds), len(data.valid_ds), data.test_ds, data.test_dl) == (20, 20, None, None)
    (base/'jpg'/'image_00003.jpg').unlink()
    with pytest.warns(UserWarning), pytest.raises(UserError, match='image_00003.jpg'):
        FlowerData.from_flowers102(tmp_path/'a')
    (base/'setid.mat').write_bytes(b'not a mat file')
    with pytest.warns(UserWarning), pytest.raises(UserError, match='setid.mat'):
        FlowerData.from_flowers102(tmp_path/'a')
