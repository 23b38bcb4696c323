"""`ganzoo bench`: train a grid of variants x architectures x datasets x seeds, score each, keep the results.

The grid is described by a BenchSpec (from a TOML preset, the command line, or Python). Each cell is an
ordinary ganzoo.train run in <out>/runs/, evaluated by ganzoo.evaluate, and its record is committed to the
report folder's results store (store.py) before the next cell starts. Re-running the same command skips the
cells already recorded and resumes the one in flight from its checkpoint, so an interrupted benchmark loses at
most the steps since its last checkpoint. A cell that fails or diverges is recorded with its status and error
and the grid goes on. The cells run in this process by default, `jobs` at a time in child processes, or as
Ray tasks on a cluster (executors.py); either way this process alone writes the results store.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from . import __version__, locks, registry
from .config import TrainConfig, describe_training, normalize_dataset_options
from .errors import DivergedError, GanzooError
from .executors import Job, make_executor
from .store import ResultsStore

@dataclass(frozen=True)
class BenchSpec:
    """One benchmark: the grid axes, the training settings shared by every cell, and the evaluation protocol."""

    variants: tuple[str, ...] = ()  # empty: every registered variant, third-party plugins included
    archs: tuple[str, ...] = ("mlp",)
    datasets: tuple[str, ...] = ("mnist5k",)
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 700
    eval_every: int = 350  # FID curve resolution (0: final score only)
    eval_samples: int = 1000  # images per evaluation during training
    n_fake: int = 5000  # images generated for the final score
    n_real: Optional[int] = None  # reference images (None: the whole reference split)
    extractor: Optional[str] = None  # None: each dataset's default (the offline classifier for digits)
    device: str = "auto"
    # Other TrainConfig fields for every cell: batch_size, ...; recipe fields (lr, betas, d_steps, optimizer)
    # set here override every variant's own recipe, so leave them out to compare variants as their papers train them.
    train: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)  # dataset name -> {option: value}
    variant_options: dict = field(default_factory=dict)  # variant name -> {option: value}
    arch_options: dict = field(default_factory=dict)  # architecture name -> {option: value}
    data_root: Optional[str] = None
    tensorboard: bool = False  # each run also logs to its folder's tensorboard/ (operational: not in the protocol)
    sweep: Optional[dict] = None  # a [sweep] table (sweep.py): settings searched per variant on a selection seed
    # What every cell is scored with (metric plugins; None: each dataset's default metrics) and their options.
    metrics: Optional[tuple] = None
    metric_options: dict = field(default_factory=dict)  # metric name -> {option: value}
    # A grid axis of named training setups: name -> TrainConfig fields for the cells of that setup (pack = 2, unroll
    # = 5, an arch_options table applied to every architecture, ...). Empty: one setup with nothing changed.
    setups: dict = field(default_factory=dict)
    # Training settings for one dataset's cells (over [train], under a setup's): what a published protocol fixes
    # per dataset, e.g. the 2-D mixtures' latent_dim = 2 and batch_size = 100 beside Stacked MNIST's 256 and 128.
    dataset_train: dict = field(default_factory=dict)
    spread: str = "sd"  # what "±" shows in the tables: sd over seeds, or "se" (standard error, the papers' tables)
    # Class-conditional GANs: a grid axis of conditioning methods ("none" is the unconditional run), crossed with the
    # setups: each cell's setup is named after its method ("projection", or "pacgan2-projection" beside setups; the
    # unconditional cells keep their setup's name, so their rows and run folders are those of a grid without the axis).
    # condition_options: method name -> {option: value}. Empty: no conditioning axis (every cell as its setup says).
    conditions: tuple = ()
    condition_options: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("variants", "archs", "datasets", "seeds"):
            value = getattr(self, name)
            if isinstance(value, str):
                given, value = value, [v for v in value.split(",") if v.strip()]
                if not value:  # --variants "" is a mistake, not "every variant" (that is 'all' or no option)
                    raise GanzooError(f"{name} is empty ({given!r}); give comma-separated names"
                                      f"{' or all' if name == 'variants' else ''}")
            elif not isinstance(value, (list, tuple)):
                raise GanzooError(f"{name} must be a list or a comma-separated string, got {value!r}")
            object.__setattr__(self, name, tuple(v.strip() if isinstance(v, str) else v for v in value))
        seeds = []
        for s in self.seeds:
            if isinstance(s, str):  # from the command line
                with contextlib.suppress(ValueError):
                    s = int(s)
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:  # 0.7 or true must not become 0 or 1
                raise GanzooError(f"seeds must be non-negative integers, got {s!r} in {list(self.seeds)!r}")
            seeds.append(s)
        object.__setattr__(self, "seeds", tuple(seeds))
        for name in ("variants", "archs", "datasets"):
            if not all(isinstance(v, str) and v for v in getattr(self, name)):
                raise GanzooError(f"{name} must be names, got {list(getattr(self, name))!r}")
        if self.extractor == "":  # TOML has no null: "" means each dataset's default
            object.__setattr__(self, "extractor", None)
        for name in ("archs", "datasets", "seeds"):
            if not getattr(self, name):
                raise GanzooError(f"the benchmark needs at least one entry in {name}")
        if len(set(self.seeds)) != len(self.seeds):
            raise GanzooError(f"seeds repeat: {self.seeds}")
        for name, least in (("steps", 1), ("n_fake", 2), ("eval_samples", 2), ("n_real", 2)):
            value = getattr(self, name)
            if name == "n_real" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                kind = "a positive integer" if least == 1 else "an integer of at least 2 (FID needs a covariance)"
                raise GanzooError(f"{name.replace('_', '-')} must be {kind}, got {value!r}")
        if not isinstance(self.eval_every, int) or isinstance(self.eval_every, bool) or self.eval_every < 0:
            raise GanzooError(f"eval-every must be a non-negative integer, got {self.eval_every!r}")
        if not isinstance(self.dataset_options, Mapping):
            raise GanzooError("dataset_options must be a table of dataset name = {option = value}")
        options = {}
        for name, given in self.dataset_options.items():
            if name not in self.datasets:  # an option nobody reads is a typo, not a setting
                raise GanzooError(f"dataset_options for '{name}', which is not one of the benchmark's datasets "
                                  f"({', '.join(self.datasets)})")
            if not isinstance(given, Mapping):
                raise GanzooError(f"dataset_options for '{name}' must be a table of option = value, got {given!r}")
            options[name] = normalize_dataset_options(given)
        object.__setattr__(self, "dataset_options", options)
        if not isinstance(self.train, Mapping):
            raise GanzooError(f"train must be a table of training settings, got {self.train!r}")
        for table in ("variant_options", "arch_options"):
            value = getattr(self, table)
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                raise GanzooError(f"{table} must map each name to a table of options, got {value!r}")
            object.__setattr__(self, table, {k: dict(v) for k, v in value.items()})
        stray = sorted(set(self.arch_options) - set(self.archs))
        if stray:
            raise GanzooError(f"arch_options for {', '.join(stray)}, which is not one of the benchmark's "
                              f"architectures ({', '.join(self.archs)})")
        if self.variants:
            stray = sorted(set(self.variant_options) - set(self.variants))
            if stray:
                raise GanzooError(f"variant_options for {', '.join(stray)}, which this benchmark does not train "
                                  f"(variants: {', '.join(self.variants)})")
        if self.sweep is not None:
            if not isinstance(self.sweep, Mapping):
                raise GanzooError(f"sweep must be a table, got {self.sweep!r}")
            object.__setattr__(self, "sweep", dict(self.sweep))
            sweep = self.sweep_spec()
            if sweep.selection_seed in self.seeds:
                raise GanzooError(f"[sweep] selection_seed {sweep.selection_seed} is also a report seed: the runs "
                                  "that choose a setting must not be the ones reported; pick another")
        reserved = {"variant", "arch", "dataset", "seed", "steps", "eval_every", "device", "variant_options",
                    "dataset_options", "arch_options"} & set(self.train)
        if reserved:
            raise GanzooError(f"[train] cannot set {', '.join(sorted(reserved))}: they are benchmark settings")
        from .evaluation import parse_metrics

        object.__setattr__(self, "metrics", parse_metrics(self.metrics))
        if not isinstance(self.metric_options, Mapping) or not all(isinstance(v, Mapping)
                                                                   for v in self.metric_options.values()):
            raise GanzooError(f"metric_options must map each metric name to a table of options, "
                              f"got {self.metric_options!r}")
        object.__setattr__(self, "metric_options", {k: dict(v) for k, v in self.metric_options.items()})
        if self.metrics is not None:
            stray = sorted(set(self.metric_options) - set(self.metrics))
            if stray:
                raise GanzooError(f"metric_options for {', '.join(stray)}, which this benchmark does not compute "
                                  f"(metrics: {', '.join(self.metrics)})")
        if self.spread not in ("sd", "se"):
            raise GanzooError(f"spread must be sd or se, got {self.spread!r}")
        object.__setattr__(self, "setups", _checked_setups(self.setups))
        conditions = self.conditions
        if isinstance(conditions, str):
            conditions = [c.strip() for c in conditions.split(",") if c.strip()]
        if not isinstance(conditions, (list, tuple)) or not all(isinstance(c, str) and c for c in conditions):
            raise GanzooError(f"conditions must be a list of conditioning methods (or none), got {self.conditions!r}")
        if len(set(conditions)) != len(conditions):
            raise GanzooError(f"conditions repeat: {', '.join(conditions)}")
        object.__setattr__(self, "conditions", tuple(conditions))
        if not isinstance(self.condition_options, Mapping) or not all(isinstance(v, Mapping)
                                                                      for v in self.condition_options.values()):
            raise GanzooError(f"condition_options must map each method to a table of options, "
                              f"got {self.condition_options!r}")
        object.__setattr__(self, "condition_options", {k: dict(v) for k, v in self.condition_options.items()})
        stray = sorted(set(self.condition_options) - set(self.conditions))
        if stray:
            raise GanzooError(f"condition_options for {', '.join(stray)}, which is not one of the benchmark's "
                              f"conditions ({', '.join(self.conditions) or 'none given'})")
        for name, changes in self.setups.items():
            if self.conditions and ("condition" in changes or "condition_options" in changes):
                raise GanzooError(f"setup '{name}' sets a condition and the benchmark has a conditions axis; use one")
        object.__setattr__(self, "dataset_train", _checked_setups(self.dataset_train, "dataset_train"))
        stray = sorted(set(self.dataset_train) - set(self.datasets))
        if stray:
            raise GanzooError(f"dataset_train for {', '.join(stray)}, which is not one of the benchmark's datasets "
                              f"({', '.join(self.datasets)})")

    @classmethod
    def from_toml(cls, path: Path | str, **overrides: Any) -> "BenchSpec":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is no error
        except FileNotFoundError:
            raise GanzooError(f"benchmark config not found: {path}") from None
        except IsADirectoryError:
            raise GanzooError(f"benchmark config {path} is a folder, not a TOML file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GanzooError(f"benchmark config {path} is not valid TOML: {exc}") from None
        except RecursionError:
            raise GanzooError(f"benchmark config {path} nests tables or arrays too deeply to read") from None
        settings = dict(data.get("bench", {}))
        tables = ("train", "dataset_options", "variant_options", "arch_options", "metric_options", "setups",
                  "dataset_train", "condition_options", "sweep")
        for table in tables:  # own tables: refuse
            if table in settings:
                raise GanzooError(f"benchmark config {path}: '{table}' is a table of its own ([{table}]), "
                                  "not a key of [bench]")
        unknown_tables = set(data) - {"bench", *tables}
        if unknown_tables:
            raise GanzooError(f"benchmark config {path}: unknown table(s) {', '.join(sorted(unknown_tables))}; "
                              f"expected {', '.join(f'[{t}]' for t in ('bench', *tables))}")
        if "sweep" in data:
            settings["sweep"] = dict(data["sweep"])
        for table in tables[:-1]:
            settings[table] = dict(data.get(table, {}))
        _narrow_to_selection(settings, overrides)
        for table in ("variant_options", "arch_options", "metric_options", "setups", "condition_options"):
            # the command line adds
            for name, given in (overrides.pop(table, None) or {}).items():
                settings[table][name] = {**settings[table].get(name, {}), **given}
        selected = overrides.pop("select_setups", None)
        if selected:
            settings["setups"] = _select_setups(settings["setups"], selected, str(path))
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(settings, where=str(path))

    @classmethod
    def from_dict(cls, settings: dict[str, Any], where: str = "benchmark settings") -> "BenchSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise GanzooError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if settings.get("variants") == "all":
            settings = {**settings, "variants": ()}
        return cls(**settings)

    def sweep_spec(self):
        """The [sweep] table as a SweepSpec, or None for a benchmark of each variant's recipe alone."""
        from .sweep import SweepSpec

        return SweepSpec.from_dict(self.sweep) if self.sweep is not None else None

    def resolved_variants(self) -> tuple[str, ...]:
        return self.variants or tuple(registry.entries("variant"))

    def all_setups(self) -> dict[str, dict]:
        """The setups axis as cells see it: the named setups, crossed with the conditions axis when there is one
        (setup "projection" trains with condition = "projection"; "pacgan2-projection" beside setups)."""
        if not self.conditions:
            return self.setups
        crossed = {}
        for setup, changes in (self.setups or {"": {}}).items():
            for condition in self.conditions:
                options = self.condition_options.get(condition, {})
                # the unconditional cells keep their setup's name (and run folders) as without the axis
                name = setup if condition == "none" else f"{setup}-{condition}" if setup else condition
                crossed[name] = {
                    **changes, "condition": condition, **({"condition_options": options} if options else {})}
        return crossed

    def condition_names(self) -> tuple[str, ...]:
        """The conditioning methods its cells train with ("none" left out)."""
        names = [s.get("condition", "none") for s in self.all_setups().values()]
        return tuple(dict.fromkeys(n for n in names if n != "none"))

    def setup_names(self) -> tuple[str, ...]:
        """The setups axis: the named setups in order, or the one unnamed setup ("") of a benchmark without any."""
        return tuple(self.all_setups()) or ("",)

    def _settings(self, variant: str, arch: str, dataset: str, seed: int,
                  inception_weights: Optional[str] = None, setup: str = "") -> TrainConfig:
        setups = self.all_setups()
        changes = {**self.dataset_train.get(dataset, {}), **setups.get(setup, {})}
        steps = changes.pop("steps", self.steps)
        arch_options = {**self.arch_options.get(arch, {}), **self.dataset_train.get(dataset, {}).get("arch_options", {}),
                        **setups.get(setup, {}).get("arch_options", {})}
        changes.pop("arch_options", None)
        return TrainConfig.from_dict({
            **self.train, **changes, "variant": variant, "arch": arch, "dataset": dataset, "seed": seed,
            "steps": steps, "eval_every": self.eval_every, "eval_samples": self.eval_samples,
            "eval_extractor": self.extractor, "eval_metrics": list(self.metrics) if self.metrics else None,
            "inception_weights": inception_weights, "device": self.device, "data_root": self.data_root,
            "tensorboard": self.tensorboard,
            "dataset_options": self.dataset_options.get(dataset, {}),
            "variant_options": self.variant_options.get(variant, {}),
            "arch_options": arch_options})

    def train_config(self, variant: str, arch: str, dataset: str, seed: int,
                     inception_weights: Optional[str] = None, setup: str = "") -> TrainConfig:
        """One cell's config, resolved: the variant's recipe wherever [train] (or the setup) leaves a recipe field
        out."""
        from .training import resolve

        return resolve(self._settings(variant, arch, dataset, seed, inception_weights, setup))

    def metric_options_for(self, dataset: str, conditional: bool = False) -> dict[str, dict]:
        """The metric options of the metrics a cell on `dataset` computes (a preset may set Stacked MNIST's beside
        the mixtures'; a conditional cell computes the conditional metrics too)."""
        from .evaluation import check_metrics

        names = check_metrics(self.metrics, registry.dataset(dataset, self.dataset_options.get(dataset, {})),
                              conditional)
        return {name: options for name, options in self.metric_options.items() if name in names}

    def protocol_settings(self) -> dict[str, Any]:
        """What every cell's score depends on besides its own axis values: a report folder holds one of these.
        Recipe fields left to the variants are null here; each row records the recipe its cell used."""
        axes = {"variant", "arch", "dataset", "seed", "dataset_options", "variant_options", "arch_options"}
        recipe = self._settings("-", "-", "-", 0).identity()
        settings = {"recipe": {k: v for k, v in sorted(recipe.items()) if k not in axes}, "n_fake": self.n_fake,
                    "n_real": self.n_real, "extractor": self.extractor, "dataset_options": self.dataset_options,
                    "variant_options": self.variant_options, "arch_options": self.arch_options, "sweep": self.sweep,
                    "eval_every": self.eval_every, "eval_samples": self.eval_samples}
        # Added later: present only when used, so that report folders made before keep their settings.
        for name in ("metrics", "metric_options", "setups", "dataset_train", "conditions", "condition_options"):
            if getattr(self, name):
                settings[name] = list(getattr(self, name)) if name in ("metrics", "conditions") else getattr(self, name)
        return settings

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("variants", "archs", "datasets", "seeds"):
            d[k] = list(d[k])
        d["metrics"] = list(self.metrics) if self.metrics else None
        d["conditions"] = list(self.conditions)
        return d


