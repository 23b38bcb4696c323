"""The pieces a training step is made of, each in one place: how D is asked about samples, how a plugin's loss,
penalty or hook receives the step arguments it declares, and packing.

training.py strings them together into the loop; a plugin meets them as step arguments (specs.STEP_ARGUMENTS,
specs.GENERATOR_STEP_ARGUMENTS).
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Optional

import torch

from .errors import GanzooError
from .specs import GENERATOR_STEP_ARGUMENTS, STEP_ARGUMENTS, DiscriminatorOutput


def pack(samples: torch.Tensor, m: int) -> torch.Tensor:
    """PacGAN's packing: consecutive groups of m samples become one discriminator input, concatenated along
    channels (images, B x C x H x W -> B/m x mC x H x W) or features (vectors, B x F -> B/m x mF). The batches
    the loop packs are random draws (a permutation of the data, independent latents), so every pack holds m
    independent samples."""
    if m == 1:
        return samples
    b = samples.shape[0]
    if b % m:
        raise GanzooError(f"a batch of {b} samples cannot be cut into packs of {m}")
    return samples.reshape(b // m, m * samples.shape[1], *samples.shape[2:])


class Discriminate:
    """samples -> DiscriminatorOutput: the one way the loop, the losses, the penalties and a look-ahead ask D.

    It prepares D's input (the run's augmentation of each sample, then packs of `pack` samples) and runs D, under
    bf16 autocast when training asks for it, returning float32 logits and features. `forward` may be a compiled
    wrapper of `module` (same weights); `using(weights)` is the same call with other weights (a dict of parameter and
    buffer names to tensors), run through torch.func.functional_call on the plain module: a look-ahead copy of D
    without copying the module. Both keep the augmentation, so penalties and look-aheads see what D sees.

    A conditional D (TrainConfig.condition) is called as D(x, y): `discriminate(samples, labels)`, or, without
    labels, with the ones bound by `given(labels)` (the loop binds the real batch's: a gradient penalty on real or
    interpolated images is taken under the real labels).
    """

    def __init__(self, module: torch.nn.Module, forward: Optional[Callable] = None, pack: int = 1,
                 autocast: Callable[[], Any] = contextlib.nullcontext, weights: Optional[dict] = None,
                 conditional: bool = False, labels: Optional[torch.Tensor] = None,
                 augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.module, self.pack, self.autocast = module, pack, autocast
        self.forward = forward if forward is not None else module
        self.weights, self.augment = weights, augment
        self.conditional, self.labels = conditional, labels

    def __call__(self, samples: torch.Tensor, labels: Optional[torch.Tensor] = None) -> DiscriminatorOutput:
        # Augmented in float32 sample by sample (differentiably: G's gradient flows through), then packed.
        inputs = pack(samples if self.augment is None else self.augment(samples), self.pack)
        arguments: tuple = (inputs,)
        if self.conditional:
            labels = labels if labels is not None else self.labels
            if labels is None:
                raise GanzooError("the conditional discriminator was asked about samples without their labels")
            if len(labels) != len(samples):
                raise GanzooError(f"{len(labels)} labels for {len(samples)} samples: a conditional D needs one each")
            arguments = (inputs, labels)
        with self.autocast():
            if self.weights is None:
                out = self.forward(*arguments)
            else:
                out = torch.func.functional_call(self.module, self.weights, arguments)
        logits, features = out[0], out[1]
        class_logits = out[2].float() if len(out) > 2 and out[2] is not None else None
        # losses in float32 (a no-op under fp32)
        return DiscriminatorOutput(logits.float(), features.float(), class_logits)

    def _copy(self, **changes: Any) -> "Discriminate":
        settings = dict(module=self.module, forward=self.forward, pack=self.pack, autocast=self.autocast,
                        weights=self.weights, conditional=self.conditional, labels=self.labels,
                        augment=self.augment)
        settings.update(changes)
        return Discriminate(**settings)

    def using(self, weights: dict) -> "Discriminate":
        return self._copy(forward=None, weights=weights)

    def uncompiled(self) -> "Discriminate":
        """The same call on the plain module: gradient penalties differentiate through D twice, which
        torch.compile does not support."""
        return self._copy(forward=None)

    def given(self, labels: Optional[torch.Tensor]) -> "Discriminate":
        """The same call, scoring samples under `labels` when it is not given others (conditional runs)."""
        return self._copy(labels=labels)

    def plain(self) -> "Discriminate":
        """The same D without augmentation: what D makes of the images themselves (the overfitting signal)."""
        return self._copy(augment=None)


def declared_arguments(fn: Callable, offered: dict = STEP_ARGUMENTS) -> tuple[str, ...]:
    """The step arguments a penalty, hook or loss receives: the names of its parameters (all offered ones with
    **kwargs). A parameter with a default that is not offered is the plugin's own (a value bound with
    functools.partial, say) and is left alone."""
    parameters = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return tuple(offered)
    return tuple(p.name for p in parameters
                 if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                 and (p.default is inspect.Parameter.empty or p.name in offered))


def required_arguments(fn: Callable) -> set[str]:
    """The parameters that have no default: what a piece cannot do without."""
    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


class Declared:
    """A penalty or hook called with just the step arguments it declares (compare_gan's convention)."""

    def __init__(self, fn: Optional[Callable], offered: dict = STEP_ARGUMENTS):
        self.fn = fn
        self.names = declared_arguments(fn, offered) if fn is not None else ()

    def __call__(self, arguments: dict[str, Any]) -> Any:
        return self.fn(**{name: arguments[name] for name in self.names}) if self.fn is not None else None


class GeneratorLoss:
    """A variant's generator loss, called the way it was written: by the names it declares from
    GENERATOR_STEP_ARGUMENTS, or, for the first interface (parameters named otherwise), as loss(fake, real)."""

    def __init__(self, fn: Callable, needs_real: bool):
        names = declared_arguments(fn, GENERATOR_STEP_ARGUMENTS)
        self.fn = fn
        self.by_name = bool(names) and set(names) <= set(GENERATOR_STEP_ARGUMENTS)
        self.names = names if self.by_name else ()
        # The real batch costs one more D pass per step: only for losses that cannot do without it.
        self.needs_real = needs_real or (self.by_name and "real" in required_arguments(fn))

    def __call__(self, arguments: dict[str, Any]) -> torch.Tensor:
        if self.by_name:
            return self.fn(**{name: arguments[name] for name in self.names})
        return self.fn(arguments["fake"], arguments["real"])


def generator_loss_problem(fn: Callable) -> str:
    """Why a generator loss cannot be called (empty when it can): it must either declare step arguments by name
    or take the first interface's two positional arguments (fake, real)."""
    names = declared_arguments(fn, GENERATOR_STEP_ARGUMENTS)
    if names and set(names) <= set(GENERATOR_STEP_ARGUMENTS):
        return ""
    # A loss that names a step argument beyond the first interface's (fake, real) is written by name: an
    # unknown name there is a mistake, not a positional argument.
    by_name = set(names) & (set(GENERATOR_STEP_ARGUMENTS) - {"fake", "real"})
    positional = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if not by_name and (len(required_arguments(fn)) <= 2 <= len(positional) or any(
            p.kind is inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())):
        return ""
    unknown = sorted(set(names) - set(GENERATOR_STEP_ARGUMENTS))
    return (f"generator_loss asks for {', '.join(unknown) or 'nothing it can be given'}; it may declare any of "
            f"{', '.join(GENERATOR_STEP_ARGUMENTS)}, or take (fake, real)")
