"""Look things up by name across every plugin, with errors that say what exists and where it came from."""
from __future__ import annotations

import contextlib
import inspect
import os
import re
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Iterator, Mapping, Optional, TypeVar

from .config import normalize_options
from .errors import GanzooError, debugging
from .plugins import ENTRY_POINT_GROUP, RUNTIME_ORIGIN, get_plugin_manager, plugin_info, record_failure
from .specs import (AUGMENT_ARGUMENTS, BETTER, GENERATOR_STEP_ARGUMENTS, METRIC_NEEDS, STEP_ARGUMENTS,
                     ArchitectureSpec, AugmentationSpec, ConditionSpec,
                    DatasetSpec, ExtractorSpec, MetricColumn, MetricSpec, Option, Penalty, Recipe, VariantSpec)
from .steps import declared_arguments, generator_loss_problem

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    spec: T
    plugin: str  # entry-point name of the plugin that provided it
    origin: str  # "distribution version"


# kind -> (hook name, spec class); one hook per kind of thing a plugin can add.
KINDS: dict[str, tuple[str, type]] = {
    "variant": ("ganzoo_variants", VariantSpec),
    "architecture": ("ganzoo_architectures", ArchitectureSpec),
    "dataset": ("ganzoo_datasets", DatasetSpec),
    "extractor": ("ganzoo_feature_extractors", ExtractorSpec),
    "metric": ("ganzoo_metrics", MetricSpec),
    "condition": ("ganzoo_conditionings", ConditionSpec),
    "augmentation": ("ganzoo_augmentations", AugmentationSpec),
}


def register_kind(kind: str, hook_name: str, spec_class: type) -> None:
    """Let a core module add a kind of plugin contribution (evaluation adds feature extractors)."""
    KINDS[kind] = (hook_name, spec_class)


def entries(kind: str) -> dict[str, Entry[Any]]:
    """Every registered spec of one kind, keyed by name.

    Each hook implementation is called on its own so that every spec is attributed to its plugin. A plugin
    whose hook raises or returns something malformed is reported by name (a warning on stderr, and in
    `ganzoo plugins`) and left out, like one that fails to import: the other plugins keep working. A name
    claimed twice is an error naming both plugins.
    """
    hook_name, spec_class = KINDS[kind]
    pm = get_plugin_manager()
    found: dict[str, Entry[Any]] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        info = plugin_info(impl.plugin_name)
        specs, problem = _call_hook(impl, hook_name, spec_class)
        if problem:
            record_failure(impl.plugin_name, f"{hook_name} {problem}", hook=hook_name)
            continue
        for spec in specs:
            if spec.name in found:
                other = found[spec.name]
                raise GanzooError(
                    f"{kind} name '{spec.name}' is registered twice: by plugin '{other.plugin}' ({other.origin}) "
                    f"and by plugin '{impl.plugin_name}' ({info.origin}); uninstall one or set "
                    f"GANZOO_BLOCK_PLUGINS={impl.plugin_name}")
            found[spec.name] = Entry(spec, impl.plugin_name, info.origin)
    return dict(sorted(found.items()))


def _call_hook(impl, hook_name: str, spec_class: type) -> tuple[list, str]:
    """One plugin's specs of one kind, or what is wrong with them (a one-line reason)."""
    try:
        specs = impl.function()
    except Exception as exc:  # noqa: BLE001 - third-party code
        return [], f"raised {type(exc).__name__}: {exc}".splitlines()[0]
    if not isinstance(specs, (list, tuple)):
        return [], f"must return a list of {spec_class.__name__}, got {type(specs).__name__}"
    for spec in specs:
        if not isinstance(spec, spec_class):
            return [], f"returned a malformed spec ({type(spec).__name__}, expected {spec_class.__name__})"
        problem = _spec_problem(spec)
        if problem:
            return [], f"returned a malformed spec: {problem}"
    return list(specs), ""


COLUMN_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_COLUMNS = {"step", "d_loss", "g_loss", "d_real", "d_fake", "time_s"}
# Fields a results record holds besides its metrics: a metric column must not take one of these names.
RESERVED_METRIC_COLUMNS = RESERVED_COLUMNS | {"key", "kind", "status", "error", "variant", "arch", "dataset", "seed",
                                              "run", "recipe", "steps", "wall_time_s", "images_per_s", "best_fid",
                                              "final_fid", "metric_info", "setup", "d_train", "d_heldout", "d_gap"}