# TrainConfig fields a setup may not set: they are the grid's other axes or the benchmark's own settings.
SETUP_RESERVED = {"variant", "arch", "dataset", "seed", "steps", "eval_every", "eval_samples", "eval_extractor",
                  "eval_metrics", "device", "data_root", "inception_weights", "tensorboard", "dataset_options",
                  "variant_options"}
SETUP_NAME = __import__("re").compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _checked_setups(setups: Any, table: str = "setups") -> dict[str, dict]:
    """{name: {TrainConfig field: value}} with names fit for folder names and fields a setup (or a dataset's
    [dataset_train] table) may set."""
    if setups is None:
        return {}
    what = "setup" if table == "setups" else f"{table} for"
    if not isinstance(setups, Mapping) or not all(isinstance(v, Mapping) for v in setups.values()):
        raise GanzooError(f"{table} must map each name to a table of training settings, got {setups!r}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    checked = {}
    for name, changes in setups.items():
        if table == "setups" and (not isinstance(name, str) or not SETUP_NAME.match(name)):
            raise GanzooError(f"setup name {name!r} must be lowercase letters, digits, '-', '_' or '.'")
        unknown = sorted(set(changes) - known)
        if unknown:
            raise GanzooError(f"{what} '{name}': unknown training setting(s) {', '.join(unknown)}")
        # a dataset's own budget is a published protocol's too (Stacked MNIST's 500,000 steps beside 400,000)
        reserved = sorted(set(changes) & (SETUP_RESERVED - ({"steps"} if table == "dataset_train" else set())))
        if reserved:
            raise GanzooError(f"{what} '{name}' cannot set {', '.join(reserved)}: they are benchmark settings")
        if "arch_options" in changes and not isinstance(changes["arch_options"], Mapping):
            raise GanzooError(f"{what} '{name}': arch_options must be a table of option = value")
        checked[name] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in changes.items()}
    return checked


