"""Hyperparameter sweeps for fair comparisons (Lucic et al. 2018, "Are GANs Created Equal?").

A sweep gives every variant the same number of settings to try, at the same budget: its own recipe (always
setting 0) and settings drawn from a search space, by seeded random search or as a grid. Each setting is
trained on the selection seed; the best setting by that FID is then trained again on the report seeds, and
only those scores are reported as the variant's result, so the number that chose a setting is never the
number that ranks it. The FIDs of all settings also give the expected best FID after trying k settings
(`expected_minimum`), the curve that shows how much of a ranking is tuning budget.

Search space, in a bench preset (values: a list is a grid axis, or a uniform choice under random search):

    [sweep]
    settings = 8              # per variant, the variant's own recipe included
    seed = 0                  # draws are reproducible from it (and the variant's name)
    method = "random"         # or "grid": every combination, in order, after the variant's recipe
    selection_seed = 100      # training seed of the search; the report seeds are [bench] seeds
    [sweep.space]             # every variant
    lr = {log_uniform = [1e-5, 1e-2]}
    beta1 = {uniform = [0.0, 1.0]}
    d_steps = [1, 5]
    [sweep.space.r1]          # one variant: its options, or training settings only it varies
    gamma = {log_uniform = [0.1, 100.0]}
"""
from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .errors import GanzooError

# Training settings a sweep may vary (the recipe; beta1 and beta2 are the two halves of Adam's betas).
TRAINING_KEYS = ("lr", "beta1", "beta2", "d_steps", "optimizer")
DISTRIBUTIONS = ("log_uniform", "uniform", "choice", "int_uniform")


