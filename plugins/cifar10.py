"""cifar10: CIFAR-10 (50,000 train / 10,000 test 32x32 colour images, 10 classes).

Layout and download come from torchvision.datasets.CIFAR10: <data root>/cifar-10-batches-py/{data_batch_1..5,
test_batch, batches.meta}, fetched (and md5-checked) with --download. The pickle batches are read here rather
than by constructing torchvision's class, because that class refuses any file whose md5 differs from the
published one, which makes it impossible to test with small synthetic batches and gives no file name when a
batch is damaged. The md5s are still compared with torchvision's list: the result is recorded in the run's
config (info.md5_matches_torchvision) and a mismatch prints a warning, since scores on altered data are not
comparable with published CIFAR-10 numbers. Pickles are read with an unpickler that only builds numpy arrays.
"""
from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape

# What a CIFAR batch may contain besides plain Python values: numpy arrays (numpy 1 and 2 module names).
_ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
_ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
             ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}  # Python 3 pickles bytes via encode


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch holds only arrays)")


def _tv():
    from torchvision.datasets import CIFAR10

    return CIFAR10


def _layout(root: str) -> tuple[Path, dict[str, list[tuple[str, str]]]]:
    tv = _tv()
    return Path(root) / tv.base_folder, {"train": [tuple(x) for x in tv.train_list],
                                         "test": [tuple(x) for x in tv.test_list]}


def _how_to_get(root: str) -> str:
    tv = _tv()
    return (f"download {tv.url} and extract it into {root} (it unpacks to {tv.base_folder}/), "
            f"or point --data-root at the folder that holds {tv.base_folder}/")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()  # the batches are Python 2 pickles
    except Exception as exc:  # noqa: BLE001 - a damaged pickle fails in many ways (EOFError, UnpicklingError...)
        raise GanzooError(f"dataset 'cifar10': cannot read {path} ({type(exc).__name__}: {exc}); it may be "
                          "truncated or corrupt: delete it and fetch it again".replace("\n", " ")) from exc
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise GanzooError(f"dataset 'cifar10': {path} is not a CIFAR-10 batch (no 'data' and 'labels' entries)")
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise GanzooError(f"dataset 'cifar10': {path} holds data {data.shape} {data.dtype} and {len(labels)} labels, "
                          "expected uint8 N x 3072 with N labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise GanzooError(f"dataset 'cifar10': {path} has labels outside 0-9")
    return data, labels


def _give_back_freed_memory() -> None:
    """Unpickling leaves ~100 MB of freed copies that glibc keeps for reuse; hand them back to the OS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(split: str, root: str, download: bool = False) -> ImageData:
    folder, files = _layout(root)
    if split not in files:
        raise GanzooError(f"dataset 'cifar10' has splits 'train' and 'test', not '{split}'")
    needed = [name for name, _ in files[split]]
    if download and not all((folder / n).is_file() for n in needed):
        from torchvision.datasets.utils import download_and_extract_archive

        tv = _tv()
        try:
            download_and_extract_archive(tv.url, root, filename=tv.filename, md5=tv.tgz_md5)
        except Exception as exc:  # noqa: BLE001 - offline machines fail here in many ways
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise GanzooError(f"dataset 'cifar10': download into {root} failed ({reason}); "
                              f"instead, {_how_to_get(root)}") from exc
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        all_files = [n for n, _ in files["train"] + files["test"]] + [_tv().meta["filename"]]
        raise GanzooError(f"dataset 'cifar10': expected the CIFAR-10 python batches {folder}/{{{', '.join(all_files)}}}"
                          f" (torchvision layout), missing for split '{split}': {', '.join(missing)}; "
                          f"pass --download to fetch them (needs a network), or {_how_to_get(root)}")
    batches = [_read_batch(folder / n) for n in needed]
    mismatched = [name for name, md5 in files[split] if _md5(folder / name) != md5]
    if mismatched:
        print(f"ganzoo: warning: dataset 'cifar10': {', '.join(mismatched)} in {folder} differ from the published "
              "CIFAR-10 files (md5); scores on this data are not comparable with published numbers", file=sys.stderr)
    data = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    del batches
    _give_back_freed_memory()
    images = torch.from_numpy(data).view(-1, 3, 32, 32)  # rows are channel-major R, G, B planes of 32x32
    info = {"source": [str(folder / n) for n in needed], "reader": "ganzoo pickle reader (torchvision layout)",
            "md5_matches_torchvision": not mismatched, "count": len(images),
            "split_rule": "the official split: data_batch_1-5 (50,000) train / test_batch (10,000) test"}
    return ImageData(images, torch.from_numpy(labels), info)


@hookimpl
def ganzoo_datasets():
    return [DatasetSpec(
        name="cifar10",
        description="CIFAR-10 32x32 colour images, 50,000 train / 10,000 test (torchvision layout under --data-root)",
        shape=ImageShape(3, 32),
        load=load,
        num_classes=10,
        source="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images; "
               "https://www.cs.toronto.edu/~kriz/cifar.html",
    )]