def _select_setups(setups: dict, names: str | list, where: str) -> dict:
    """The setups --setups names, in that order; an unknown name is refused naming the ones there are."""
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in setups]
    if unknown:
        raise GanzooError(f"{where}: no setup {', '.join(map(repr, unknown))}; its setups: "
                          f"{', '.join(setups) or 'none'}")
    return {n: setups[n] for n in wanted}


# The preset tables that belong to one entry of an axis: a command-line selection among the preset's own entries
# (`--datasets ring` on a preset of ring, grid and Stacked MNIST) leaves the other entries' tables out.
AXIS_TABLES = {"datasets": ("dataset_options", "dataset_train"), "archs": ("arch_options",),
               "variants": ("variant_options",)}


def _narrow_to_selection(settings: dict, overrides: dict) -> None:
    for axis, tables in AXIS_TABLES.items():
        chosen = overrides.get(axis)
        if chosen is None or chosen == "all":
            continue
        chosen = {c.strip() for c in (chosen.split(",") if isinstance(chosen, str) else chosen)}
        own = settings.get(axis, ())
        own = {o.strip() for o in (own.split(",") if isinstance(own, str) else own)}
        for table in tables:  # a name the preset does not list stays, to be refused as the typo it is
            settings[table] = {name: value for name, value in settings[table].items()
                               if name in chosen or name not in own}