@dataclass(frozen=True)
class SweepSpec:
    settings: int = 1
    seed: int = 0
    method: str = "random"
    selection_seed: int = 100
    space: dict = field(default_factory=dict)  # key -> distribution, or variant name -> {key -> distribution}

    def __post_init__(self):
        for name in ("settings", "seed", "selection_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "settings" else 0):
                raise GanzooError(f"[sweep] {name} must be {'a positive' if name == 'settings' else 'a non-negative'}"
                                  f" integer, got {value!r}")
        if self.method not in ("random", "grid"):
            raise GanzooError(f"[sweep] method must be random or grid, got {self.method!r}")
        if not isinstance(self.space, Mapping):
            raise GanzooError(f"[sweep.space] must be a table, got {self.space!r}")
        for key, value in self.space.items():
            if _is_variant_table(key, value):
                for option, distribution in value.items():
                    _check_distribution(f"{key}.{option}", distribution)
            else:
                if key not in TRAINING_KEYS:
                    raise GanzooError(f"[sweep.space] {key}: not a training setting a sweep varies "
                                      f"({', '.join(TRAINING_KEYS)}); a variant's option goes under "
                                      f"[sweep.space.<variant>]")
                _check_distribution(key, value)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> "SweepSpec":
        known = {"settings", "seed", "method", "selection_seed", "space"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise GanzooError(f"[sweep] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(table))

    def space_for(self, variant: str) -> dict[str, Any]:
        """The distributions one variant draws from: the shared ones, then its own table on top."""
        shared = {k: v for k, v in self.space.items() if not _is_variant_table(k, v)}
        own = self.space.get(variant)
        return {**shared, **(dict(own) if _is_variant_table(variant, own) else {})}

    def settings_for(self, variant: str, identity: Optional[Callable[[dict], Any]] = None) -> list[dict[str, Any]]:
        """The variant's settings: {} (its own recipe) first, then `settings - 1` draws (or grid points).

        `identity(setting)` says what a setting trains (bench passes the resolved run's key): a draw that would
        train the same as an earlier setting (WGAN's RMSprop ignores beta1, say) is not a new setting, so another
        is drawn (grid: the next point is taken). A space with fewer distinct settings than asked gives fewer;
        the caller says so."""
        space = self.space_for(variant)
        if not space or self.settings == 1:
            return [{}]
        identity = identity or (lambda setting: repr(sorted(setting.items())))
        chosen, seen = [{}], {identity({})}

        def take(setting: dict) -> None:
            key = identity(setting)
            if key not in seen:
                seen.add(key)
                chosen.append(setting)

        if self.method == "grid":
            axes = [(key, _grid_values(key, dist)) for key, dist in space.items()]
            for values in itertools.product(*[v for _, v in axes]):
                if len(chosen) == self.settings:
                    break
                take(dict(zip([k for k, _ in axes], values)))
            return chosen
        # One stream per variant, seeded by the sweep seed and the variant's name: adding a variant to a sweep
        # leaves the others' settings as they were. A space without enough distinct settings (lists only, or
        # keys the variant ignores) stops after DRAW_ATTEMPTS draws per setting asked for.
        digest = hashlib.sha256(f"{self.seed}:{variant}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        for _ in range(DRAW_ATTEMPTS * self.settings):
            if len(chosen) == self.settings:
                break
            take({key: _draw(rng, dist) for key, dist in space.items()})
        return chosen

    def variant_tables(self) -> list[str]:
        """The names of the [sweep.space.<name>] tables (each must be one of the benchmark's variants)."""
        return [k for k, v in self.space.items() if _is_variant_table(k, v)]


DRAW_ATTEMPTS = 50


def _is_variant_table(key: str, value: Any) -> bool:
    """[sweep.space.<variant>]: a table under a name that is no training setting and no distribution."""
    return isinstance(value, Mapping) and key not in TRAINING_KEYS and not _is_distribution(value)


def _is_distribution(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def _check_distribution(key: str, value: Any) -> None:
    if isinstance(value, list):
        if not value:
            raise GanzooError(f"[sweep.space] {key}: an empty list of values")
        return
    if not _is_distribution(value):
        raise GanzooError(f"[sweep.space] {key}: expected a list of values or one of "
                          f"{{{' | '.join(f'{d} = [...]' for d in DISTRIBUTIONS)}}}, got {value!r}")
    kind, args = next(iter(value.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise GanzooError(f"[sweep.space] {key}: choice needs a non-empty list")
        return
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                              for a in args) and args[0] <= args[1]):
        raise GanzooError(f"[sweep.space] {key}: {kind} needs [low, high] with low <= high, got {args!r}")
    if kind == "log_uniform" and args[0] <= 0:
        raise GanzooError(f"[sweep.space] {key}: log_uniform needs a positive low bound, got {args[0]}")


def _grid_values(key: str, value: Any) -> list:
    if isinstance(value, list):
        return value
    kind, args = next(iter(value.items()))
    if kind == "choice":
        return args
    raise GanzooError(f"[sweep.space] {key}: a grid sweep takes lists of values, not {kind} distributions")


def _draw(rng: random.Random, value: Any) -> Any:
    if isinstance(value, list):
        return rng.choice(value)
    kind, args = next(iter(value.items()))
    if kind == "choice":
        return rng.choice(args)
    if kind == "uniform":
        return rng.uniform(args[0], args[1])
    if kind == "int_uniform":
        return rng.randint(int(args[0]), int(args[1]))
    return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))  # log_uniform


def apply_setting(config, setting: Mapping[str, Any]):
    """A cell's resolved TrainConfig for one setting: its training keys replace the recipe's, beta1/beta2 replace
    one half of Adam's betas (the other half stays the recipe's; under RMSprop there are none to replace), and
    every other key is a variant option. Returns (config, the setting as applied)."""
    import dataclasses

    from .config import TrainConfig
    from .training import resolve

    train = {k: v for k, v in setting.items() if k in ("lr", "d_steps", "optimizer")}
    options = {k: v for k, v in setting.items() if k not in TRAINING_KEYS}
    if "optimizer" in train and config.optimizer is None:
        config = dataclasses.replace(config, betas=None)  # the recipe's betas belong to the recipe's optimizer
    base = dataclasses.replace(config, **train, variant_options={**config.variant_options, **options})
    if isinstance(base, TrainConfig) and base.optimizer == "rmsprop":
        base = dataclasses.replace(base, betas=None)
    resolved = resolve(base)
    applied = {k: v for k, v in setting.items() if k not in ("beta1", "beta2")}
    if resolved.optimizer == "adam" and ("beta1" in setting or "beta2" in setting):
        betas = (float(setting.get("beta1", resolved.betas[0])), float(setting.get("beta2", resolved.betas[1])))
        resolved = resolve(dataclasses.replace(resolved, betas=betas))
        applied.update({k: setting[k] for k in ("beta1", "beta2") if k in setting})
    return resolved, applied


# ---------------------------------------------------------------------------------------------------------
# the analysis: expected best score after k settings


def expected_minimum(scores: Any, bootstrap: int = 2000, seed: int = 0,
                     band: float = 0.95) -> list[tuple[int, float, float, float]]:
    """For k = 1..n settings drawn (with replacement) from the n tried: (k, expected minimum, band low, high).

    The expectation is exact: with x_(1) <= ... <= x_(n), P(min of k draws = x_(i)) = ((n-i+1)/n)^k - ((n-i)/n)^k.
    The band is the central `band` interval of the minimum over `bootstrap` resamples of k settings.
    """
    x = np.sort(np.asarray([s for s in scores if s == s], dtype=float))
    n = len(x)
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    i = np.arange(1, n + 1)
    rows = []
    for k in range(1, n + 1):
        weights = ((n - i + 1) / n) ** k - ((n - i) / n) ** k
        draws = x[rng.integers(0, n, size=(bootstrap, k))].min(axis=1)
        low, high = np.quantile(draws, [(1 - band) / 2, 1 - (1 - band) / 2])
        rows.append((k, float((weights * x).sum()), float(low), float(high)))
    return rows


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error rate), NaN kept as NaN."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p == p)
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def describe(setting: Mapping[str, Any]) -> str:
    """'lr=0.00031, d_steps=5' (or 'recipe' for the variant's own)."""
    if not setting:
        return "recipe"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(setting.items()))


def selection_rule(metric: str = "fid") -> str:
    return (f"best setting: the lowest final {metric.upper()} of each setting trained on the selection seed; "
            "reported: that setting retrained on the report seeds (the selection runs are not averaged in)")



def sweep_table(frame):
    """Per variant: settings tried and scored, FID over them (min, median, max), the chosen setting."""
    import pandas as pd

    search = frame[frame["kind"] == "search"].copy()
    search["fid"] = pd.to_numeric(search.get("fid"), errors="coerce")
    chosen = {(r["variant"], r["arch"], r["dataset"]): r for _, r in frame[frame["kind"] == "selection"].iterrows()}
    rows = []
    for (variant, arch, dataset), group in search.groupby(["variant", "arch", "dataset"], sort=True):
        fids = group.loc[group["status"] == "completed", "fid"].dropna()
        best = chosen.get((variant, arch, dataset))
        desc = group.loc[group["setting"] == best["setting"], "setting_desc"] if best is not None else []
        rows.append({"variant": variant, "arch": arch, "dataset": dataset, "settings": len(group),
                     "scored": len(fids), "fid_min": fids.min(), "fid_median": fids.median(), "fid_max": fids.max(),
                     "chosen_setting": int(best["setting"]) if best is not None else None,
                     "chosen": desc.iloc[0] if len(desc) else "", "search_fid": best["selection_fid"]
                     if best is not None else None})
    return pd.DataFrame(rows).sort_values("fid_min", kind="stable").reset_index(drop=True)