def _spec_problem(spec: Any) -> str:
    name = getattr(spec, "name", None)
    if not isinstance(name, str) or not name or name != name.strip() or " " in name:
        return f"name {name!r} must be a non-empty string without spaces"
    if not isinstance(getattr(spec, "description", None), str):
        return f"'{name}' has no description string"
    for attr in ("discriminator_loss", "generator_loss", "build_generator", "build_discriminator", "load",
                 "configure", "prepare", "after_discriminator_step", "after_generator_step", "generator",
                 "discriminator", "apply", "adjust"):
        if getattr(spec, attr, None) is not None and not callable(getattr(spec, attr)):
            return f"'{name}'.{attr} is not callable"
    options = getattr(spec, "options", None) or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) and isinstance(v, Option)
                                                for k, v in options.items()):
        return f"'{name}'.options must map option names to ganzoo.specs.Option"
    bad = [k for k, o in options.items() if not isinstance(o.default, (bool, int, float, str))]
    if bad:
        return f"'{name}' option {bad[0]}: its default must be a bool, int, float or string"
    if options and getattr(spec, "configure", None) is None:
        return f"'{name}' declares options but no configure to apply them"
    if isinstance(spec, MetricSpec):
        return _metric_problem(spec)
    if isinstance(spec, ConditionSpec):
        return _condition_problem(spec)
    if isinstance(spec, ArchitectureSpec) and (not isinstance(spec.data, tuple) or not spec.data
                                               or not set(spec.data) <= {"image", "vector"}):
        return f"'{name}'.data must be a tuple of 'image' and/or 'vector', got {spec.data!r}"
    if isinstance(spec, AugmentationSpec):
        return _augmentation_problem(spec)
    return _variant_problem(spec) if isinstance(spec, VariantSpec) else ""