def load_spec(config: Optional[Path | str] = None, **overrides: Any) -> BenchSpec:
    """A preset file (or, without one, the built-in CPU preset: BenchSpec's defaults) with overrides on top."""
    if config is None:
        selected = overrides.pop("select_setups", None)
        settings = {k: v for k, v in overrides.items() if v is not None}
        if selected:
            settings["setups"] = _select_setups(settings.get("setups") or {}, selected, "--setups")
        return BenchSpec.from_dict(settings)
    return BenchSpec.from_toml(config, **overrides)


def source_revision() -> str:
    """The git commit of the ganzoo source tree, when it runs from a checkout ("" otherwise)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:
        return ""
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------------------------------------------------


def bench(spec: Optional[BenchSpec] = None, out: Path | str = "bench", *, progress: bool = True,
          config: Optional[Path | str] = None, inception_weights: Optional[str] = None, executor: Any = "local",
          jobs: Optional[int] = None, command: Optional[str] = None, **overrides: Any):
    """Run (or resume) a benchmark into the report folder `out`; returns its leaderboard DataFrame.

    ``ganzoo.bench(variants="vanilla,lsgan", seeds=[0, 1], steps=2000)`` or ``ganzoo.bench(spec)``.
    `executor` is "local" (this machine: `jobs` cells at once, default 1, in this process), "ray", or one made by
    ``executors.make_executor("ray", address=...)``.
    The DataFrame's attrs["all_completed"] says whether every cell trained and scored. `command` is how
    report.html says the benchmark was made (the CLI passes its command line).
    """
    from .leaderboard import leaderboard, per_seed, write_reports
    from .report import write_html_report

    if spec is None:
        spec = load_spec(config, **overrides)
    elif overrides or config:
        raise GanzooError("pass either a BenchSpec or settings, not both")
    out = Path(out)
    try:  # a name that is not UTF-8 could not be written into report.html (nor reported): refused before training
        str(out.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise GanzooError(f"the report folder {str(out).encode('utf-8', 'surrogateescape')!r} has a name that is not "
                          "valid UTF-8; choose another --out") from None
    variants = spec.resolved_variants()
    for name in variants:
        registry.get("variant", name)  # fail before any training on a misspelt name
    for name in spec.archs:
        registry.get("architecture", name)
    from .evaluation import check_metrics

    computed: set[str] = set()
    for name in spec.datasets:  # every metric must apply to every dataset: refused here, before any training
        dataset = registry.dataset(name, spec.dataset_options.get(name, {}))
        computed |= set(check_metrics(spec.metrics, dataset, bool(spec.condition_names())))
    for name in sorted(set(spec.metrics or ()) | set(spec.metric_options)):  # unknown names and options fail here
        registry.configure("metric", registry.get("metric", name).spec, spec.metric_options.get(name))
    unused = sorted(set(spec.metric_options) - computed)
    if unused:  # a preset's options for a dataset this run left out (Stacked MNIST's, on `--datasets ring`)
        print(f"ganzoo: metric_options for {', '.join(unused)} unused: none of the benchmark's datasets computes "
              f"{'it' if len(unused) == 1 else 'them'}", file=sys.stderr)
    for condition in spec.condition_names():  # a conditioning method needs labels: refused before any training
        registry.get("condition", condition)
        for name in spec.datasets:
            if not registry.dataset(name, spec.dataset_options.get(name, {})).num_classes:
                raise GanzooError(f"condition '{condition}' needs a labelled dataset; dataset '{name}' has no labels")
    stray = sorted(set(spec.variant_options) - set(variants))
    if stray:
        raise GanzooError(f"variant_options for {', '.join(stray)}, which this benchmark does not train")
    # Every cell's config, resolved before anything is written: a bad variant option fails here, in one line.
    sweep = spec.sweep_spec()
    pairs = _fitting_pairs(spec)
    groups = [(d, a, v) for d, a in pairs for v in variants]
    if sweep is not None and len(spec.all_setups()) > 1:
        raise GanzooError(f"a [sweep] searches each variant's settings under one setup; this benchmark has "
                          f"{len(spec.all_setups())} ({', '.join(spec.all_setups())}): run one sweep per setup")
    if sweep is None:  # each variant's recipe, on every seed, under every setup
        configs = [(spec.train_config(v, a, d, s, inception_weights, setup), setup, None)
                   for d, a, v in groups for setup in spec.setup_names() for s in spec.seeds]
        searched = []
    else:  # first its settings on the selection seed; the report cells follow once a setting is chosen
        from .sweep import TRAINING_KEYS, apply_setting

        configs = []
        setup = spec.setup_names()[0]
        # A [sweep.space.<name>] table for no variant of this benchmark is a typo (or a misspelt setting,
        # bta2 = {...}): it would be ignored, so it is refused by name.
        stray = [name for name in sweep.variant_tables() if name not in variants]
        if stray:
            raise GanzooError(f"[sweep.space.{stray[0]}]: '{stray[0]}' is neither a variant of this benchmark "
                              f"({', '.join(variants)}) nor a training setting a sweep varies "
                              f"({', '.join(TRAINING_KEYS)})")
        searched, short = [], []
        for d, a, v in groups:
            base = spec.train_config(v, a, d, sweep.selection_seed, inception_weights, setup)
            # settings that train the same run (a key the variant ignores) count once: another is drawn
            settings = sweep.settings_for(v, identity=lambda setting, base=base: apply_setting(base, setting)[0].key())
            if len(settings) < sweep.settings and v not in short:
                short.append(v)
                print(f"ganzoo: [sweep] {v}: its search space holds only {len(settings)} distinct setting(s) of the "
                      f"{sweep.settings} asked for (settings that train the same run count once)", file=sys.stderr)
            searched += [(d, a, v, i, *apply_setting(base, setting)) for i, setting in enumerate(settings)]
    if isinstance(executor, str):
        runner = make_executor(executor, jobs=jobs)
    elif jobs is not None:
        raise GanzooError("jobs is an option of the local executor: make_executor('local', jobs=N)")
    else:
        runner = executor
    runner.check(spec)  # settings the executor cannot run are refused before the folder is created
    if not runner.in_process:  # cells run in other processes, which find plugins through entry points
        why = f"{'--jobs' if runner.name == 'local' else 'Ray'} runs cells in other processes"
        for kind, names in (("variant", variants), ("architecture", spec.archs), ("dataset", spec.datasets),
                            ("extractor", [spec.extractor] if spec.extractor else [])):
            for name in names:
                registry.require_installed(kind, name, why)
    # Three stages, in this order: the reference rows first train the reference classifier any cell then reuses.
    real = [Job(f"real:{d}", f"real {d}", _real_row, dict(spec=spec, dataset=d, inception_weights=inception_weights),
                row={"kind": "real", "variant": "real data", "arch": "-", "dataset": d, "seed": 0})
            for d in spec.datasets]  # "what perfect looks like" under this protocol
    untrained = [Job(f"untrained:{a}:{d}", f"untrained {a}/{d}", _untrained_row,
                     dict(spec=spec, arch=a, dataset=d, inception_weights=inception_weights),
                     row={"kind": "untrained", "variant": "untrained generator", "arch": a, "dataset": d,
                          "seed": spec.seeds[0]})
                 for d, a in pairs]  # the floor every trained variant must clear
    show = progress and runner.in_process
    cells = [_cell_job(config, out, spec, show, inception_weights, setup=setup) for config, setup, _ in configs]
    search = [_cell_job(config, out, spec, show, inception_weights, kind="search", setting=(i, applied),
                        setup=spec.setup_names()[0]) for _, _, _, i, config, applied in searched]
    # Every cell's settings are checked above (train_config) before the report folder is created or locked.
    fresh = not out.exists()  # a benchmark that stops before its first record leaves no folder behind
    # The driver holds the report folder for the whole benchmark; its cells lock their own run folders (in this
    # process, in --jobs children or on Ray workers), so they never wait on it.
    with locks.hold(out, "report folder"):
        store = ResultsStore.open(out / "results.sqlite", create=True)
        store.claim(spec.protocol_settings(), spec.to_dict(), {"ganzoo_version": __version__,
                                                              "git_commit": source_revision()})
        store.records()  # a damaged or tampered store is refused here, before any training (store.validate)
        # Resume: what an earlier run recorded is skipped (a failed cell is tried again, a diverged one is final).
        stages = [[job for job in stage if not store.has(job.key, final_only=stage in (cells, search))]
                  for stage in (real, untrained, search, cells)]
        from tqdm.auto import tqdm

        total = len(real) + len(untrained) + len(search) + len(cells) + (len(groups) * len(spec.seeds) if sweep else 0)
        bar = tqdm(total=total, initial=total - sum(map(len, stages)), disable=not progress, unit="cell",
                   desc="bench", position=0, dynamic_ncols=True)
        try:
            if any(stages) or sweep is not None:
                with runner.session(spec, out):
                    for todo in stages:
                        for job, record in runner.run(todo, bar):
                            store.put(job.key, record)
                            bar.update()
                    if sweep is not None:  # the report stage: each variant's chosen setting on the report seeds
                        report = [job for job in _report_jobs(spec, store, searched, out, show, inception_weights)
                                  if not store.has(job.key, final_only=True)]
                        bar.total = bar.n + len(report)  # what is left, now that it is known
                        bar.refresh()
                        for job, record in runner.run(report, bar):
                            store.put(job.key, record)
                            bar.update()
        except BaseException:
            bar.close()
            if fresh and not store.records() and not (out / "runs").exists():
                # e.g. Ray unreachable, a dataset's files missing: an empty store would still tie the folder to
                # this protocol, refusing a corrected command with other settings
                store.close()
                shutil.rmtree(out, ignore_errors=True)
            raise
        bar.close()

        board = leaderboard(out)
        write_reports(out, board)
        if command is None:  # called from Python: the settings it resolved to, enough to make it again
            command = f"ganzoo.bench(ganzoo.bench.BenchSpec.from_dict({spec.to_dict()!r}), out={str(out)!r})"
        write_html_report(out, board, per_seed(out), command, store.meta())
    return board


def _fitting_pairs(spec: BenchSpec) -> list[tuple[str, str]]:
    """(dataset, architecture) pairs whose architecture takes the dataset's samples: a preset may list the 2-D
    mixtures' networks beside Stacked MNIST's, and each trains on the data it was built for. The pairs left out
    are said on stderr; a dataset no architecture takes is an error."""
    from .training import check_architecture_fits

    pairs, skipped = [], []
    for d in spec.datasets:
        dataset = registry.dataset(d, spec.dataset_options.get(d, {}))
        for a in spec.archs:
            config = spec._settings(spec.resolved_variants()[0], a, d, spec.seeds[0])
            architecture = registry.architecture(a, config.arch_options)  # a bad option is an error, not a misfit
            try:
                check_architecture_fits(config, architecture, dataset)
            except GanzooError as exc:
                skipped.append(str(exc))
                continue
            pairs.append((d, a))
    # A dataset no architecture takes is a mistake; an architecture none of the datasets fits is only left out
    # (a preset run for some of its datasets: `--datasets ring` on one that also has Stacked MNIST's network).
    lonely = [n for n in spec.datasets if not any(n == d for d, _ in pairs)]
    if lonely:
        raise GanzooError(f"dataset '{lonely[0]}' fits none of the benchmark's architectures: "
                          + "; ".join(s for s in skipped if f"'{lonely[0]}'" in s))
    if skipped:
        print("ganzoo: left out of the grid: " + "; ".join(skipped), file=sys.stderr)
    return pairs


def _cell_job(config: TrainConfig, out: Path, spec: BenchSpec, progress: bool, inception_weights: Optional[str],
              kind: str = "run", setting: Optional[tuple[int, dict]] = None, setup: str = "") -> Job:
    folder = str(run_folder(config, setup))
    row = _cell_row(config, kind, setting, setup)
    label = f"{config.variant}{f' [{setup}]' if setup else ''}/{config.arch}/{config.dataset} seed {config.seed}"
    if setting is not None:
        label += f" setting {setting[0]}"
    return Job(f"{kind}:{config.key()}", label, _run_cell,
               dict(config=config, out=out, spec=spec, progress=progress, inception_weights=inception_weights,
                    row=row), row=row, folder=folder)


def _report_jobs(spec: BenchSpec, store: ResultsStore, searched: list, out: Path, progress: bool,
                 inception_weights: Optional[str]) -> list[Job]:
    """Each variant's chosen setting on the report seeds. The choice (the lowest FID of the search) is made only
    once every setting of the variant has its final outcome (a score, or a divergence a rerun would not retry):
    a setting that failed (its worker killed, say) is retried by the next run, and choosing without it could
    keep a worse setting for good. The choice is then recorded once, so later reruns keep it."""
    from .store import FINAL_STATUSES
    from .sweep import apply_setting

    records = {r["key"]: r for r in store.records()}
    jobs = []
    for (d, a, v), group in _by_group(searched).items():
        key = f"selection:{d}:{a}:{v}"
        if key not in records:
            outcomes = [records.get(f"search:{config.key()}") or {} for _, _, _, _, config, _ in group]
            if any(found.get("status") not in FINAL_STATUSES for found in outcomes):
                continue  # a setting still to score: no choice yet (the leaderboard's row says so; a rerun retries)
            scored = []
            for (_, _, _, i, config, applied), found in zip(group, outcomes):
                fid = found.get("fid")
                if found.get("status") == "completed" and isinstance(fid, (int, float)) and fid == fid:
                    scored.append((fid, i, applied))
            if not scored:
                continue  # every setting diverged: nothing to choose from (the leaderboard's row says so)
            fid, i, applied = min(scored, key=lambda t: (t[0], t[1]))
            records[key] = {"kind": "selection", "variant": v, "arch": a, "dataset": d, "seed": -1,
                            "status": "completed", "error": "", "setting": i, "setting_applied": applied,
                            "selection_fid": fid, "settings_scored": len(scored)}
            store.put(key, records[key])
        chosen = records[key]
        for s in spec.seeds:
            setup = spec.setup_names()[0]
            config, applied = apply_setting(spec.train_config(v, a, d, s, inception_weights, setup),
                                            chosen["setting_applied"])
            jobs.append(_cell_job(config, out, spec, progress, inception_weights,
                                  setting=(chosen["setting"], applied), setup=setup))
    return jobs


def _by_group(searched: list) -> dict:
    groups: dict = {}
    for entry in searched:
        groups.setdefault(entry[:3], []).append(entry)
    return groups


def _run_cell(config: TrainConfig, out: Path, spec: BenchSpec, progress: bool,
              inception_weights: Optional[str], row: Optional[dict] = None) -> dict[str, Any]:
    """Train (or resume) one cell and score it; any failure becomes the record's status and error."""
    from .evaluation import evaluate

    row = row or _cell_row(config)
    run_dir = out / row["run"]
    try:
        run = _train_or_resume(config, run_dir, progress)
        started = time.perf_counter()
        # keep_going: a metric plugin that fails marks the cell failed with its error; the others are still kept
        result = evaluate(run, spec.extractor, n_fake=spec.n_fake, n_real=spec.n_real, seed=config.seed,
                          device=spec.device, inception_weights=inception_weights, progress=False,
                          metrics=spec.metrics, metric_options=spec.metric_options_for(config.dataset, config.condition != "none"),
                          keep_going=True)
    except DivergedError as exc:
        return {**row, "status": "diverged", "error": str(exc), **_run_stats(run_dir, config)}
    except GanzooError as exc:
        return {**row, "status": "failed", "error": str(exc), **_run_stats(run_dir, config)}
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the grid
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno})"
        return {**row, "status": "failed", "error": f"{type(exc).__name__}: {exc}{where}",
                **_run_stats(run_dir, config)}
    return {**row, **_scored(result), **_run_stats(run_dir, config), **result.to_record(),
            "eval_seconds": time.perf_counter() - started}


