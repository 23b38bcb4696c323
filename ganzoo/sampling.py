"""Generate samples from a generator or a stored run, and their pictures.

Images come out as uint8 N x C x H x W and are pictured as a PNG grid; vectors (2-D points, say) come out as
float32 N x F and are pictured as a scatter plot of the first two coordinates over the real data, drawn faint
behind them (the mixture-of-Gaussians figures of the mode-collapse papers)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from . import checkpoint, registry
from .devices import resolve_device
from .errors import GanzooError
from .files import atomic_write
from .runs import CONFIG_FILE, Run, open_run
from .specs import ImageShape, SampleShape, VectorShape

POINTS_IN_PICTURE = 2500  # generated points in a vector dataset's picture, as the PacGAN/VEEGAN figures show


def fixed_noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Standard normal latents drawn on the CPU from `seed`: the same vectors on every device and variant."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255], rounding to nearest."""
    return images.detach().float().add(1).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def as_samples(output: torch.Tensor) -> torch.Tensor:
    """A generator's output as stored samples: images (4-d) as uint8, vectors as float32."""
    return to_uint8(output) if output.dim() == 4 else output.detach().float()


@torch.no_grad()
def generate(generator: torch.nn.Module, n: int, latent_dim: int, seed: int, batch_size: int = 500,
             labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """n samples as a CPU tensor (uint8 images or float32 vectors); the generator is left in its mode. A conditional
    generator (ganzoo.conditioning) needs `labels`: the class each sample is asked for (n int64s). The latents are
    the same with or without labels."""
    from .conditioning import is_conditional

    device = next(generator.parameters()).device
    conditional = is_conditional(generator)
    if conditional and labels is None:
        raise GanzooError("this generator is class-conditional: pass the labels to generate")
    if not conditional and labels is not None:
        raise GanzooError("labels given to a generator that is not class-conditional (trained with --condition none)")
    if labels is not None and len(labels) != n:
        raise GanzooError(f"{len(labels)} labels for {n} samples")
    was_training = generator.training
    generator.eval()
    try:
        z = fixed_noise(n, latent_dim, seed)
        if labels is None:
            chunks = [as_samples(generator(z[i:i + batch_size].to(device))).cpu() for i in range(0, n, batch_size)]
        else:
            labels = torch.as_tensor(labels).long()
            chunks = [as_samples(generator(z[i:i + batch_size].to(device),
                                           labels[i:i + batch_size].to(device))).cpu() for i in range(0, n, batch_size)]
    finally:
        generator.train(was_training)
    return torch.cat(chunks)


def grid_count(generator: torch.nn.Module, shape: SampleShape, images: int = 64) -> int:
    """How many samples a run's picture shows: picture_size's count, or for a conditional generator of images eight
    per class (a row each)."""
    from .conditioning import is_conditional

    if shape.kind == "image" and is_conditional(generator):
        return 8 * generator.num_classes
    return picture_size(shape, images)


def grid_labels(generator: torch.nn.Module, n: int) -> Optional[torch.Tensor]:
    """The labels of a sample grid of n images, 8 to a row: row k asks for class k mod K (None: unconditional)."""
    from .conditioning import is_conditional

    if not is_conditional(generator):
        return None
    return (torch.arange(n) // 8) % generator.num_classes


def picture_size(shape: SampleShape, images: int = 64) -> int:
    """How many samples a picture of this kind of data shows: a grid of images, or a cloud of points."""
    return POINTS_IN_PICTURE if shape.kind == "vector" else images


def picture(samples: torch.Tensor, real: Optional[torch.Tensor] = None, nrow: Optional[int] = None,
            title: str = "") -> torch.Tensor:
    """uint8 3 x H x W: a grid of images (torchvision's make_grid), or a scatter plot of points (matplotlib)
    with `real` points drawn faint behind them."""
    if samples.dim() == 4:
        from torchvision.utils import make_grid

        nrow = nrow or max(1, int(math.ceil(math.sqrt(len(samples)))))
        grid = make_grid(samples.float() / 255.0, nrow=nrow, padding=2, pad_value=1.0)
        return grid.mul(255).round().clamp(0, 255).to(torch.uint8)
    from PIL import Image

    with Image.open(io.BytesIO(_scatter_png(samples, real, title))) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def _scatter_png(points: torch.Tensor, real: Optional[torch.Tensor], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = points.float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    if real is not None and len(real):
        real = real.float().cpu().numpy()
        ax.scatter(real[:, 0], real[:, 1], s=4, c="#1f77b4", alpha=0.08, linewidths=0, label="real")
    ax.scatter(points[:, 0], points[:, 1], s=3, c="black", alpha=0.35, linewidths=0, label="generated")
    if real is not None and len(real):  # frame the data, so that a collapsed cloud is seen against it
        low, high = real[:, :2].min(0), real[:, :2].max(0)
        pad = 0.15 * (high - low).max() + 1e-6
        ax.set_xlim(low[0] - pad, high[0] + pad)
        ax.set_ylim(low[1] - pad, high[1] + pad)
    ax.set_aspect("equal")
    ax.set_title(title or f"{len(points)} generated points" + (" over the real data" if real is not None else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_grid(samples: torch.Tensor, path: Path | str, nrow: Optional[int] = None,
              real: Optional[torch.Tensor] = None) -> Path:
    """Write a picture of the samples (a grid of images, or a scatter plot of points over `real`) as a PNG,
    atomically."""
    if samples.dim() == 4:
        from torchvision.utils import save_image

        nrow = nrow or max(1, int(math.ceil(math.sqrt(len(samples)))))
        buffer = io.BytesIO()
        save_image(samples.float() / 255.0, buffer, nrow=nrow, padding=2, pad_value=1.0, format="png")
        data = buffer.getvalue()
    else:
        data = _scatter_png(samples, real, "")
    atomic_write(path, lambda f: f.write(data))
    return Path(path)


def real_points(run: Run, n: int = 20_000) -> Optional[torch.Tensor]:
    """Up to n points of a vector run's training data (for the faint background of its scatter plots), or None
    when its data cannot be loaded here."""
    from .data import load_split

    try:
        config = run.config
        dataset = registry.dataset(config.dataset, config.dataset_options)
        data = load_split(config.dataset, dataset.train_split, config.data_root, False, config.dataset_options)
    except GanzooError:
        return None
    return data.images[:n] if data.images.dim() == 2 else None


def load_generator(run: Run | Path | str, device: str = "auto") -> tuple[torch.nn.Module, Run]:
    """Rebuild a run's generator from its architecture plugin and checkpoint (checked against run.json): the
    exponential moving average of its weights when the run kept one (TrainConfig.ema), else the last weights.
    A conditional run's generator comes wrapped by its conditioning method (called as G(z, y))."""
    from .conditioning import build_generator
    run = run if isinstance(run, Run) else open_run(run)
    if not run.checkpoint.is_file():
        raise GanzooError(f"run {run.path} has no checkpoint ({run.checkpoint.name}); was it trained?")
    payload = checkpoint.load(run.checkpoint, expected_sha256=run.stats.get("checkpoint_sha256"))
    arch = registry.architecture(run.config.arch, run.config.arch_options)
    resolved = _resolved_shape(run)
    generator = build_generator(run.config, arch, resolved, num_classes(run))
    part = "generator_ema" if run.config.ema else "generator"  # with EMA on, the averaged weights are the result
    if part not in payload:
        raise GanzooError(f"checkpoint {run.checkpoint} has no {part} weights, which this run's config needs")
    checkpoint.load_state(generator, payload[part], run.checkpoint, part)
    return generator.to(resolve_device(device)), run


def num_classes(run: Run) -> Optional[int]:
    """A conditional run's number of classes (None for unconditional runs)."""
    if run.config.condition == "none":
        return None
    return int(condition_record(run)["num_classes"])


def condition_record(run: Run) -> dict:
    """What a conditional run's config.json records about its conditioning (classes, class counts, where the label
    enters); {} for an unconditional run."""
    from .files import read_json

    if run.config.condition == "none":
        return {}
    record = read_json(run.path / CONFIG_FILE, "run config").get("resolved", {}).get("condition")
    if not isinstance(record, dict) or not isinstance(record.get("num_classes"), int):
        raise GanzooError(f"run config {run.path / CONFIG_FILE} records no class count for its conditioning")
    return record


def run_labels(run: Run, n: int, seed: int) -> Optional[torch.Tensor]:
    """The labels a conditional run's unconditional metrics are scored with: n labels following the training split's
    class counts (shuffled by seed); None for unconditional runs."""
    from .conditioning import proportional_labels

    record = condition_record(run)
    return proportional_labels(record["class_counts"], n, seed) if record else None


def _resolved_shape(run: Run) -> SampleShape:
    from .files import read_json

    shape = read_json(run.path / CONFIG_FILE, "run config").get("resolved", {}).get("dataset", {}).get("shape")
    if not shape:
        return registry.dataset(run.config.dataset, run.config.dataset_options).shape
    try:
        if "features" in shape:
            return VectorShape(int(shape["features"]))
        return ImageShape(int(shape["channels"]), int(shape["size"]))
    except (KeyError, TypeError, ValueError):
        raise GanzooError(f"run config {run.path / CONFIG_FILE} is malformed (dataset shape {shape!r})") from None


def sample(run: Run | Path | str, n: int = 64, seed: int = 0, out: Optional[Path | str] = None,
           grid: Optional[Path | str] = None, device: str = "auto", batch_size: int = 500,
           labels: Any = None) -> torch.Tensor:
    """Generate n samples from a trained run; optionally save them (.npz, key "images": uint8 images or float32
    vectors, and "labels" for a conditional run) and a picture (a PNG grid of images, or a scatter plot of points
    over the real data).

    A conditional run takes `labels`: one class (an int), a list of n classes, or "balanced" (every class in turn,
    in blocks, so that the grid shows one row per class); without them, labels follow the training split's class
    counts (sampling.run_labels(run, n, seed) gives them)."""
    from .conditioning import labels_argument

    if not isinstance(n, int) or n <= 0:
        raise GanzooError(f"n must be a positive integer, got {n!r}")
    generator, run = load_generator(run, device)
    classes = num_classes(run)
    nrow = None
    if classes is None:
        if labels is not None:
            raise GanzooError(f"run {run.path} is unconditional (trained with --condition none): it takes no labels")
    elif labels is None:
        labels = run_labels(run, n, seed)
    else:
        if isinstance(labels, str) and labels.strip() == "balanced":
            nrow = -(-n // classes)  # one row per class
        labels = labels_argument(labels, n, classes)
    images = generate(generator, n, run.config.latent_dim, seed, batch_size, labels=labels)
    if out is not None:
        out = Path(out)
        if out.suffix != ".npz":
            raise GanzooError(f"--out must name a .npz file, got {out}")
        arrays = {"images": images.numpy(), **({"labels": labels.numpy()} if labels is not None else {})}
        atomic_write(out, lambda f: np.savez_compressed(f, **arrays))
    if grid is not None:
        if images.dim() == 4:
            save_grid(images[:256], grid, nrow=nrow)
        else:
            save_grid(images, grid, real=real_points(run))
    return images
