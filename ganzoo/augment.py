"""Differentiable augmentation of what D sees (DiffAugment, ADA, a third party's APA): the run-time side of an
AugmentationSpec.

steps.Discriminate calls an Augmentation on every batch before D judges it, so real and generated images, D's step
and G's step, penalties and look-aheads all get the same kind of transform, and gradients reach G through it. Its
random parameters come from a generator of its own (seeded from the run's seed, checkpointed), not from the run's
latent generator: an augmentation that leaves every image alone (ADA at p = 0) then trains bit for bit like no
augmentation at all.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import torch

from . import registry
from .errors import GanzooError
from .specs import AUGMENT_ARGUMENTS, AugmentationSpec, DatasetSpec
from .steps import Declared

RNG_STREAM = 0x5EED_A06  # the augmentation generator's seed is derived from the run's seed and this constant


def configured(name: str, options: Optional[dict] = None) -> AugmentationSpec:
    """The augmentation `name` with its options applied (--augment NAME --augment-option key=value)."""
    return registry.configure("augmentation", registry.get("augmentation", name).spec, options)


def check_fits(name: str, spec: AugmentationSpec, dataset: DatasetSpec, dataset_name: str) -> list[str]:
    """Refuse data an image augmentation cannot transform; return warnings (digit-unsafe transforms on a dataset
    that declares itself orientation-sensitive: warned, not refused, since the user may mean it)."""
    if dataset.shape.kind != "image":
        raise GanzooError(f"augmentation '{name}' transforms images, but dataset '{dataset_name}' has "
                          f"{dataset.shape.describe()}")
    if spec.changes_orientation and dataset.orientation_sensitive:
        return [f"augmentation '{name}' applies {', '.join(spec.changes_orientation)}, which can change what an image "
                f"of '{dataset_name}' is (the dataset declares itself orientation-sensitive: a flipped or rotated "
                "digit is another digit or none); D learns the transformed images as real"]
    return []


def warn(messages: list[str]) -> None:
    for message in messages:
        print(f"ganzoo: warning: {message}", file=sys.stderr)


class Augmentation:
    """One run's augmentation: the configured spec, its state on the device and its random generator.

    Calling it transforms a batch; `after_discriminator_step` lets the spec adjust its state (ADA's p); `logged`
    gives the values log.csv records each step; `state_dict`/`load_state_dict` go into and out of checkpoints.
    """

    def __init__(self, name: str, spec: AugmentationSpec, device: torch.device, seed: int):
        self.name, self.spec = name, spec
        self.state = {k: torch.tensor(float(v), device=device) for k, v in spec.state.items()}
        self.rng = torch.Generator(device=device).manual_seed(seed * 1_000_003 + RNG_STREAM)
        self.adjust = Declared(spec.adjust, AUGMENT_ARGUMENTS)
        self.columns = tuple(f"augment_{k}" for k in spec.logged)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with registry.plugin_code("augmentation", self.name, "apply"):
            out = self.spec.apply(images, self.state, self.rng)
        if not isinstance(out, torch.Tensor) or out.shape != images.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise GanzooError(f"augmentation '{self.name}' apply returned {got} for images {tuple(images.shape)}")
        return out

    def after_discriminator_step(self, arguments: dict[str, Any]) -> None:
        if self.spec.adjust is None:
            return
        with registry.plugin_code("augmentation", self.name, "adjust"):
            self.adjust({**arguments, "state": self.state})
        for k, v in self.state.items():
            if not isinstance(v, torch.Tensor) or v.numel() != 1:
                raise GanzooError(f"augmentation '{self.name}' state '{k}' must stay a one-number tensor")

    def logged(self) -> list[torch.Tensor]:
        return [self.state[k].detach().float().reshape(()) for k in self.spec.logged]

    def state_dict(self) -> dict[str, Any]:
        return {"state": {k: v.detach().clone() for k, v in self.state.items()}, "rng": self.rng.get_state()}

    def load_state_dict(self, saved: Any, path: Any) -> None:
        if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
                or set(saved["state"]) != set(self.state):
            raise GanzooError(f"checkpoint {path}: its augmentation state does not fit augmentation '{self.name}'; "
                              "pass --overwrite to train again")
        for k, v in saved["state"].items():
            self.state[k] = v.to(self.state[k].device, self.state[k].dtype).reshape(())
        self.rng.set_state(saved["rng"])
