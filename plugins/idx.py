"""Shared by the mnist and fashion-mnist plugins: the torchvision layout and a checked idx reader.

Not a plugin itself (it implements no hook). The idx format (LeCun's MNIST files) is: 2 zero bytes, a type
byte (0x08 = uint8), a dimension count byte, one big-endian uint32 per dimension, then the data, row-major.
torchvision reads these files itself, but it reports a truncated file as a bare reshape error without its
name, so every file is checked here first (header and length: cheap) and errors name the file.
"""
from __future__ import annotations

import gzip
import struct
import sys
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ganzoo.errors import GanzooError
from ganzoo.specs import ImageData

# split -> (images file, labels file), the names torchvision and the original distribution use
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = [name for pair in SPLIT_FILES.values() for name in pair]
SPLIT_RULE = "the official split: 60,000 train / 10,000 test (t10k)"
DOWNLOAD_HINT = "pass --download to fetch them (needs a network)"


def _expected_dims(name: str) -> int:
    return 3 if "images" in name else 1


def _parse_header(head: bytes, path: Path, ndim: int) -> tuple[int, ...]:
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise GanzooError(f"{path} is not an idx file (bad magic number); delete it and fetch it again")
    if head[2] != 0x08 or head[3] != ndim:
        raise GanzooError(f"{path} is an idx file of type 0x{head[2]:02x} with {head[3]} dimensions, expected "
                          f"uint8 (0x08) with {ndim}; is it the right file?")
    if len(head) < 4 + 4 * ndim:
        raise GanzooError(f"{path} is truncated: its header is incomplete; delete it and fetch it again")
    return struct.unpack(">" + "I" * ndim, head[4:4 + 4 * ndim])


def check_idx_file(path: Path) -> tuple[int, ...]:
    """Header and length of an uncompressed idx file, without reading its data."""
    ndim = _expected_dims(path.name)
    with open(path, "rb") as f:
        dims = _parse_header(f.read(4 + 4 * ndim), path, ndim)
    need = 4 + 4 * ndim + int(np.prod(dims))
    size = path.stat().st_size
    if size != need:
        what = "truncated" if size < need else "longer than its header says"
        raise GanzooError(f"{path} is {what}: header says {' x '.join(map(str, dims))} ({need} bytes), "
                          f"the file has {size} bytes; delete it and fetch it again")
    return dims


def read_idx(path: Path) -> np.ndarray:
    """A whole idx file (plain or .gz) as a uint8 array, checked; errors name the file.

    The data is read straight into its final array (no intermediate bytes object), so the peak memory is the
    dataset itself.
    """
    ndim = _expected_dims(path.name)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            dims = _parse_header(f.read(4 + 4 * ndim), path, ndim)
            data = np.empty(int(np.prod(dims)), dtype=np.uint8)
            view, got = memoryview(data), 0
            while got < data.size:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            extra = f.read(1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut gzip raises EOFError
        raise GanzooError(f"{path} is not readable ({type(exc).__name__}: {exc}); it may be truncated or "
                          "corrupt: reinstall or fetch it again") from exc
    if got < data.size or extra:
        what = "truncated" if got < data.size else "longer than its header says"
        raise GanzooError(f"{path} is {what}: header says {' x '.join(map(str, dims))} "
                          f"({data.size} bytes of data), found {got if got < data.size else 'more'}")
    return data.reshape(dims)


def to_image_data(name: str, images, labels, image_path: Path, label_path: Path, info: dict) -> ImageData:
    """(N, 28, 28) images and (N,) labels -> ImageData (N, 1, 28, 28), checking they belong together."""
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if len(images) != len(labels):
        raise GanzooError(f"dataset '{name}': {image_path} holds {len(images)} images but {label_path} holds "
                          f"{len(labels)} labels; the two files do not belong together")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise GanzooError(f"dataset '{name}': {label_path} has labels outside 0-9 (max {int(labels.max())})")
    if tuple(images.shape[1:]) != (28, 28):
        raise GanzooError(f"dataset '{name}': {image_path} holds images of {tuple(images.shape[1:])}, "
                          "expected 28 x 28")
    return ImageData(images.unsqueeze(1).contiguous(), labels, {**info, "count": len(images)})


def load_torchvision_layout(name: str, tv_class: type, split: str, root: str, download: bool,
                            missing_hint: Callable[[], str] | str,
                            fallback: Optional[Callable[[], Optional[ImageData]]] = None) -> ImageData:
    """Load one split of an MNIST-like dataset from <root>/<Class>/raw/ through torchvision's class.

    `fallback` is tried when nothing at all is under the data root (fashion-mnist: the Debian package), also
    after a failed --download (offline), with a warning saying so.
    """
    missing_hint = missing_hint() if callable(missing_hint) else missing_hint
    if split not in SPLIT_FILES:
        raise GanzooError(f"dataset '{name}' has splits 'train' and 'test', not '{split}'")
    raw = Path(root) / tv_class.__name__ / "raw"
    files = [raw / f for f in ALL_FILES]
    if download and not all(f.is_file() for f in files):
        try:
            tv_class(root, train=split == "train", download=True)
        except Exception as exc:  # noqa: BLE001 - offline machines fail here in many ways (DNS, proxy, TLS)
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            data = fallback() if fallback is not None and not any(f.is_file() for f in files) else None
            if data is None:
                raise GanzooError(f"dataset '{name}': download into {raw} failed ({reason}); instead, "
                                  f"{missing_hint}") from exc
            print(f"ganzoo: warning: dataset '{name}': download into {raw} failed ({reason}); using "
                  f"{Path(data.info['source'][0]).parent} instead", file=sys.stderr)
            return data
    present = [f for f in files if f.is_file()]
    if not present and fallback is not None:
        data = fallback()
        if data is not None:
            return data
    if len(present) < len(files):
        missing = [f.name for f in files if not f.is_file()]
        gz = [f"{m}.gz" for m in missing if (raw / f"{m}.gz").is_file()]
        hint = f" ({', '.join(gz)} found there: gunzip them)" if gz else ""
        raise GanzooError(f"dataset '{name}': expected the 4 idx files {raw}/{{{', '.join(ALL_FILES)}}} "
                          f"(torchvision layout), missing: {', '.join(missing)}{hint}; {DOWNLOAD_HINT}, "
                          f"or {missing_hint}")
    image_path, label_path = (raw / f for f in SPLIT_FILES[split])
    check_idx_file(image_path)
    check_idx_file(label_path)
    try:
        dataset = tv_class(root, train=split == "train", download=False)
    except Exception as exc:  # noqa: BLE001 - torchvision raises bare asserts/RuntimeErrors on bad files
        raise GanzooError(f"dataset '{name}': torchvision could not read {image_path.parent} "
                          f"({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
    info = {"source": [str(image_path), str(label_path)], "reader": f"torchvision.datasets.{tv_class.__name__}",
            "split_rule": SPLIT_RULE}
    return to_image_data(name, dataset.data, dataset.targets, image_path, label_path, info)
