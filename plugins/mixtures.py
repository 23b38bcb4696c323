"""ring and grid: the 2-D mixtures of Gaussians on which mode collapse is measured (VEEGAN, PacGAN, Unrolled GAN).

As the PacGAN code defines them (its config.py files): ring = 8 Gaussians with means (cos 2 pi i/8, sin 2 pi i/8) on
a circle of radius 1, std 0.01 per axis; grid = 25 Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05; equal weights; a
fixed training set of 100,000 points. (The Unrolled GAN demo notebook spaces its ring with linspace(0, 2 pi, 8),
which puts two modes on one point: 7 distinct modes. Not that.) Each point's label is its mode, so the sets are
labelled. The samples are float32 vectors, not images: their metric is `mixture-modes` and their picture a scatter
plot. Options change the number of modes, radius or spacing, std and set size; the split seeds are fixed, so the
same options give the same points on every machine.
"""
from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, Option, VectorShape

SPLIT_SEEDS = {"train": 0, "test": 1}  # the held-out reference set is drawn independently of the training set


def ring_means(modes: int, radius: float) -> np.ndarray:
    angles = 2 * math.pi * np.arange(modes) / modes
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def grid_means(side: int, spacing: float) -> np.ndarray:
    """side x side points, `spacing` apart, centred on the origin: {-4, -2, 0, 2, 4}^2 for 5 and 2."""
    axis = (np.arange(side) - (side - 1) / 2) * spacing
    return np.array([[x, y] for x in axis for y in axis])


@functools.lru_cache(maxsize=8)
def sample_mixture(means_key: tuple, std: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points of the equal-weight mixture: a uniformly drawn mode per point, plus N(0, std^2 I)."""
    means = np.array(means_key)
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(means), size=n)
    points = means[labels] + rng.normal(0.0, std, size=(n, means.shape[1]))
    return points.astype(np.float32), labels.astype(np.int64)


def mixture_dataset(name: str, description: str, means: np.ndarray, std: float, size: int, rule: str,
                    options: dict, configure) -> DatasetSpec:
    means_key = tuple(map(tuple, np.round(means, 12).tolist()))

    def load(split: str, root=None, download: bool = False) -> ImageData:
        if split not in SPLIT_SEEDS:
            raise GanzooError(f"dataset '{name}' has splits 'train' and 'test', not '{split}'")
        points, labels = sample_mixture(means_key, std, size, SPLIT_SEEDS[split])
        info = {"construction": f"{rule}; {size} points, equal weights, seed {SPLIT_SEEDS[split]}",
                "points_sha256": hashlib.sha256(points.tobytes()).hexdigest()[:16], "count": size}
        return ImageData(torch.from_numpy(points.copy()), torch.from_numpy(labels.copy()), info)

    return DatasetSpec(
        name=name, description=description, shape=VectorShape(2), load=load, num_classes=len(means),
        source="Srivastava et al. 2017 (VEEGAN, arXiv:1705.07761); Lin et al. 2018 (PacGAN, arXiv:1712.04086), "
               "as the PacGAN code defines them",
        options=options, configure=configure, metrics=("mixture-modes",),
        metadata={"mixture": {"means": [list(m) for m in means_key], "std": std}})


def _checked(dataset: str, size: int, std: float, modes: int) -> None:
    if size < 2:
        raise GanzooError(f"dataset '{dataset}' option train_size must be at least 2, got {size}")
    if not std > 0:
        raise GanzooError(f"dataset '{dataset}' option std must be positive, got {std}")
    if modes < 1:
        raise GanzooError(f"dataset '{dataset}' needs at least one mode, got {modes}")


RING_OPTIONS = {"modes": Option(8, "Gaussians on the circle"), "radius": Option(1.0, "radius of the circle"),
                "std": Option(0.01, "standard deviation of each Gaussian, per axis"),
                "train_size": Option(100_000, "points in the training set (and in the reference set)")}
GRID_OPTIONS = {"side": Option(5, "Gaussians per row and column (side^2 modes)"),
                "spacing": Option(2.0, "distance between neighbouring means"),
                "std": Option(0.05, "standard deviation of each Gaussian, per axis"),
                "train_size": Option(100_000, "points in the training set (and in the reference set)")}


def ring(modes: int = 8, radius: float = 1.0, std: float = 0.01, train_size: int = 100_000) -> DatasetSpec:
    _checked("ring", train_size, std, modes)
    if not radius > 0:
        raise GanzooError(f"dataset 'ring' option radius must be positive, got {radius}")
    return mixture_dataset(
        "ring", f"{modes} 2-D Gaussians on a circle of radius {radius:g}, std {std:g} (the mode-collapse benchmark)",
        ring_means(modes, radius), std, train_size, f"means (r cos 2 pi i/{modes}, r sin 2 pi i/{modes}), r={radius:g}, "
        f"std {std:g}", RING_OPTIONS, lambda o: ring(o["modes"], o["radius"], o["std"], o["train_size"]))


def grid(side: int = 5, spacing: float = 2.0, std: float = 0.05, train_size: int = 100_000) -> DatasetSpec:
    _checked("grid", train_size, std, side)
    if not spacing > 0:
        raise GanzooError(f"dataset 'grid' option spacing must be positive, got {spacing}")
    return mixture_dataset(
        "grid", f"{side * side} 2-D Gaussians on a {side}x{side} grid, spacing {spacing:g}, std {std:g} "
                "(the mode-collapse benchmark)",
        grid_means(side, spacing), std, train_size, f"means on a {side}x{side} grid spaced {spacing:g}, std {std:g}",
        GRID_OPTIONS, lambda o: grid(o["side"], o["spacing"], o["std"], o["train_size"]))


@hookimpl
def ganzoo_datasets():
    return [ring(), grid()]