def _scored(result) -> dict[str, str]:
    """A record's status after scoring: failed, naming the metrics that failed (its other metrics are kept, and a
    rerun scores it again), or completed."""
    if result.errors:
        return {"status": "failed", "error": "; ".join(result.errors.values())}
    return {"status": "completed", "error": ""}


def _cell_row(config: TrainConfig, kind: str = "run", setting: Optional[tuple[int, dict]] = None,
              setup: str = "") -> dict[str, Any]:
    """What identifies a cell's row in the results, including how it was trained: the recipe and options as
    text and as one column per field (so that rows can be told apart in a CSV), and its sweep setting."""
    from .sweep import describe

    row = {"kind": kind, "variant": config.variant, **({"setup": setup} if setup else {}), "arch": config.arch,
           "dataset": config.dataset, "seed": config.seed, "run": str(run_folder(config, setup)),
           "recipe": describe_training(config), **({"condition": config.condition} if config.condition != "none" else {}),
           "d_steps": config.d_steps, "optimizer": config.optimizer, "lr": config.lr,
           "beta1": config.betas[0] if config.betas else None, "beta2": config.betas[1] if config.betas else None,
           **option_columns(config)}
    if setting is not None:
        row.update(setting=setting[0], setting_desc=describe(setting[1]))
    return row


