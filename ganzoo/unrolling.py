"""Look-ahead discriminators (Unrolled GAN, Metz et al. 2017): D advanced k optimizer steps, differentiably.

The generator's loss is taken against a copy of D that has taken k more optimizer steps on the current batches,
with gradients flowing back through those steps: G is pushed towards samples that D cannot soon learn to reject,
which discourages it from hopping between modes. D itself takes its one ordinary step; the copy is discarded.

The copy is not a module: it is a dict of D's weights advanced by a differentiable re-implementation of the
optimizer's update (Adam or RMSprop, as torch computes them), evaluated through torch.func.functional_call.
Buffers (BatchNorm's running statistics, spectral norm's power-iteration vectors) are cloned, so D's own are left
alone. `lookahead` is public: a variant plugin can build its own unrolled loss from the step arguments
`discriminate` and `d_optimizer` (specs.GENERATOR_STEP_ARGUMENTS).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import GanzooError
from .steps import Discriminate

# A floor under Adam's second moment inside the look-ahead: sqrt'(v) is infinite at v = 0 (a weight whose gradient
# has always been 0), which turns the second-order term into 0 * inf = NaN. 1e-30 is far below any moment that
# matters (a squared gradient of 1e-15), so the step itself is unchanged to float precision.
_V_FLOOR = 1e-30


def lookahead(discriminate: Discriminate, optimizer: torch.optim.Optimizer,
              objective: Callable[[Discriminate], torch.Tensor], steps: int,
              differentiable: bool = True) -> Discriminate:
    """`discriminate` with weights advanced `steps` optimizer steps on `objective` (a function of a discriminate,
    returning D's scalar loss on this step's batches), starting from D's weights and optimizer state now.

    With differentiable=True the returned weights keep their graph: a loss computed through them sends gradients
    back through every look-ahead step into whatever the objective depends on (the generated batch, and so G).
    With False the steps are taken but treated as constants (the "first-order" approximation)."""
    if steps < 0:
        raise GanzooError(f"unroll must be a non-negative number of look-ahead steps, got {steps}")
    module = discriminate.module
    named = dict(module.named_parameters())
    weights = {name: p.detach().clone().requires_grad_(True) for name, p in named.items()}
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    update = _updater(optimizer, named)
    for _ in range(steps):
        loss = objective(discriminate.using({**weights, **buffers}))
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=differentiable, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights.values(), grads)]
        if not differentiable:
            grads = [g.detach() for g in grads]
        weights = update(weights, grads)
        if not differentiable:
            weights = {name: w.detach().requires_grad_(True) for name, w in weights.items()}
    return discriminate.using({**weights, **buffers})


def _updater(optimizer: torch.optim.Optimizer, named: dict[str, torch.nn.Parameter]):
    """A function (weights, grads) -> new weights that computes `optimizer`'s next steps out of place, starting
    from a copy of its current moments (zeros where it has taken no step yet)."""
    if len(optimizer.param_groups) != 1:
        raise GanzooError("a look-ahead needs the discriminator's optimizer to have one parameter group")
    group = optimizer.param_groups[0]
    names = list(named)
    state = [optimizer.state.get(named[n], {}) for n in names]
    if isinstance(optimizer, torch.optim.Adam):
        if group.get("amsgrad") or group.get("weight_decay") or group.get("maximize"):
            raise GanzooError("a look-ahead supports Adam without amsgrad, weight decay or maximize")
        beta1, beta2 = group["betas"]
        lr, eps = float(group["lr"]), float(group["eps"])
        m = [s["exp_avg"].detach().clone() if "exp_avg" in s else None for s in state]
        v = [s["exp_avg_sq"].detach().clone() if "exp_avg_sq" in s else None for s in state]
        t = [int(s["step"]) if "step" in s else 0 for s in state]

        def adam(weights: dict, grads: list) -> dict:
            new = {}
            for i, (name, w) in enumerate(weights.items()):
                g = grads[i]
                t[i] += 1
                m[i] = beta1 * (torch.zeros_like(g) if m[i] is None else m[i]) + (1 - beta1) * g
                v[i] = beta2 * (torch.zeros_like(g) if v[i] is None else v[i]) + (1 - beta2) * g * g
                denominator = (v[i] + _V_FLOOR).sqrt() / math.sqrt(1 - beta2 ** t[i]) + eps
                new[name] = w - (lr / (1 - beta1 ** t[i])) * m[i] / denominator
            return new

        return adam
    if isinstance(optimizer, torch.optim.RMSprop):
        if group.get("momentum") or group.get("centered") or group.get("weight_decay") or group.get("maximize"):
            raise GanzooError("a look-ahead supports RMSprop without momentum, centering or weight decay")
        alpha, lr, eps = float(group["alpha"]), float(group["lr"]), float(group["eps"])
        v = [s["square_avg"].detach().clone() if "square_avg" in s else None for s in state]

        def rmsprop(weights: dict, grads: list) -> dict:
            new = {}
            for i, (name, w) in enumerate(weights.items()):
                g = grads[i]
                v[i] = alpha * (torch.zeros_like(g) if v[i] is None else v[i]) + (1 - alpha) * g * g
                new[name] = w - lr * g / ((v[i] + _V_FLOOR).sqrt() + eps)
            return new

        return rmsprop
    raise GanzooError(f"a look-ahead supports the Adam and RMSprop optimizers, not {type(optimizer).__name__}")
