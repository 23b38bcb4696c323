"""imagefolder: any folder of images, as a dataset. Options (``--dataset-option key=value``):

  folder=DIR            required. Images anywhere below it. If the top level holds no images but two or more
                        sub-folders, each top-level sub-folder is a class (labels in sorted name order).
  size=64               every image is resized (shorter side to `size`, antialiased) and centre-cropped to
                        size x size, so mixed sizes and aspect ratios are fine.
  channels=3            3 for RGB, 1 for grayscale (ITU-R 601 luma). Alpha is composited onto black.
  holdout=0.1           fraction held out as the 'test' split (the reference for evaluation). The split is
                        fixed by a hash of each file's relative path, so adding images moves no other image
                        between splits. holdout=0 makes evaluation compare against the training images.
  max_pixels=40000000    an image larger than this (width x height, after a JPEG's reduced decoding) is refused
                        before it is decoded: decoding takes several bytes per pixel, in each of up to 8 threads
                        (a 12000 x 12000 PNG took 2.2 GB). 0 allows any size. Refused images are unreadable files
                        (below).
  skip_unreadable=false a file with an image extension that cannot be decoded (truncated, corrupt) is an
                        error naming it, by default: silently dropping data changes the dataset. With true,
                        such files are skipped with a warning, and their count and names go into the run config.

Files are recognised by extension (IMAGE_EXTENSIONS); others, hidden files and folders, and anything that is
not a regular file (a FIFO named pipe.png would block a reader forever) are ignored (and counted). Decoding
happens once per process, in a thread pool (PIL releases the GIL while decoding and
resizing), into one uint8 tensor.
"""
from __future__ import annotations

import functools
import hashlib
import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import DatasetSpec, ImageData, ImageShape

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
DEFAULTS = {"size": "64", "channels": "3", "holdout": "0.1", "max_pixels": "40000000", "skip_unreadable": "false"}
OPTIONS = ("folder", *DEFAULTS)
NAME = "imagefolder"
NEEDS_FOLDER = "needs --dataset-option folder=DIR (a folder of images, optionally one sub-folder per class)"


@dataclass(frozen=True)
class Settings:
    folder: Path
    size: int
    channels: int
    holdout: float
    skip_unreadable: bool
    classes: tuple[str, ...]  # empty: unlabelled
    max_pixels: int = 40_000_000  # 0: no limit