def _augmentation_problem(spec: AugmentationSpec) -> str:
    name = spec.name
    if not callable(spec.apply):
        return f"'{name}'.apply is not callable"
    if not isinstance(spec.state, dict) or not all(isinstance(k, str) and COLUMN_NAME.match(k) for k in spec.state):
        return f"'{name}'.state must map names (lowercase letters, digits, underscores) to initial numbers"
    bad = [k for k, v in spec.state.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        return f"'{name}'.state['{bad[0]}'] must be a number"
    if not isinstance(spec.logged, tuple) or not set(spec.logged) <= set(spec.state):
        return f"'{name}'.logged must be a tuple of names from its state ({', '.join(spec.state) or 'none'})"
    if not isinstance(spec.changes_orientation, tuple) or not all(isinstance(t, str) for t in spec.changes_orientation):
        return f"'{name}'.changes_orientation must be a tuple of transform names"
    if spec.adjust is not None:
        unknown = sorted(set(declared_arguments(spec.adjust, AUGMENT_ARGUMENTS)) - set(AUGMENT_ARGUMENTS))
        if unknown:
            return f"'{name}' adjust asks for {', '.join(unknown)}; it may declare any of {', '.join(AUGMENT_ARGUMENTS)}"
    return ""


def _metric_problem(spec: MetricSpec) -> str:
    name = spec.name
    if not callable(spec.prepare):
        return f"'{name}'.prepare is not callable"
    if spec.applies is not None and not callable(spec.applies):
        return f"'{name}'.applies is not callable"
    if not isinstance(spec.columns, tuple) or not spec.columns or not all(isinstance(c, MetricColumn)
                                                                          for c in spec.columns):
        return f"'{name}'.columns must be a non-empty tuple of ganzoo.specs.MetricColumn"
    seen = set()
    for column in spec.columns:
        if not isinstance(column.name, str) or not COLUMN_NAME.match(column.name) or column.name in seen \
                or column.name in RESERVED_METRIC_COLUMNS:
            return (f"'{name}' column {column.name!r} must be a new column name (lowercase letters, digits, "
                    "underscores)")
        seen.add(column.name)
        if column.better not in BETTER:
            return f"'{name}' column {column.name}: better must be 'lower', 'higher' or None, got {column.better!r}"
        try:
            format(1.5, column.format)
        except (ValueError, TypeError):
            return f"'{name}' column {column.name}: format {column.format!r} is not a Python number format"
    if spec.rank_by and spec.rank_by not in seen:
        return f"'{name}'.rank_by {spec.rank_by!r} is none of its columns"
    unknown = sorted(set(spec.needs) - set(METRIC_NEEDS))
    if unknown:
        return f"'{name}' needs {', '.join(unknown)}; it may declare any of {', '.join(METRIC_NEEDS)}"
    if spec.samples is not None and (not isinstance(spec.samples, int) or isinstance(spec.samples, bool)
                                     or spec.samples < 1):
        return f"'{name}'.samples must be a positive integer or None, got {spec.samples!r}"
    return ""


def _condition_problem(spec: ConditionSpec) -> str:
    name = spec.name
    if name == "none":
        return "'none' means an unconditional run and cannot be a conditioning method's name"
    if not isinstance(spec.record, dict):
        return f"'{name}'.record must be a dict"
    seen = set()
    for side, terms, offered in (("discriminator", spec.discriminator_terms, STEP_ARGUMENTS),
                                 ("generator", spec.generator_terms, GENERATOR_STEP_ARGUMENTS)):
        if not isinstance(terms, tuple) or not all(isinstance(t, Penalty) for t in terms):
            return f"'{name}'.{side}_terms must be a tuple of ganzoo.specs.Penalty"
        for term in terms:
            if not isinstance(term.name, str) or not COLUMN_NAME.match(term.name) or term.name in RESERVED_COLUMNS \
                    or term.name in seen:
                return (f"'{name}' term name {term.name!r} must be a new log column name (lowercase letters, digits, "
                        "underscores)")
            seen.add(term.name)
            if not callable(term.compute):
                return f"'{name}' term {term.name} is not callable"
            unknown = sorted(set(declared_arguments(term.compute, offered)) - set(offered))
            if unknown:
                return f"'{name}' {side} term {term.name} asks for {', '.join(unknown)}; it may declare any of " \
                       f"{', '.join(offered)}"
            if not isinstance(term.every, int) or isinstance(term.every, bool) or term.every < 1:
                return f"'{name}' term {term.name}: every must be a positive integer, got {term.every!r}"
            if not isinstance(term.weight, (int, float)) or isinstance(term.weight, bool):
                return f"'{name}' term {term.name}: weight must be a number, got {term.weight!r}"
    return ""


def _variant_problem(spec: VariantSpec) -> str:
    name = spec.name
    if not isinstance(spec.recipe, Recipe):
        return f"'{name}'.recipe must be a ganzoo.specs.Recipe"
    try:
        from .config import TrainConfig

        r = spec.recipe
        TrainConfig(d_steps=r.d_steps, optimizer=r.optimizer, lr=r.lr, betas=r.betas)
    except GanzooError as exc:
        return f"'{name}'.recipe: {exc}"
    if r.optimizer == "adam" and r.betas is None:
        return f"'{name}'.recipe: adam needs betas"
    if not isinstance(spec.penalties, tuple) or not all(isinstance(p, Penalty) for p in spec.penalties):
        return f"'{name}'.penalties must be a tuple of ganzoo.specs.Penalty"
    seen = set()
    for penalty in spec.penalties:
        if not isinstance(penalty.name, str) or not COLUMN_NAME.match(penalty.name) \
                or penalty.name in RESERVED_COLUMNS or penalty.name in seen or penalty.name.startswith("augment_"):
            return (f"'{name}' penalty name {penalty.name!r} must be a new log column name "
                    "(lowercase letters, digits, underscores)")
        seen.add(penalty.name)
        if not isinstance(penalty.every, int) or isinstance(penalty.every, bool) or penalty.every < 1:
            return f"'{name}' penalty {penalty.name}: every must be a positive integer, got {penalty.every!r}"
        if not isinstance(penalty.weight, (int, float)) or isinstance(penalty.weight, bool):
            return f"'{name}' penalty {penalty.name}: weight must be a number, got {penalty.weight!r}"
    for what, fn in [(f"penalty {p.name}", p.compute) for p in spec.penalties] + [
            ("after_discriminator_step", spec.after_discriminator_step),
            ("after_generator_step", spec.after_generator_step)]:
        if fn is None:
            continue
        if not callable(fn):
            return f"'{name}' {what} is not callable"
        unknown = sorted(set(declared_arguments(fn)) - set(STEP_ARGUMENTS))
        if unknown:
            return (f"'{name}' {what} asks for {', '.join(unknown)}; it may declare any of "
                    f"{', '.join(STEP_ARGUMENTS)}")
    problem = generator_loss_problem(spec.generator_loss)
    if problem:
        return f"'{name}' {problem}"
    if not isinstance(spec.state, dict) or not all(isinstance(k, str) and k for k in spec.state):
        return f"'{name}'.state must map names to initial values (numbers or tensors)"
    for key, value in spec.state.items():
        try:
            import torch

            torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            return f"'{name}'.state['{key}'] must be a number or a tensor, got {type(value).__name__}"
    return ""


def get(kind: str, name: str) -> Entry[Any]:
    """One spec by name; an unknown name lists what is available and which package provides each."""
    available = entries(kind)
    if name not in available:
        from .plugins import failed_plugins

        listing = ", ".join(f"{n} ({e.origin.split(' ')[0]})" for n, e in available.items()) or "none"
        failed = "; ".join(f"{p.name}: {p.error}" for p in failed_plugins())
        raise GanzooError(f"unknown {kind} '{name}'; available: {listing}"
                          + (f" (plugins that failed: {failed})" if failed else ""))
    return available[name]


def require_installed(kind: str, name: str, why: str) -> None:
    """Refuse a spec that another Python process could not find: one whose plugin was registered at run time
    (a notebook's ``pm.register``) and is not also installed under the ``ganzoo`` entry-point group."""
    entry = get(kind, name)
    if plugin_info(entry.plugin).distribution != RUNTIME_ORIGIN:
        return
    plugin = get_plugin_manager().get_plugin(entry.plugin)
    module = getattr(plugin, "__name__", None) if isinstance(plugin, ModuleType) else None
    installed = {ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if module is None or module not in installed:
        raise GanzooError(f"{kind} '{name}' comes from plugin '{entry.plugin}', registered in this Python process "
                          f"only; {why}, which load plugins from installed packages (the 'ganzoo' entry-point "
                          "group): install it (pip install -e <its project>), or run one cell at a time here")


def variant(name: str, options: Optional[Mapping[str, Any]] = None) -> VariantSpec:
    """A variant spec configured with its options (TrainConfig.variant_options / --variant-option)."""
    return configure("variant", get("variant", name).spec, options)


def architecture(name: str, options: Optional[Mapping[str, Any]] = None) -> ArchitectureSpec:
    """An architecture spec configured with its options (TrainConfig.arch_options / --arch-option)."""
    return configure("architecture", get("architecture", name).spec, options)


def condition(name: str, options: Optional[Mapping[str, Any]] = None) -> ConditionSpec:
    """A conditioning method configured with its options (TrainConfig.condition_options / --condition-option)."""
    return configure("condition", get("condition", name).spec, options)


def dataset(name: str, options: Optional[Mapping[str, Any]] = None) -> DatasetSpec:
    """A dataset spec configured with its options (TrainConfig.dataset_options / --dataset-option)."""
    return configure("dataset", get("dataset", name).spec, options)


def configure_dataset(spec: DatasetSpec, options: Optional[Mapping[str, Any]] = None) -> DatasetSpec:
    return configure("dataset", spec, options)


def configure(kind: str, spec: Any, options: Optional[Mapping[str, Any]] = None) -> Any:
    """The one way options reach a plugin, whatever its kind: its `configure` returns the spec they describe.

    A spec that declares `options` gets them checked by name and parsed to the type of each default, with the
    defaults filled in; one that does not (a dataset written before declarations) gets the strings as given.
    """
    if spec.configure is None:
        option_values(kind, spec, options)  # refuses options given to a plugin that takes none
        return spec
    values = _typed_values(kind, spec, options)
    with plugin_code(kind, spec.name, "configure"):
        configured = spec.configure(values)
    spec_class = KINDS[kind][1]
    if not isinstance(configured, spec_class) or configured.name != spec.name:
        raise GanzooError(f"{kind} '{spec.name}': configure must return a {spec_class.__name__} named "
                          f"'{spec.name}', got {type(configured).__name__} {getattr(configured, 'name', '')!r}")
    problem = _spec_problem(configured)
    if problem:
        raise GanzooError(f"{kind} '{spec.name}': configure returned a malformed spec: {problem}")
    return configured


def option_values(kind: str, spec: Any, options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """What run configs store: the values `configure` receives, less late options at their default
    (specs.Option), so that equal values name the same run however they were typed."""
    declared = getattr(spec, "options", None) or {}
    return {k: v for k, v in _typed_values(kind, spec, options).items()
            if not (k in declared and declared[k].late and v == declared[k].default)}


def declared_values(kind: str, name: str, options: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Every option a plugin's `configure` receives, defaults included (late ones too): what a leaderboard
    shows of how a row was trained."""
    return _typed_values(kind, get(kind, name).spec, options)


def _typed_values(kind: str, spec: Any, options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """What `configure` receives: parsed, defaults filled in, when the spec declares its options; else the
    strings as given."""
    given = normalize_options(options, kind)
    if spec.configure is None:
        if given:
            raise GanzooError(f"{kind} '{spec.name}' takes no options, got {', '.join(sorted(given))}")
        return {}
    declared = getattr(spec, "options", None) or {}
    return parse_options(kind, spec.name, declared, options or {}) if declared else given


def parse_options(kind: str, name: str, declared: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Declared options with the given values parsed to their defaults' types (strings from the command line,
    numbers and booleans from Python or TOML); every declared option is in the result."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        listing = ", ".join(f"{k} (default {o.default!r})" for k, o in declared.items())
        raise GanzooError(f"{kind} '{name}' has no option {', '.join(unknown)}; its options: {listing}")
    values = {k: o.default for k, o in declared.items()}
    for key, raw in given.items():
        values[key] = _parse_value(raw, type(declared[key].default), f"{kind} '{name}' option {key}")
    return dict(sorted(values.items()))


def _parse_value(raw: Any, kind: type, where: str) -> Any:
    text = str(raw).strip()
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise GanzooError(f"{where} must be true or false, got {raw!r}")
    if kind is str:
        return text if isinstance(raw, str) else str(raw)
    if isinstance(raw, bool):
        raise GanzooError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {raw!r}")
    try:
        value = kind(text) if kind is int else float(text)
    except ValueError:
        raise GanzooError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if kind is float and value != value or value in (float("inf"), float("-inf")):
        raise GanzooError(f"{where} must be a finite number, got {raw!r}")
    return value


@contextlib.contextmanager
def plugin_code(kind: str, name: str, function: str) -> Iterator[None]:
    """Run a plugin's own code (its configure, its networks' constructors, its loader): an exception other than
    GanzooError is a bug in that plugin, reported as one line naming the plugin, the function and where it was
    raised, as the README promises. GANZOO_DEBUG=1 keeps the original traceback."""
    try:
        yield
    except GanzooError:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party code
        if debugging():
            raise
        raise plugin_bug(kind, name, function, exc) from exc


def plugin_bug(kind: str, name: str, function: str, exc: BaseException) -> GanzooError:
    """'a bug in plugin 'p' (dist 1.0): variant 'x' configure raised KeyError: 'lamdba' (at p.py:31)'."""
    entry = entries(kind).get(name)
    plugin = entry.plugin if entry else "?"
    origin = f" ({entry.origin})" if entry else ""
    what = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return GanzooError(f"a bug in plugin '{plugin}'{origin}: {kind} '{name}' {function} raised {what} "
                       f"(at {_where(exc, plugin)})")


def _where(exc: BaseException, plugin: str) -> str:
    """file:line of the innermost frame in the plugin's own source file (else the innermost frame): where the
    plugin author has to look, not where the library it called gave up."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = _source_file(plugin)
    inside = [f for f in frames if own and Path(f.filename).resolve() == own] or frames
    if not inside:
        return "?"
    return f"{Path(inside[-1].filename).name}:{inside[-1].lineno}"


def _source_file(plugin: str) -> Optional[Path]:
    obj = get_plugin_manager().get_plugin(plugin)
    if obj is None:
        return None
    try:
        return Path(inspect.getfile(obj if isinstance(obj, ModuleType) else type(obj))).resolve()
    except (TypeError, OSError):
        return None
