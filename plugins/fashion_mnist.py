"""fashion-mnist: Zalando's Fashion-MNIST (60,000 train / 10,000 test 28x28 clothing images, 10 classes).

Read through torchvision.datasets.FashionMNIST from <data root>/FashionMNIST/raw/ (torchvision's layout). When
nothing is there, the Debian package dataset-fashion-mnist is used: its gzipped idx files in DEBIAN_DIR are read
directly, because Debian recompressed them and torchvision's download check (md5 of the .gz) would reject them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape

from .idx import SPLIT_FILES, SPLIT_RULE, load_torchvision_layout, read_idx, to_image_data

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # a module constant so tests can point it elsewhere


def how_to_get() -> str:
    return ("copy the four unzipped idx files there, or install the Debian package dataset-fashion-mnist "
            f"(read from {DEBIAN_DIR} when the data root has no Fashion-MNIST files)")


def _from_debian(split: str) -> Optional[ImageData]:
    """The split from the Debian package's .gz files, or None when the package is not installed."""
    paths = [DEBIAN_DIR / f"{name}.gz" for name in SPLIT_FILES[split]]
    if not any(p.is_file() for p in paths):
        return None
    for p in paths:
        if not p.is_file():
            raise GanzooError(f"dataset 'fashion-mnist': {DEBIAN_DIR} lacks {p.name}; reinstall the Debian package "
                              "dataset-fashion-mnist")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    info = {"source": [str(p) for p in paths], "reader": "ganzoo idx reader (Debian dataset-fashion-mnist .gz)",
            "split_rule": SPLIT_RULE}
    return to_image_data("fashion-mnist", images, labels, paths[0], paths[1], info)


def load(split: str, root: str, download: bool = False) -> ImageData:
    from torchvision.datasets import FashionMNIST

    return load_torchvision_layout("fashion-mnist", FashionMNIST, split, root, download, how_to_get,
                                   fallback=lambda: _from_debian(split))


@hookimpl
def ganzoo_datasets():
    return [DatasetSpec(
        name="fashion-mnist",
        description="Fashion-MNIST clothing, 60,000 train / 10,000 test (torchvision layout or Debian package)",
        shape=ImageShape(1, 28),
        load=load,
        num_classes=10,
        source="Xiao, Rasul & Vollgraf 2017, Fashion-MNIST (arXiv:1708.07747)",
    )]