def option_columns(config: TrainConfig) -> dict[str, Any]:
    """Every option of the cell's variant and architecture, defaults included, one column each, keyed by the
    plugin's kind and name (option.variant.r1.gamma, option.arch.dcgan.width): two plugins' options that share
    a name (LeCam's and CR's lambda) never share a column."""
    columns = {}
    for kind, prefix, name, given in (("variant", "variant", config.variant, config.variant_options),
                                      ("architecture", "arch", config.arch, config.arch_options)):
        for key, value in registry.declared_values(kind, name, given).items():
            columns[f"option.{prefix}.{name}.{key}"] = value
    if config.condition != "none":  # option.condition.acgan.fake_term, ...
        for key, value in registry.declared_values("condition", config.condition, config.condition_options).items():
            columns[f"option.condition.{config.condition}.{key}"] = value
    if config.augment:  # small data: the augmentation's options, and the training-set size
        for key, value in registry.declared_values("augmentation", config.augment, config.augment_options).items():
            columns[f"option.augment.{config.augment}.{key}"] = value
    if config.train_subset:
        columns["train_subset"] = config.train_subset
    return columns


def run_folder(config: TrainConfig, setup: str = "") -> Path:
    """A cell's run folder, relative to the report folder (its setup's name in it, when it has one): one folder
    directly under runs/, whatever a plugin's names hold ('/', '..', control characters become '_'; the config's
    hash at the end keeps the name unique)."""
    named = f"{config.variant}-{setup}" if setup else config.variant
    name = f"{named}-{config.arch}-{config.dataset}-seed{config.seed}-{config.key()}"
    return Path("runs") / FOLDER_UNSAFE.sub("_", name)


