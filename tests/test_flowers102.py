"""The official Oxford 102 split, offline: a copy laid out as torchvision lays it out, made from the bundled sample's
real photos, read through `FlowerData.from_flowers102` and laid out as folders; a missing copy and a download
with no network each stop with one line that says what to do."""
import json, shutil, socket, urllib.error, warnings
from pathlib import Path

import numpy as np
import pytest

from flower_tl.core import UserError
from flower_tl.data import FlowerData
from flower_tl.photos import sample_path
from flower_tl.flowers102 import flowers102_folder

scipy_io = pytest.importorskip('scipy.io')
tv = pytest.importorskip('torchvision.datasets')
F102 = tv.Flowers102
SAMPLE = sample_path()


def _sample_ids(split:str) -> dict:
    "Image number -> category id of one split of the sample (its photos keep their Oxford names, image_NNNNN.jpg)."
    if split == 'test':
        rows = (SAMPLE/'test_labels.csv').read_text().split()[1:]
        return {int(name[6:11]): cat for name, cat in (r.split(',') for r in rows)}
    return {int(f.stem[6:]): f.parent.name for f in (SAMPLE/split).glob('*/*.jpg')}

def _photo(i:int) -> Path:
    (f,) = [f for f in SAMPLE.rglob(f'image_{i:05d}.jpg')]
    return f

@pytest.fixture(scope='module')
def oxford(tmp_path_factory) -> Path:
    """`root` of a copy as `torchvision.datasets.Flowers102(root, download=True)` leaves it: `root/flowers-102/`
    holding `jpg/image_NNNNN.jpg`, `imagelabels.mat` ('labels', 1 x 8189, uint8) and `setid.mat` ('trnid', 'valid',
    'tstid', 1 x n, uint16), with the sample's photos, its train/valid/test folders as the three splits."""
    root = tmp_path_factory.mktemp('oxford')
    base = root/'flowers-102'; images = base/'jpg'; images.mkdir(parents=True)
    splits = {key: _sample_ids(split) for split, key in (('train', 'trnid'), ('valid', 'valid'), ('test', 'tstid'))}
    labels = np.zeros(8189, dtype=np.uint8)
    for ids in splits.values():
        for i, cat in ids.items():
            labels[i-1] = int(cat); shutil.copy(_photo(i), images/f'image_{i:05d}.jpg')
    scipy_io.savemat(base/F102._file_dict['label'][0], {'labels': labels[None]})
    scipy_io.savemat(base/F102._file_dict['setid'][0], {k: np.array(sorted(v), dtype=np.uint16)[None] for k, v in splits.items()})
    return root

def _read(root, **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', '.*checksum differs')   # the .mat files are ours, not the published ones
        return FlowerData.from_flowers102(root, **kw)


def test_the_copy_is_what_torchvision_reads(oxford, monkeypatch):
    "torchvision's own Flowers102 reads the copy (its checksum check aside) into the same files and labels as flower_tl."
    import torchvision.datasets.flowers102 as tvf
    monkeypatch.setattr(tvf, 'check_integrity', lambda path, md5=None: Path(path).is_file())
    data = _read(oxford, size=64, num_workers=0)
    for split, ds in (('train', data.train_ds), ('val', data.valid_ds), ('test', data.test_ds)):
        theirs = F102(str(oxford), split=split)
        assert theirs._base_folder == oxford/'flowers-102' and theirs._images_folder == oxford/'flowers-102'/'jpg'
        assert sorted(zip(theirs._image_files, [str(l + 1) for l in theirs._labels])) == \
               sorted(zip(ds.files, [data.idx_to_cat(t) for t in ds.targets]))

def test_read_without_download(oxford):
    data = _read(oxford, size=64, bs=8, num_workers=0, download=False)
    sample = FlowerData.from_folder(SAMPLE, size=64, num_workers=0)
    assert (data.classes, data.names) == (sample.classes, sample.names)   # torchvision's names are the sample's
    assert (len(data.train_ds), len(data.valid_ds), len(data.test_ds)) == (96, 24, 12)
    x, y, name = data.test_ds[0]
    assert x.shape == (3, 64, 64) and data.idx_to_cat(y) == _sample_ids('test')[int(name[6:11])]
    xb, yb = next(iter(data.train_dl))
    assert xb.shape == (8, 3, 64, 64)

def test_as_folders(oxford, tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', '.*checksum differs')
        dest = flowers102_folder(oxford, tmp_path/'flower_data')
    assert sorted(p.name for p in dest.iterdir()) == ['cat_to_name.json', 'test', 'test_labels.csv', 'train', 'valid']
    for split in ('train', 'valid'):
        assert sorted(p.relative_to(dest/split).as_posix() for p in (dest/split).rglob('*.jpg')) == \
               sorted(p.relative_to(SAMPLE/split).as_posix() for p in (SAMPLE/split).rglob('*.jpg'))
    assert all(p.resolve().parent == oxford/'flowers-102'/'jpg' for p in dest.rglob('*.jpg'))   # links, nothing copied
    assert (dest/'test_labels.csv').read_text().split() == (SAMPLE/'test_labels.csv').read_text().split()
    assert json.loads((dest/'cat_to_name.json').read_text()) == json.loads((SAMPLE/'cat_to_name.json').read_text())
    data = FlowerData.from_folder(dest, size=64, num_workers=0)
    assert (len(data.train_ds), len(data.valid_ds), len(data.test_ds), data.n_classes) == (96, 24, 12, 6)
    assert flowers102_folder(oxford, dest) == dest   # made once

def test_missing_copy_is_one_line(tmp_path):
    with pytest.raises(UserError) as e: FlowerData.from_flowers102(tmp_path/'nothing', download=False)
    msg = str(e.value)
    assert '\n' not in msg and str(tmp_path/'nothing'/'flowers-102') in msg
    assert 'download=True' in msg and 'from_folder' in msg   # how to get it, and the other way in

def test_offline_download_is_one_line(tmp_path, monkeypatch):
    "With no network (name lookups fail), torchvision's real download code stops, and the message says so in one line."
    def no_network(*args, **kwargs): raise socket.gaierror(-3, 'Temporary failure in name resolution')
    monkeypatch.setattr(socket, 'getaddrinfo', no_network)
    with pytest.raises(UserError) as e: FlowerData.from_flowers102(tmp_path/'dl', download=True)
    msg = str(e.value)
    assert '\n' not in msg and 'no network' in msg and str(tmp_path/'dl') in msg
    assert 'Give the folder of a copy' in msg and 'robots.ox.ac.uk' in msg
    assert socket.getdefaulttimeout() is None

def test_a_server_error_is_not_called_offline(tmp_path, monkeypatch):
    class Refused:
        classes = F102.classes
        def __init__(self, root, **kw): raise urllib.error.HTTPError('https://x/102flowers.tgz', 503, 'Service Unavailable', {}, None)
    monkeypatch.setattr(tv, 'Flowers102', Refused)
    with pytest.raises(UserError) as e: FlowerData.from_flowers102(tmp_path/'dl', download=True)
    assert 'no network' not in str(e.value) and 'HTTP Error 503' in str(e.value)
