"""The plugin manager: every plugin, built-in or third-party, arrives through the ``ganzoo`` entry-point group.

Entry points are loaded one at a time so that a plugin which fails to import is reported by name while the
others still load. ``GANZOO_BLOCK_PLUGINS=name1,name2`` skips plugins by entry-point name (the way out when an
installed plugin is broken or clashes with another).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Optional

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "ganzoo"
BLOCK_ENV = "GANZOO_BLOCK_PLUGINS"
RUNTIME_ORIGIN = "registered at run time"  # a plugin registered by hand, not from an entry point


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from: its entry-point name, module and distribution."""

    name: str
    module: str
    distribution: str
    version: str
    error: Optional[str] = None  # set when the plugin failed to load

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}".strip()


_manager: Optional[pluggy.PluginManager] = None
_infos: dict[str, PluginInfo] = {}
_hook_failures: dict[tuple[str, str], str] = {}  # (plugin, hook) -> why that hook was left out (record_failure)


def _blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    blocked = _blocked_names()
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    unmatched = sorted(blocked - {ep.name for ep in found})
    if unmatched:  # a misspelt name would leave the plugin it meant loaded, silently
        print(f"ganzoo: warning: {BLOCK_ENV} names {', '.join(repr(n) for n in unmatched)}, which "
              f"{'is' if len(unmatched) == 1 else 'are'} no installed plugin; plugins: "
              f"{', '.join(ep.name for ep in found) or 'none'}", file=sys.stderr)
    for ep in found:
        dist = getattr(ep, "dist", None)
        dist_name = dist.name if dist is not None else "?"
        dist_version = dist.version if dist is not None else ""
        if ep.name in blocked:
            pm.set_blocked(ep.name)
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        info = PluginInfo(ep.name, ep.value, dist_name, dist_version)
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any failure in third-party code is reported, not raised
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _infos[ep.name] = PluginInfo(ep.name, ep.value, dist_name, dist_version, error=reason)
            print(f"ganzoo: warning: plugin '{ep.name}' ({info.origin}) failed to load and was skipped: {reason}",
                  file=sys.stderr)
            continue
        _infos[ep.name] = info


def _drop_plugins_with_unknown_hooks(pm: pluggy.PluginManager) -> None:
    """A ``ganzoo_*`` function that matches no hook is almost always a typo: report that plugin, keep the rest."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            pm.unregister(exc.plugin)
            old = _infos.get(name) or PluginInfo(name, name, "?", "")
            reason = f"implements an unknown hook: {exc}".splitlines()[0]
            _infos[name] = PluginInfo(old.name, old.module, old.distribution, old.version, error=reason)
            print(f"ganzoo: warning: plugin '{name}' ({old.origin}) was skipped: {reason}", file=sys.stderr)


def record_failure(name: str, reason: str, hook: str = "") -> None:
    """A loaded plugin whose hook failed (raised, returned something malformed): warn once, and list that hook
    as failed in `ganzoo plugins`; the registry leaves that hook's contributions out and the rest keeps working."""
    if _hook_failures.get((name, hook)) == reason:
        return
    _hook_failures[(name, hook)] = reason
    print(f"ganzoo: warning: plugin '{name}' ({plugin_info(name).origin}): its hook {reason}; what that hook adds "
          "was left out", file=sys.stderr)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        _load_entry_points(pm)
        _drop_plugins_with_unknown_hooks(pm)
        _manager = pm
    return _manager


def plugin_info(name: str) -> PluginInfo:
    """Provenance of a registered plugin (plugins registered by hand, e.g. in a notebook, say so)."""
    return _infos.get(name) or PluginInfo(name, name, RUNTIME_ORIGIN, "")


def failed_plugins() -> list[PluginInfo]:
    """Plugins that failed to load, and loaded ones whose hook failed (while they are still registered)."""
    pm = get_plugin_manager()
    failed = unloaded_plugins()
    for (name, _), reason in _hook_failures.items():
        if pm.get_plugin(name) is not None:
            info = plugin_info(name)
            failed.append(PluginInfo(info.name, info.module, info.distribution, info.version, error=reason))
    return failed


def unloaded_plugins() -> list[PluginInfo]:
    """Plugins that did not load at all (import failed, an unknown hook): nothing of theirs is registered."""
    return [info for info in _infos.values() if info.error]


def failed_hooks() -> dict[tuple[str, str], str]:
    """(plugin, hook) -> why that hook's contributions were left out, for plugins still registered."""
    pm = get_plugin_manager()
    return {key: reason for key, reason in _hook_failures.items() if pm.get_plugin(key[0]) is not None}


def loaded_plugins() -> list[tuple[PluginInfo, list[str]]]:
    """Each loaded plugin with the names of the hooks it implements."""
    pm = get_plugin_manager()
    rows = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))
        rows.append((plugin_info(name), hooks))
    return sorted(rows, key=lambda r: r[0].name)
