"""DiffAugment (Zhao, Liu, Lin, Zhu & Han 2020): the same random, differentiable transforms on every image D sees,
real and generated, in D's step and in G's step.

Policies, as the paper's code defines them on images in [-1, 1]: color (brightness + U(-0.5, 0.5), saturation
x U(0, 2) around each pixel's channel mean, contrast x U(0.5, 1.5) around the image mean), translation (an integer
shift of up to 1/8 of the size each way, zero padding), cutout (one zeroed square of half the size, centred
anywhere). Every parameter is drawn per sample from the run's augmentation generator. Two departures, both so
that D's input stays an image: colour results are clamped to [-1, 1] (the paper's code lets them leave it; a
clamped pixel passes no gradient), and saturation is left out on one-channel images, where it does nothing.
"""
from __future__ import annotations

import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import AugmentationSpec, Option

POLICIES = ("color", "translation", "cutout")


def _uniform(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """One U(0, 1) number per sample, shaped to broadcast over C x H x W."""
    return torch.rand(images.shape[0], 1, 1, 1, device=images.device, generator=rng)


def color(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    x = images + (_uniform(images, rng) - 0.5)  # brightness
    saturation = _uniform(images, rng) * 2  # drawn for every image (the draws do not depend on the channels)
    if images.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * saturation + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (_uniform(images, rng) + 0.5) + mean  # contrast
    return x.clamp(-1.0, 1.0)


def translation(images: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by whole pixels (up to ratio x size each way), filling with zeros: a gather from the padded
    image, so that the gradient reaches every pixel that moved."""
    b, _, h, w = images.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b, 1), device=images.device, generator=rng)
    dx = torch.randint(-sx, sx + 1, (b, 1), device=images.device, generator=rng)
    padded = torch.nn.functional.pad(images, [sx, sx, sy, sy])
    rows = torch.arange(h, device=images.device)[None, :] + sy - dy  # (B, H): output row i reads row i - dy
    cols = torch.arange(w, device=images.device)[None, :] + sx - dx
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio x size per image, its centre anywhere in the image (the square may be cut by the
    border)."""
    b, _, h, w = images.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1), device=images.device, generator=rng)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1), device=images.device, generator=rng)
    ys = torch.arange(h, device=images.device)[None, :] - cy + ch // 2  # inside the square where 0 <= ys < ch
    xs = torch.arange(w, device=images.device)[None, :] - cx + cw // 2
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    return images * (~inside)[:, None].to(images.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or not names:
        what = f"unknown policy {', '.join(map(repr, unknown))}" if unknown else "an empty policy"
        raise GanzooError(f"augmentation 'diffaugment' got {what}; policies: {', '.join(POLICIES)} "
                          "(comma-separated, e.g. policy=color,translation,cutout)")
    if len(set(names)) != len(names):
        raise GanzooError(f"augmentation 'diffaugment' policy {text!r} names a transform twice")
    return names


def diffaugment(policy: str = "color,translation,cutout", translation_ratio: float = 0.125,
                cutout_ratio: float = 0.5) -> AugmentationSpec:
    names = parse_policy(policy)
    for option, value in (("translation_ratio", translation_ratio), ("cutout_ratio", cutout_ratio)):
        if not 0 <= value <= 1:
            raise GanzooError(f"augmentation 'diffaugment' option {option} must be in [0, 1], got {value:g}")

    def apply(images: torch.Tensor, state: dict, rng: torch.Generator) -> torch.Tensor:
        for name in names:
            if name == "translation":
                images = translation(images, rng, translation_ratio)
            elif name == "cutout":
                images = cutout(images, rng, cutout_ratio)
            else:
                images = color(images, rng)
        return images.contiguous()

    return AugmentationSpec(
        name="diffaugment",
        description=f"DiffAugment, policy {','.join(names)}: every image D sees, real and generated",
        apply=apply,
        options={"policy": Option("color,translation,cutout", f"comma-separated transforms: {', '.join(POLICIES)}"),
                 "translation_ratio": Option(0.125, "largest shift, a fraction of the image size"),
                 "cutout_ratio": Option(0.5, "side of the zeroed square, a fraction of the image size")},
        configure=lambda o: diffaugment(o["policy"], o["translation_ratio"], o["cutout_ratio"]),
        paper="Zhao, Liu, Lin, Zhu & Han 2020, Differentiable Augmentation for Data-Efficient GAN Training "
              "(arXiv:2006.10738)",
    )


@hookimpl
def ganzoo_augmentations():
    return [diffaugment()]