FOLDER_UNSAFE = __import__("re").compile(r"[^\w.+=-]")  # letters and digits of any script stay


def _train_or_resume(config: TrainConfig, run_dir: Path, progress: bool):
    from .runs import open_run
    from .training import train

    if (run_dir / "config.json").is_file():
        stored = open_run(run_dir)
        if stored.status == "diverged" and stored.config.identity() == config.identity():  # this cell's own run
            raise DivergedError(stored.stats.get("error", "diverged"))
    return train(config, out=run_dir, progress=progress)


def _run_stats(run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """Training facts from the run folder: steps, wall time, speed, the FID curve's best and final points; only
    when the folder holds this cell's own run (another run trained there, by `ganzoo train` say, is not its)."""
    from .runs import open_run

    try:
        run = open_run(run_dir)
    except GanzooError:
        return {}
    if run.config.identity() != config.identity():
        return {}
    stats = run.stats
    final = stats.get("final", {})
    return {"steps": run.step, "wall_time_s": stats.get("wall_time_s"),
            "g_images_per_s": stats.get("g_images_per_s"), "d_images_per_s": stats.get("d_images_per_s"),
            "best_fid": stats.get("best_fid"), "best_fid_step": stats.get("best_fid_step"),
            "final_fid": stats.get("final_fid"),
            "final_d_loss": final.get("d_loss"), "final_g_loss": final.get("g_loss"),
            "final_d_real": final.get("d_real"), "final_d_fake": final.get("d_fake"),
            # small data: the overfitting signal and the augmentation's final state (ADA's p), where the run has them
            **{f"{k}": v for k, v in stats.get("overfitting", {}).items() if k != "images"},
            **{k: v for k, v in final.items() if k.startswith("augment_")}}


def _real_row(spec: BenchSpec, dataset: str, inception_weights: Optional[str]) -> dict[str, Any]:
    from .evaluation import real_reference

    result = real_reference(dataset, spec.extractor, n=None, seed=0, n_real=spec.n_real, device=spec.device,
                            inception_weights=inception_weights, dataset_options=spec.dataset_options.get(dataset),
                            data_root=spec.data_root, progress=False, metrics=spec.metrics,
                            metric_options=spec.metric_options_for(dataset, bool(spec.condition_names())),
                            keep_going=True, conditional=bool(spec.condition_names()))  # real labels: perfect
    return {"kind": "real", "variant": "real data", "arch": "-", "dataset": dataset, "seed": 0,
            **_scored(result), **result.to_record()}


def _untrained_row(spec: BenchSpec, arch: str, dataset: str, inception_weights: Optional[str]) -> dict[str, Any]:
    """A generator at its initial weights, scored like the others: the baseline a trained GAN must beat."""
    from .sampling import generate

    from .evaluation import Scorer

    config = spec.train_config(spec.resolved_variants()[0], arch, dataset, spec.seeds[0], setup=spec.setup_names()[0])
    shape = registry.dataset(dataset, config.dataset_options).shape
    torch.manual_seed(config.seed)
    generator = registry.architecture(arch, config.arch_options).build_generator(config.latent_dim, shape)
    scorer = Scorer(dataset, spec.extractor, spec.n_real, config.seed, spec.device, inception_weights,
                    config.dataset_options, spec.data_root, progress=False, metrics=spec.metrics,
                    metric_options=spec.metric_options_for(dataset))
    samples = generate(generator, scorer.samples_needed(spec.n_fake), config.latent_dim, config.seed)
    result = scorer.score(samples, config.seed, source=f"untrained {arch} generator, latent seed {config.seed}",
                          keep_going=True, n_fake=spec.n_fake)
    return {"kind": "untrained", "variant": "untrained generator", "arch": arch, "dataset": dataset,
            "seed": config.seed, **_scored(result), "steps": 0, **result.to_record()}
