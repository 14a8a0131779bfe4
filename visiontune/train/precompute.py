"""Precomputed activations: run the frozen body once over a dataset, keep the pooled features on disk,
and train or predict the head on them in seconds.

The cache is keyed by everything that changes the features: architecture, a fingerprint of the body
weights, image size, the ordered files with sizes and mtimes, the valid transform and normalization.
Files are written to a temporary name, fsynced and renamed; the JSON meta is written last, with a
BLAKE2b digest of each .npy file, so a partly written cache is never read and a damaged one (bit flip,
truncation) is detected, reported and computed again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._core import console as _console
from .._core.distributed import (
    barrier,
    broadcast_object,
    gather_cat,
    is_distributed,
    is_main_process,
    make_sampler,
)
from .._core.checksum import file_digest
from .._core.errors import DiskFullError
from .._core.failpoints import failpoint
from .._core.io import atomic_write, write_text
from .._core.version import __version__
from ..data.loader import DeviceLoader, EpochSampler
from ..data.transforms import valid_transform

if TYPE_CHECKING:
    from .learner import Learner

FORMAT = 1
DIGESTS = ("npy", "idx")  # the meta's `digests` keys, in the order of `paths`

def body_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the body's parameters and buffers: any change to the weights gives a new key."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.body.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(learn: "Learner", ds: str) -> tuple[str, dict]:
    """(hex key, the description it hashes) for dataset `ds` under this learner's body."""
    data = learn.data
    dset = data.dataset(ds)
    files = hashlib.sha256()
    for f in dset.files:
        st = f.stat()
        files.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    desc = {
        "format": FORMAT,
        "arch": learn.model.config.arch,
        "body": body_fingerprint(learn.model),
        "concat_pool": learn.model.config.head.concat_pool,
        "size": data.size,
        "presize": data.presize,
        "transform": repr(valid_transform(data.size)),
        "mean": list(learn.norm_stats()[0] or ()),
        "std": list(learn.norm_stats()[1] or ()),
        "files": files.hexdigest(),
        "n": len(dset),
        "ds": ds,
    }
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]
    return key, desc


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to the temporary name
        np.save(f, arr, allow_pickle=False)


