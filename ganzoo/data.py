"""Load a dataset split once per process, check it against its declared shape, keep it as uint8."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from . import registry
from .config import normalize_dataset_options
from .errors import GanzooError
from .paths import data_dir
from .specs import ImageData


def resolve_root(root: Optional[str | Path] = None) -> str:
    """The data root a dataset plugin reads: --data-root if given, else the per-user data folder."""
    return str(Path(root).expanduser().absolute() if root else data_dir())


def load_split(dataset: str, split: str, root: Optional[str | Path] = None, download: bool = False,
               options: Optional[Mapping[str, Any]] = None) -> ImageData:
    """The whole split as ImageData; loading the same split again in one process costs nothing.

    `options` are the dataset's options (TrainConfig.dataset_options), e.g. imagefolder's folder and size.
    """
    frozen = tuple(normalize_dataset_options(options).items())
    return _load_split(dataset, split, resolve_root(root), bool(download), frozen)


# The key holds the resolved root and the options, so two roots (or two image sizes) are two entries.
@functools.lru_cache(maxsize=16)
def _load_split(dataset: str, split: str, root: str, download: bool, options: tuple) -> ImageData:
    spec = registry.dataset(dataset, dict(options))
    with registry.plugin_code("dataset", dataset, "load"):
        data = spec.load(split, root, download)
    images = data.images
    expected = spec.shape.dims
    dtype = torch.uint8 if spec.shape.kind == "image" else torch.float32  # images as bytes, vectors as floats
    if not isinstance(images, torch.Tensor) or images.dtype != dtype or tuple(images.shape[1:]) != expected:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        what = "images" if spec.shape.kind == "image" else "vectors"
        raise GanzooError(f"dataset '{dataset}' split '{split}' gave {what} {got} {getattr(images, 'dtype', '')}, "
                          f"expected {str(dtype).replace('torch.', '')} N x {' x '.join(map(str, expected))}")
    if dtype == torch.float32 and not torch.isfinite(images).all():
        raise GanzooError(f"dataset '{dataset}' split '{split}' holds values that are not finite numbers")
    if len(images) == 0:
        raise GanzooError(f"dataset '{dataset}' split '{split}' is empty")
    if data.labels is not None and tuple(data.labels.shape) != (len(images),):
        raise GanzooError(f"dataset '{dataset}' split '{split}' gave {tuple(data.labels.shape)} labels "
                          f"for {len(images)} images")
    return data


load_split.cache_clear = _load_split.cache_clear  # tests and long-lived notebooks can drop the cache


SUBSET_SEED = 20_200_611  # one fixed subset per (dataset, N) whatever the run's seed, as ADA's limited-data runs use


def training_subset(data: ImageData, n: int, dataset: str, batch: int = 1) -> tuple[ImageData, dict]:
    """N images of a training split: stratified when it has labels (each class gets its share of N, rounded by
    largest remainder, ties to the lower class), a plain random subset when it has none. The same N images for
    every seed and run (SUBSET_SEED); returns the subset and what run configs record of it."""
    total = len(data.images)
    what = "images" if data.images.dtype == torch.uint8 else "samples"
    if n > total:
        raise GanzooError(f"train-subset {n} is larger than the {total} training {what} of '{dataset}'")
    if n < batch:
        raise GanzooError(f"train-subset {n} is smaller than a batch ({batch} {what} a step); lower --batch-size "
                          "or raise --train-subset")
    g = torch.Generator().manual_seed(SUBSET_SEED)
    if data.labels is None:
        chosen = torch.randperm(total, generator=g)[:n]
        rule = "random"
    else:
        classes, counts = torch.unique(data.labels, return_counts=True)
        share = counts.double() * n / total
        take = share.floor().long()
        remainder = share - take
        order = sorted(range(len(classes)), key=lambda i: (-float(remainder[i]), int(classes[i])))
        for i in order[:n - int(take.sum())]:
            take[i] += 1
        parts = []
        for c, k in zip(classes.tolist(), take.tolist()):
            members = (data.labels == c).nonzero().flatten()
            parts.append(members[torch.randperm(len(members), generator=g)[:k]])
        chosen = torch.cat(parts)
        rule = "stratified by class"
    chosen = chosen.sort().values
    import hashlib

    record = {"size": n, "of": total, "rule": rule, "seed": SUBSET_SEED,
              "indices_sha256": hashlib.sha256(chosen.numpy().astype("int64").tobytes()).hexdigest()[:16]}
    labels = data.labels[chosen] if data.labels is not None else None
    return ImageData(data.images[chosen], labels, {**data.info, "train_subset": record}), record