def _fail(message: str) -> GanzooError:
    return GanzooError(f"dataset '{NAME}': {message}")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def parse_options(options: dict) -> Settings:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise _fail(f"unknown option(s) {', '.join(unknown)}; options: {', '.join(OPTIONS)}")
    if not options.get("folder"):
        raise _fail(NEEDS_FOLDER)
    o = {**DEFAULTS, **options}
    folder = Path(o["folder"]).expanduser().absolute()
    if not folder.is_dir():
        raise _fail(f"folder {folder} does not exist or is not a folder")
    try:
        size, channels, holdout = int(o["size"]), int(o["channels"]), float(o["holdout"])
        max_pixels = int(o["max_pixels"])
    except ValueError as exc:
        raise _fail(f"bad option value ({exc}); size, channels and max_pixels are integers, holdout a fraction") \
            from exc
    if max_pixels < 0:
        raise _fail(f"max_pixels must be 0 (no limit) or a positive number of pixels, got {max_pixels}")
    if not 4 <= size <= 1024:
        raise _fail(f"size must be between 4 and 1024, got {size}")
    if channels not in (1, 3):
        raise _fail(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not 0 <= holdout < 1:
        raise _fail(f"holdout must be a fraction in [0, 1), got {holdout}")
    skip = o["skip_unreadable"].strip().lower()
    if skip not in ("true", "false", "1", "0", "yes", "no"):
        raise _fail(f"skip_unreadable must be true or false, got {o['skip_unreadable']!r}")
    # Classes from the top level alone (cheap): sub-folders, when no image sits beside them.
    entries = sorted(e for e in os.listdir(folder) if not e.startswith("."))
    subdirs = tuple(e for e in entries if (folder / e).is_dir())
    top_images = any(_is_image(e) and (folder / e).is_file() for e in entries)
    classes = subdirs if len(subdirs) >= 2 and not top_images else ()
    return Settings(folder, size, channels, holdout, skip in ("true", "1", "yes"), classes, max_pixels)


def _scan(s: Settings) -> tuple[list[tuple[str, int]], int]:
    """Every image below the folder as (relative path, label), sorted; and the count of ignored files."""
    found, ignored = [], 0
    for dirpath, dirnames, filenames in os.walk(s.folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(s.folder)
        for name in filenames:
            if not _is_image(name) or not _regular_or_unknown(os.path.join(dirpath, name)):
                ignored += 1
                continue
            rel = (rel_dir / name).as_posix()
            top = rel.split("/", 1)[0]
            if s.classes and top not in s.classes:
                continue  # a file at the top level, created after the classes were listed
            found.append((rel, s.classes.index(top) if s.classes else -1))
    found.sort()
    if not found:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise _fail(f"no images in {s.folder} (looked recursively for {exts}; {ignored} other files ignored)")
    if s.classes:
        counts = np.bincount([label for _, label in found], minlength=len(s.classes))
        empty = [c for c, n in zip(s.classes, counts) if n == 0]
        if empty:
            raise _fail(f"class folder(s) {', '.join(str(s.folder / c) for c in empty)} hold no images; "
                        "remove them or add images")
    return found, ignored


def _split(found: list[tuple[str, int]], holdout: float) -> dict[str, list[tuple[str, int]]]:
    """The held-out files are those whose path hashes lowest: stable as images are added or removed."""
    n = len(found)
    k = 0 if holdout == 0 or n < 2 else min(max(round(n * holdout), 1), n - 1)
    ranked = sorted(found, key=lambda item: hashlib.sha1(item[0].encode()).hexdigest())
    test = set(ranked[:k])
    return {"train": [f for f in found if f not in test], "test": [f for f in found if f in test]}


def _regular_or_unknown(path: str) -> bool:
    """Whether a path is a regular file (after symlinks); a path that cannot be examined counts as one, so that
    reading it reports why."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _read(path: Path, size: int, mode: str, max_pixels: int = 0) -> np.ndarray:
    from PIL import Image, ImageOps

    if not stat.S_ISREG(os.stat(path).st_mode):  # replaced since the scan: opening a FIFO would never return
        raise OSError("not a regular file")
    with Image.open(path) as im:
        im.draft(mode, (size, size))  # JPEG: let the decoder downscale by a power of two first (much faster)
        w, h = im.size
        if max_pixels and w * h > max_pixels:  # the header says the size: refused before any pixel is decoded
            raise ValueError(f"{w} x {h} = {w * h:,} pixels, above max_pixels={max_pixels} (decoding would take "
                             f"about {w * h * 4 / 2**30:.1f} GiB; --dataset-option max_pixels=0 allows any size)")
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            im.alpha_composite(rgba)
        im = im.convert(mode)
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BICUBIC)  # PIL widens the filter when shrinking: antialiased
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)))


def _decode_into(s: Settings, out: np.ndarray, job: tuple[int, Path]):
    """Decode image i straight into row i of the N x C x H x W output; an error comes back as a string."""
    i, path = job
    try:
        pixels = _read(path, s.size, "RGB" if s.channels == 3 else "L", s.max_pixels)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        return f"{type(exc).__name__}: {exc}".replace("\n", " ")
    out[i] = pixels[None] if s.channels == 1 else pixels.transpose(2, 0, 1)
    return None


def load(s: Settings, split: str, root: str = "", download: bool = False) -> ImageData:
    found, ignored = _scan(s)
    splits = _split(found, s.holdout)
    if split not in splits:
        raise _fail(f"has splits 'train' and 'test', not '{split}'")
    files = splits[split]
    if not files:
        raise _fail(f"split '{split}' of {s.folder} is empty ({len(found)} images, holdout {s.holdout})")
    array = np.empty((len(files), s.channels, s.size, s.size), dtype=np.uint8)  # filled in place: no copies
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        errors = list(pool.map(functools.partial(_decode_into, s, array),
                               [(i, s.folder / rel) for i, (rel, _) in enumerate(files)]))
    bad = [(rel, e) for (rel, _), e in zip(files, errors) if e is not None]
    if bad and not s.skip_unreadable:
        raise _fail(f"cannot read image {s.folder / bad[0][0]} ({bad[0][1]}); {len(bad)} unreadable of {len(files)} "
                    f"in split '{split}': fix or remove them, or pass --dataset-option skip_unreadable=true")
    if bad:
        print(f"ganzoo: warning: dataset '{NAME}': skipped {len(bad)} unreadable of {len(files)} images in split "
              f"'{split}' (first: {s.folder / bad[0][0]}: {bad[0][1]})", file=sys.stderr)
        ok = [i for i, e in enumerate(errors) if e is None]
        if not ok:
            raise _fail(f"none of the {len(files)} images in split '{split}' of {s.folder} could be read")
        array = array[ok]
    kept = [f for f, e in zip(files, errors) if e is None]
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64) if s.classes else None
    listing = "\n".join(f"{rel}\t{(s.folder / rel).stat().st_size}" for rel, _ in kept)
    info = {"source": str(s.folder), "count": len(kept), "classes": list(s.classes),
            "split_rule": f"holdout {s.holdout}: files with the lowest sha1(relative path) form 'test'",
            "resize": f"shorter side to {s.size} (bicubic, antialiased), centre crop {s.size}x{s.size}",
            "files_sha256": hashlib.sha256(listing.encode()).hexdigest()[:16],  # names and sizes of the files used
            "ignored_non_images": ignored, "skipped_unreadable": len(bad),
            "skipped_files": [rel for rel, _ in bad[:20]]}
    return ImageData(torch.from_numpy(array), labels, info)


def configure(options: dict) -> DatasetSpec:
    s = parse_options(options)
    return DatasetSpec(
        name=NAME,
        description=f"images in {s.folder}, {s.size}x{s.size}, {'RGB' if s.channels == 3 else 'grayscale'}",
        shape=ImageShape(s.channels, s.size),
        load=functools.partial(load, s),
        num_classes=len(s.classes) or None,
        train_split="train",
        reference_split="test" if s.holdout > 0 else "train",
        source=str(s.folder),
        configure=configure,
    )


def _unconfigured(split: str, root: str = "", download: bool = False) -> ImageData:
    raise _fail(NEEDS_FOLDER)  # registry.dataset() configures first; this is for direct callers of .load


@hookimpl
def ganzoo_datasets():
    return [DatasetSpec(
        name=NAME,
        description="your own images: --dataset-option folder=DIR [size=64 channels=3 holdout=0.1 "
                    "max_pixels=40000000 skip_unreadable=false]; class sub-folders give labels",
        shape=ImageShape(3, 64),  # the defaults; the configured spec has the real shape
        load=_unconfigured,
        configure=configure,
    )]