class ActivationCache:
    """Features of one dataset on disk: `{key}.npy` (float32, rows = kept items), `{key}.idx.npy`
    (dataset positions of those rows) and `{key}.json` (the key's description; written last)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.n_computed = 0  # images passed through the body by this object (tests count these)

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.root / f"{key}.npy", self.root / f"{key}.idx.npy", self.root / f"{key}.json"

    def read(self, key: str, desc: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached (features, positions) for `key`, or None when absent, stale or damaged (computed again)."""
        feats_p, idx_p, meta_p = self.paths(key)
        try:
            meta = json.loads(meta_p.read_text())
            if meta.get("desc") != desc or not meta.get("complete"):
                return None
            digests = meta.get("digests") or {}
            for name, path in zip(DIGESTS, (feats_p, idx_p)):
                if file_digest(path) != digests.get(name):
                    _console.notice(f"precomputed activations {path} are damaged (checksum mismatch); computing "
                                    f"them again.")
                    return None
            feats = np.load(feats_p, mmap_mode="r")
            idx = np.load(idx_p)
            if feats.shape != tuple(meta["shape"]) or len(idx) != feats.shape[0]:
                return None
            return feats, idx
        except (OSError, ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError):
            return None

    def write(self, key: str, desc: dict, feats: np.ndarray, idx: np.ndarray) -> None:
        """Write the three files (meta last). On a full disk the cache is skipped with a notice naming the
        folder and the space needed: the features are in memory already, so training goes on."""
        feats_p, idx_p, meta_p = self.paths(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            meta_p.unlink(missing_ok=True)
            digests = {}
            for name, path, arr in zip(DIGESTS, (feats_p, idx_p), (feats, idx)):
                atomic_write(path, lambda tmp, arr=arr: _save_npy(tmp, arr), size_hint=arr.nbytes + 128)
                digests[name] = file_digest(path)
            write_text(meta_p, json.dumps({"desc": desc, "shape": list(feats.shape), "complete": True,
                                           "digests": digests, "visiontune": __version__, "created": time.time()}))
        except DiskFullError as e:
            meta_p.unlink(missing_ok=True)
            for path in (feats_p, idx_p):
                path.unlink(missing_ok=True)
            _console.notice(f"precomputed activations not cached: {e} Training goes on with them in memory.")

    def get(self, learn: "Learner", ds: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and kept positions for `ds`, from disk when the key matches, else computed now.

        Under torchrun, rank 0 decides whether the cache is valid; on a miss every rank computes its
        shard, the shards are gathered, and rank 0 alone writes the files."""
        key, desc = cache_key(learn, ds)
        if broadcast_object(self.read(key, desc) is not None):
            hit = self.read(key, desc)
            if hit is not None:
                return hit
        feats, idx = compute_features(learn, ds)
        if is_distributed():
            feats = gather_cat(torch.from_numpy(feats)).numpy()
            idx = gather_cat(torch.from_numpy(idx)).numpy()
            order = np.argsort(idx, kind="stable")
            feats, idx = feats[order], idx[order]
        self.n_computed += len(idx)
        if is_main_process():
            self.write(key, desc, feats, idx)
        barrier()
        return feats, idx


def compute_features(learn: "Learner", ds: str) -> tuple[np.ndarray, np.ndarray]:
    """Run the body (eval mode, no augmentation, inference_mode) over `ds` in batches."""
    data, model = learn.data, learn.model
    raw = data.loader(ds, bs=data.bs * 2, augment=False, shuffle=False, drop_last=False, device=learn.device)
    dl = DeviceLoader(raw, learn.device, *learn.norm_stats(), learn.channels_last)
    n = len(raw.dataset)
    feats = np.empty((n, model.n_features), dtype=np.float32)
    kept = np.zeros(n, dtype=bool)
    was_training = model.training
    model.eval()
    t0, done = time.perf_counter(), 0
    progress = None
    if _console.interactive() and not learn.quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[speed]}"), console=_console.err, transient=True)
        progress.start()
        task = progress.add_task(f"precompute {ds}", total=n, speed="")
    try:
        with torch.inference_mode(), learn.autocast():
            for x, _, idx in dl.iter_with_index():
                out = model.features(x).float().cpu().numpy()
                feats[idx.numpy()] = out
                kept[idx.numpy()] = True
                done += len(idx)
                failpoint("precompute")
                if progress is not None:
                    speed = done / max(time.perf_counter() - t0, 1e-9)
                    progress.update(task, advance=len(idx), speed=f"{speed:,.0f} img/s")
    finally:
        if progress is not None:
            progress.stop()
        model.train(was_training)
    dt = time.perf_counter() - t0
    if not learn.quiet:
        _console.notice(f"precomputed {ds} activations: {done} images in {dt:.1f}s ({done / max(dt, 1e-9):,.0f} img/s)")
    idx = np.flatnonzero(kept)
    return feats[idx], idx


class FeatureDataset(Dataset):
    """Rows of cached features with their targets: (feature vector, target, dataset position)."""

    def __init__(self, feats: np.ndarray, idx: np.ndarray, targets: np.ndarray | None):
        self.feats = torch.from_numpy(np.array(feats, dtype=np.float32))
        self.idx = torch.from_numpy(idx.astype(np.int64))
        if targets is None:
            self.targets = torch.full((len(idx),), -1, dtype=torch.long)
        else:
            t = torch.as_tensor(targets[idx])
            self.targets = t.float() if t.ndim == 2 else t.long()

    def __len__(self) -> int:
        return len(self.idx)

    def __getitems__(self, indices: list[int]):
        i = torch.as_tensor(indices)
        return [(self.feats[i], self.targets[i], self.idx[i])]

    def __getitem__(self, i: int):
        return self.feats[i], self.targets[i], self.idx[i]


def _whole_batch(batch):
    """FeatureDataset.__getitems__ already returns the batch as one tuple of tensors."""
    return batch[0]


def feature_loader(learn: "Learner", ds: str, shuffle: bool, bs: int | None = None) -> DeviceLoader:
    """A device loader over the cached features of `ds` (computed first if needed)."""
    data = learn.data
    if not hasattr(learn, "activation_cache"):
        learn.activation_cache = ActivationCache(data.cache_dir / "activations")
    feats, idx = learn.activation_cache.get(learn, ds)
    dset = FeatureDataset(feats, idx, data.dataset(ds).targets)
    bs = bs or data.bs
    drop_last = shuffle and len(dset) > bs
    if shuffle and getattr(data, "sampler", None) == "balanced":
        sampler = data.balanced_sampler(dset, dset.targets.numpy())
    else:
        sampler = make_sampler(len(dset), shuffle, data.seed, drop_last, dset) or EpochSampler(len(dset), shuffle,
                                                                                               data.seed)
    dl = DataLoader(dset, batch_size=bs, sampler=sampler,
                    drop_last=drop_last, collate_fn=_whole_batch, num_workers=0)
    return DeviceLoader(dl, learn.device, None, None)
