"""Look things up by name across every plugin, with errors that say what exists and where it came from."""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, Mapping, Optional, TypeVar

from .config import normalize_dataset_options
from .errors import GanzooError
from .plugins import ENTRY_POINT_GROUP, RUNTIME_ORIGIN, get_plugin_manager, plugin_info
from .specs import ArchitectureSpec, DatasetSpec, ExtractorSpec, VariantSpec

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
}


def register_kind(kind: str, hook_name: str, spec_class: type) -> None:
    """Let a core module add a kind of plugin contribution (evaluation adds feature extractors)."""
    KINDS[kind] = (hook_name, spec_class)


def entries(kind: str) -> dict[str, Entry[Any]]:
    """Every registered spec of one kind, keyed by name.

    Each hook implementation is called on its own so that every spec is attributed to its plugin; a
    malformed spec or a name claimed twice is an error naming the plugins involved.
    """
    hook_name, spec_class = KINDS[kind]
    pm = get_plugin_manager()
    found: dict[str, Entry[Any]] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        info = plugin_info(impl.plugin_name)
        where = f"plugin '{impl.plugin_name}' ({info.origin})"
        try:
            specs = impl.function()
        except Exception as exc:  # noqa: BLE001 - third-party code
            raise GanzooError(f"{where} raised in {hook_name}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(specs, (list, tuple)):
            raise GanzooError(f"{where}: {hook_name} must return a list of {spec_class.__name__}, "
                              f"got {type(specs).__name__}")
        for spec in specs:
            if not isinstance(spec, spec_class):
                raise GanzooError(f"{where}: {hook_name} returned a malformed spec "
                                  f"({type(spec).__name__}, expected {spec_class.__name__})")
            problem = _spec_problem(spec)
            if problem:
                raise GanzooError(f"{where}: {hook_name} returned a malformed spec: {problem}")
            if spec.name in found:
                other = found[spec.name]
                raise GanzooError(
                    f"{kind} name '{spec.name}' is registered twice: by plugin '{other.plugin}' ({other.origin}) "
                    f"and by plugin '{impl.plugin_name}' ({info.origin}); uninstall one or set "
                    f"GANZOO_BLOCK_PLUGINS={impl.plugin_name}")
            found[spec.name] = Entry(spec, impl.plugin_name, info.origin)
    return dict(sorted(found.items()))


def _spec_problem(spec: Any) -> str:
    name = getattr(spec, "name", None)
    if not isinstance(name, str) or not name or name != name.strip() or " " in name:
        return f"name {name!r} must be a non-empty string without spaces"
    if not isinstance(getattr(spec, "description", None), str):
        return f"'{name}' has no description string"
    for attr in ("discriminator_loss", "generator_loss", "build_generator", "build_discriminator", "load",
                 "configure", "prepare"):
        if getattr(spec, attr, None) is not None and not callable(getattr(spec, attr)):
            return f"'{name}'.{attr} is not callable"
    return ""


def get(kind: str, name: str) -> Entry[Any]:
    """One spec by name; an unknown name lists what is available and which package provides each."""
    available = entries(kind)
    if name not in available:
        listing = ", ".join(f"{n} ({e.origin.split(' ')[0]})" for n, e in available.items()) or "none"
        raise GanzooError(f"unknown {kind} '{name}'; available: {listing}")
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


def variant(name: str) -> VariantSpec:
    return get("variant", name).spec


def architecture(name: str) -> ArchitectureSpec:
    return get("architecture", name).spec


def dataset(name: str, options: Optional[Mapping[str, Any]] = None) -> DatasetSpec:
    """A dataset spec configured with its options (TrainConfig.dataset_options / --dataset-option)."""
    return configure_dataset(get("dataset", name).spec, options)


def configure_dataset(spec: DatasetSpec, options: Optional[Mapping[str, Any]] = None) -> DatasetSpec:
    """The one way options reach a dataset: its `configure` returns the spec those options describe."""
    options = normalize_dataset_options(options)
    if spec.configure is None:
        if options:
            raise GanzooError(f"dataset '{spec.name}' takes no options, got {', '.join(sorted(options))}")
        return spec
    configured = spec.configure(dict(options))
    if not isinstance(configured, DatasetSpec) or configured.name != spec.name:
        raise GanzooError(f"dataset '{spec.name}': configure must return a DatasetSpec named '{spec.name}', "
                          f"got {type(configured).__name__} {getattr(configured, 'name', '')!r}")
    problem = _spec_problem(configured)
    if problem:
        raise GanzooError(f"dataset '{spec.name}': configure returned a malformed spec: {problem}")
    return configured
