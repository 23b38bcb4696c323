"""Generate images from a generator or a stored run: uint8 N x C x H x W, and PNG grids."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import checkpoint, registry
from .devices import resolve_device
from .errors import GanzooError
from .files import atomic_write
from .runs import CONFIG_FILE, Run, open_run
from .specs import ImageShape


def fixed_noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Standard normal latents drawn on the CPU from `seed`: the same vectors on every device and variant."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255], rounding to nearest."""
    return images.detach().float().add(1).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def generate(generator: torch.nn.Module, n: int, latent_dim: int, seed: int, batch_size: int = 500) -> torch.Tensor:
    """n images as a uint8 CPU tensor; the generator is left in the mode it was in."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        z = fixed_noise(n, latent_dim, seed)
        chunks = [to_uint8(generator(z[i:i + batch_size].to(device))).cpu() for i in range(0, n, batch_size)]
    finally:
        generator.train(was_training)
    return torch.cat(chunks)


def save_grid(images: torch.Tensor, path: Path | str, nrow: Optional[int] = None) -> Path:
    """Write uint8 images as one PNG grid (torchvision's make_grid), atomically."""
    from torchvision.utils import save_image

    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    buffer = io.BytesIO()
    save_image(images.float() / 255.0, buffer, nrow=nrow, padding=2, pad_value=1.0, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return Path(path)


def load_generator(run: Run | Path | str, device: str = "auto") -> tuple[torch.nn.Module, Run]:
    """Rebuild a run's generator from its architecture plugin and checkpoint (checked against run.json): the
    exponential moving average of its weights when the run kept one (TrainConfig.ema), else the last weights."""
    run = run if isinstance(run, Run) else open_run(run)
    if not run.checkpoint.is_file():
        raise GanzooError(f"run {run.path} has no checkpoint ({run.checkpoint.name}); was it trained?")
    payload = checkpoint.load(run.checkpoint, expected_sha256=run.stats.get("checkpoint_sha256"))
    arch = registry.architecture(run.config.arch, run.config.arch_options)
    resolved = _resolved_shape(run)
    generator = arch.build_generator(run.config.latent_dim, resolved)
    part = "generator_ema" if run.config.ema else "generator"  # with EMA on, the averaged weights are the result
    if part not in payload:
        raise GanzooError(f"checkpoint {run.checkpoint} has no {part} weights, which this run's config needs")
    checkpoint.load_state(generator, payload[part], run.checkpoint, part)
    return generator.to(resolve_device(device)), run


def _resolved_shape(run: Run) -> ImageShape:
    from .files import read_json

    shape = read_json(run.path / CONFIG_FILE, "run config").get("resolved", {}).get("dataset", {}).get("shape")
    if not shape:
        return registry.dataset(run.config.dataset, run.config.dataset_options).shape
    try:
        return ImageShape(int(shape["channels"]), int(shape["size"]))
    except (KeyError, TypeError, ValueError):
        raise GanzooError(f"run config {run.path / CONFIG_FILE} is malformed (dataset shape {shape!r})") from None


def sample(run: Run | Path | str, n: int = 64, seed: int = 0, out: Optional[Path | str] = None,
           grid: Optional[Path | str] = None, device: str = "auto", batch_size: int = 500) -> torch.Tensor:
    """Generate n images from a trained run; optionally save them (.npz, key "images") and a PNG grid."""
    if not isinstance(n, int) or n <= 0:
        raise GanzooError(f"n must be a positive integer, got {n!r}")
    generator, run = load_generator(run, device)
    images = generate(generator, n, run.config.latent_dim, seed, batch_size)
    if out is not None:
        out = Path(out)
        if out.suffix != ".npz":
            raise GanzooError(f"--out must name a .npz file, got {out}")
        atomic_write(out, lambda f: np.savez_compressed(f, images=images.numpy()))
    if grid is not None:
        save_grid(images[:256], grid)
    return images
