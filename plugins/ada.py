"""Adaptive discriminator augmentation (ADA; Karras, Aittala, Hellsten, Laine, Lehtinen & Aila 2020).

One probability p gates every transform of a pipeline, independently per sample and per transform. D's overfitting
is read from r_t = E[sign(D(real))] over the last `interval` discriminator steps; then
p <- clamp(p + sign(r_t - target) * (real images in those steps) / speed, 0, 1), so p can cross from 0 to 1 in
`speed` real images (the paper: 500k images, target 0.6, every 4 steps).

Transforms (ADA's defaults for their strengths): xflip, rotate90 (blit); xint (integer translation up to 1/8 of the
size), scale (log2-normal, sd 0.2), rotate (uniform within +-rotate_max degrees), aniso (log2-normal, sd 0.2),
xfrac (fractional translation, sd 1/8 of the size); brightness (+N(0, 0.2)), contrast (x log2-normal, sd 0.5),
saturation (colour images only, x log2-normal, sd 1, around each pixel's channel mean). The geometric ones are
composed into one affine map per sample and resampled once (bilinear, reflection padding); ADA uses a wavelet
upsampling filter there, this plain bilinear resampling is simpler and blurs a little more. Colour results are
clamped to [-1, 1].

The default pipeline is digit-safe: no flips, no 90-degree rotations, rotations within +-30 degrees (ADA's own
rotate spans the whole circle; a 6 turned half way round is a 9). xflip, rotate90 and rotate_max above 45 degrees
are reported as orientation-changing.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import AugmentationSpec, Option

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "saturation")
DIGIT_SAFE = "xint,scale,rotate,aniso,xfrac,brightness,contrast"


def _matrix(b: int, device, rows) -> torch.Tensor:
    """(B, 3, 3) affine matrices from rows [[a, b, c], [d, e, f]] of (B,) tensors."""
    m = torch.zeros(b, 3, 3, device=device)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            m[:, i, j] = value
    m[:, 2, 2] = 1
    return m


def geometric(name: str, b: int, size: tuple[int, int], device, rng: torch.Generator,
              rotate_max: float) -> torch.Tensor:
    """One transform's (B, 3, 3) matrices in normalised coordinates ([-1, 1] across the image), parameters drawn
    per sample; the same number of draws whatever p is."""
    one, zero = torch.ones(b, device=device), torch.zeros(b, device=device)
    if name == "xflip":
        s = 1 - 2 * torch.randint(0, 2, (b,), device=device, generator=rng).float()
        return _matrix(b, device, [[s, zero, zero], [zero, one, zero]])
    if name == "rotate90":
        angle = torch.randint(0, 4, (b,), device=device, generator=rng).float() * (math.pi / 2)
        c, s = torch.cos(angle).round(), torch.sin(angle).round()  # exact quarter turns
        return _matrix(b, device, [[c, -s, zero], [s, c, zero]])
    if name == "xint":  # whole pixels: steps of 2/size in normalised coordinates
        t = (torch.rand(b, 2, device=device, generator=rng) * 2 - 1) * 0.125
        tx, ty = (t[:, 0] * size[1]).round() * 2 / size[1], (t[:, 1] * size[0]).round() * 2 / size[0]
        return _matrix(b, device, [[one, zero, tx], [zero, one, ty]])
    if name == "scale":
        s = torch.exp2(torch.randn(b, device=device, generator=rng) * 0.2)
        return _matrix(b, device, [[s, zero, zero], [zero, s, zero]])
    if name == "rotate":
        angle = (torch.rand(b, device=device, generator=rng) * 2 - 1) * math.radians(rotate_max)
        c, s = torch.cos(angle), torch.sin(angle)
        return _matrix(b, device, [[c, -s, zero], [s, c, zero]])
    if name == "aniso":
        s = torch.exp2(torch.randn(b, device=device, generator=rng) * 0.2)
        return _matrix(b, device, [[s, zero, zero], [zero, 1 / s, zero]])
    t = torch.randn(b, 2, device=device, generator=rng) * 0.125  # xfrac
    return _matrix(b, device, [[one, zero, 2 * t[:, 0]], [zero, one, 2 * t[:, 1]]])


def ada_apply(images: torch.Tensor, state: dict, rng: torch.Generator, pipeline: tuple[str, ...],
              rotate_max: float) -> torch.Tensor:
    b, device = images.shape[0], images.device
    p = state["p"]
    geometric_names = [n for n in pipeline if n in GEOMETRIC]
    if geometric_names:
        matrix = torch.eye(3, device=device).expand(b, 3, 3)
        moved = torch.zeros(b, dtype=torch.bool, device=device)
        for name in geometric_names:
            on = torch.rand(b, device=device, generator=rng) < p  # each transform gated on its own
            step = geometric(name, b, tuple(images.shape[2:]), device, rng, rotate_max)
            matrix = torch.where(on[:, None, None], step, torch.eye(3, device=device)) @ matrix
            moved = moved | on
        grid = F.affine_grid(matrix[:, :2, :], list(images.shape), align_corners=False)
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        images = torch.where(moved[:, None, None, None], warped, images)  # untouched samples stay bit-identical
    for name in (n for n in pipeline if n in COLOR):
        on = (torch.rand(b, device=device, generator=rng) < p)[:, None, None, None]
        noise = torch.randn(b, 1, 1, 1, device=device, generator=rng)
        if name == "brightness":
            changed = images + noise * 0.2
        elif name == "contrast":
            changed = images * torch.exp2(noise * 0.5)
        elif images.shape[1] > 1:  # saturation: around each pixel's grey value
            mean = images.mean(dim=1, keepdim=True)
            changed = (images - mean) * torch.exp2(noise) + mean
        else:
            continue
        images = torch.where(on, changed.clamp(-1.0, 1.0), images)
    return images


def ada_adjust(state: dict, real_signs: torch.Tensor, real_images: torch.Tensor, d_step: int, *,
               target: float = 0.6, speed: float = 500_000, interval: int = 4) -> None:
    """Collect sign(D(real)) every discriminator step; every `interval` steps move p towards keeping
    r_t = E[sign(D(real))] at `target`: by (real images seen in the interval) / speed, up when r_t > target."""
    state["sign_sum"] = state["sign_sum"] + real_signs.sum()
    state["sign_count"] = state["sign_count"] + real_signs.numel()
    state["seen"] = state["seen"] + real_images.shape[0]
    if (d_step + 1) % interval:
        return
    r_t = state["sign_sum"] / state["sign_count"]
    if speed > 0:
        state["p"] = (state["p"] + torch.sign(r_t - target) * state["seen"] / speed).clamp(0.0, 1.0)
    state["r_t"] = r_t
    for k in ("sign_sum", "sign_count", "seen"):
        state[k] = torch.zeros_like(state[k])


def parse_pipeline(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    known = GEOMETRIC + COLOR
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        what = f"unknown transform {', '.join(map(repr, unknown))}" if unknown else "an empty pipeline"
        raise GanzooError(f"augmentation 'ada' got {what}; transforms: {', '.join(known)} (comma-separated; "
                          f"the digit-safe default is {DIGIT_SAFE})")
    if len(set(names)) != len(names):
        raise GanzooError(f"augmentation 'ada' pipeline {text!r} names a transform twice")
    return names


def ada(pipeline: str = DIGIT_SAFE, target: float = 0.6, speed: float = 500_000, interval: int = 4,
        p: float = 0.0, rotate_max: float = 30.0) -> AugmentationSpec:
    names = parse_pipeline(pipeline)
    checks = (("target", target, -1 <= target <= 1, "in [-1, 1] (r_t is a mean of signs)"),
              ("speed", speed, speed >= 0, ">= 0 (0: p stays fixed)"),
              ("interval", interval, interval >= 1, ">= 1"),
              ("p", p, 0 <= p <= 1, "in [0, 1]"),
              ("rotate_max", rotate_max, 0 <= rotate_max <= 180, "in [0, 180] degrees"))
    for option, value, ok, rule in checks:
        if not ok:
            raise GanzooError(f"augmentation 'ada' option {option} must be {rule}, got {value:g}")
    unsafe = tuple(n for n in names if n in ("xflip", "rotate90")) + (
        (f"rotate up to {rotate_max:g} degrees",) if "rotate" in names and rotate_max > 45 else ())

    def adjust(state, real_signs, real_images, d_step):
        ada_adjust(state, real_signs, real_images, d_step, target=target, speed=speed, interval=interval)

    fixed = "fixed p" if speed == 0 else f"target {target:g}, p 0->1 in {speed:g} images"
    return AugmentationSpec(
        name="ada",
        description=f"ADA: {','.join(names)} each with probability p ({fixed})",
        apply=lambda images, state, rng: ada_apply(images, state, rng, names, rotate_max),
        state={"p": float(p), "r_t": 0.0, "sign_sum": 0.0, "sign_count": 0.0, "seen": 0.0},
        adjust=adjust,
        logged=("p", "r_t"),
        changes_orientation=unsafe,
        options={"pipeline": Option(DIGIT_SAFE, f"comma-separated transforms: {', '.join(GEOMETRIC + COLOR)}"),
                 "target": Option(0.6, "the r_t = E[sign(D(real))] that p is steered to"),
                 "speed": Option(500_000.0, "real images for p to cross from 0 to 1 (0: p stays at its start)"),
                 "interval": Option(4, "discriminator steps between adjustments"),
                 "p": Option(0.0, "p at the start"),
                 "rotate_max": Option(30.0, "largest rotation of 'rotate', degrees (above 45: not digit-safe)")},
        configure=lambda o: ada(o["pipeline"], o["target"], o["speed"], o["interval"], o["p"], o["rotate_max"]),
        paper="Karras, Aittala, Hellsten, Laine, Lehtinen & Aila 2020, Training Generative Adversarial Networks "
              "with Limited Data (arXiv:2006.06676)",
    )


@hookimpl
def ganzoo_augmentations():
    return [ada()]
