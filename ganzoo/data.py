"""Load a dataset split once per process, check it against its declared shape, keep it as uint8."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from . import registry
from .errors import GanzooError
from .specs import ImageData


@functools.lru_cache(maxsize=16)
def load_split(dataset: str, split: str, root: Optional[str] = None, download: bool = False) -> ImageData:
    """The whole split as ImageData; loading the same split again in one process costs nothing."""
    spec = registry.dataset(dataset)
    data = spec.load(split, root, download)
    images = data.images
    expected = (spec.shape.channels, spec.shape.size, spec.shape.size)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise GanzooError(f"dataset '{dataset}' split '{split}' gave images {got} "
                          f"{getattr(images, 'dtype', '')}, expected uint8 N x {' x '.join(map(str, expected))}")
    if len(images) == 0:
        raise GanzooError(f"dataset '{dataset}' split '{split}' is empty")
    return data
