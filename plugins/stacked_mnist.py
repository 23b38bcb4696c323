"""stacked-mnist: 1,000 modes from MNIST digits, three to an image (Metz et al. 2017; Srivastava et al. 2017).

Each image has 3 channels, each channel an independent MNIST digit; its label is the triple (100 a + 10 b + c),
so there are 1,000 modes. The construction is fixed and seeded: image i of a split takes three digits drawn
uniformly with replacement from the source dataset's split of the same name (train from train, the reference
from test), so the same options give the same images on every machine. The source is `mnist5k` (offline, 4,000
training digits) or `mnist` (60,000; its files under the data root). Its metric is `stacked-modes`: every
channel of a generated image classified by the source's reference classifier, modes captured and KL to uniform.

Sizes as published: setting "V" (VEEGAN, PacGAN Table 2) trains on 128,000 images and scores 26,000 samples;
setting "U" (Unrolled GAN, PacGAN Table 3) draws training images on the fly and scores 25,600. The default
training set here is 128,000 images (301 MB as uint8); `train_size` makes it smaller.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape, Option

SOURCES = ("mnist5k", "mnist")
SPLIT_SEEDS = {"train": 0, "test": 1}
OPTIONS = {"source": Option("mnist5k", "the digits: mnist5k (offline) or mnist (the full set, from the data root)"),
           "train_size": Option(128_000, "stacked images in the training split"),
           "test_size": Option(26_000, "stacked images in the reference split")}


def stack(digits: torch.Tensor, labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      np.ndarray]:
    """n images of 3 channels, channel k the digit picks[:, k]; returns (images, labels, picks)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(digits), size=(n, 3))
    index = torch.from_numpy(picks)
    images = digits[:, 0][index]  # (n, 3, 28, 28): channel k = digit picks[:, k]
    triple = labels[index]
    return images.contiguous(), triple[:, 0] * 100 + triple[:, 1] * 10 + triple[:, 2], picks


def stacked_mnist(source: str = "mnist5k", train_size: int = 128_000, test_size: int = 26_000) -> DatasetSpec:
    if source not in SOURCES:
        raise GanzooError(f"dataset 'stacked-mnist' option source must be one of {', '.join(SOURCES)}, got {source!r}")
    for name, value in (("train_size", train_size), ("test_size", test_size)):
        if value < 2:
            raise GanzooError(f"dataset 'stacked-mnist' option {name} must be at least 2, got {value}")
    sizes = {"train": train_size, "test": test_size}

    def load(split: str, root=None, download: bool = False) -> ImageData:
        from ganzoo.data import load_split

        if split not in sizes:
            raise GanzooError(f"dataset 'stacked-mnist' has splits 'train' and 'test', not '{split}'")
        digits = load_split(source, split, root, download)
        if digits.labels is None:
            raise GanzooError(f"dataset 'stacked-mnist': source '{source}' has no labels")
        images, labels, picks = stack(digits.images, digits.labels, sizes[split], SPLIT_SEEDS[split])
        info = {"construction": f"3 digits of {source} '{split}' per image, drawn uniformly with replacement, "
                                f"seed {SPLIT_SEEDS[split]}",
                "source_info": digits.info, "picks_sha256": hashlib.sha256(picks.tobytes()).hexdigest()[:16],
                "count": sizes[split]}
        return ImageData(images, labels, info)

    return DatasetSpec(
        name="stacked-mnist",
        orientation_sensitive=True,  # each channel a digit
        description=f"Stacked MNIST: 3 independent {source} digits per image, one per channel, 1,000 modes "
                    f"({train_size:,} train / {test_size:,} reference images)",
        shape=ImageShape(3, 28), load=load, num_classes=1000,
        source="Metz et al. 2017 (Unrolled GAN, arXiv:1611.02163); Srivastava et al. 2017 (VEEGAN, "
               "arXiv:1705.07761); digits: LeCun et al. 1998",
        options=OPTIONS, configure=lambda o: stacked_mnist(o["source"], o["train_size"], o["test_size"]),
        metrics=("stacked-modes",), metadata={"stacked": {"source": source, "channels": 3}})


@hookimpl
def ganzoo_datasets():
    return [stacked_mnist()]
