"""The plugin manager: loads built-in and third-party plugins once and collects what they register.

Built-ins are ordinary pluggy plugins listed in DEFAULT_PLUGINS; third-party ones come from the
`image_pipeline.plugins` entry-point group, unless the environment variable
PIPELINE_DISABLE_PLUGIN_AUTOLOAD is set (to anything but an empty string): then only the built-ins
load, as pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD does for pytest plugins. The project's own tests
run so, whatever is installed next to them. Each hook implementation is called with its own
plugin's options and its own `register` callback, so every variation, transform, encoder and
post-processor is known with the plugin that declared it, and a clash names both plugins.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import pluggy

from pipeline import hookspecs
from pipeline.config import PipelineConfig
from pipeline.types import Encoder, PluginError, PluginFailure, PostProcessor, Transform, Variation

# (module, enabled unless the configuration says otherwise)
DEFAULT_PLUGINS: tuple[tuple[str, bool], ...] = (
    ("plugins.transforms", True),
    ("plugins.jpeg", True),
    ("plugins.sizes", True),
    ("plugins.square_crops", True),
    ("plugins.watermark", False),
    ("plugins.webp", False),
    ("plugins.avif", False),
)

AUTOLOAD_OFF_ENV = "PIPELINE_DISABLE_PLUGIN_AUTOLOAD"

HOOKS = ("register_variations", "register_transforms", "register_encoders", "register_postprocessors")


class PluginInfo(NamedTuple):
    name: str
    source: str  # "built-in" or the distribution that provides it
    enabled: bool


@dataclass
class Registry:
    """Everything the enabled plugins registered, each item with the plugin that registered it."""

    config: PipelineConfig
    plugins: list[PluginInfo] = field(default_factory=list)
    variations: dict[str, Variation] = field(default_factory=dict)
    transforms: dict[str, Transform] = field(default_factory=dict)
    encoders: dict[str, Encoder] = field(default_factory=dict)
    postprocessors: dict[str, PostProcessor] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)
    # A variation with its own `quality` option: its main encoder at that quality (see Encoder.with_quality).
    main_encoders: dict[str, Encoder] = field(default_factory=dict)

    def owner(self, kind: str, name: str) -> str:
        return self.owners[(kind, name)]

    def renditions(self, variation: Variation) -> list[Encoder]:
        """The encoders of a variation's files: its own format first, then the `alongside` ones."""
        main = self.encoders[variation.format]
        alongside = [e for e in self.encoders.values() if e.alongside and e is not main]
        return [self.main_encoders.get(variation.name, main)] + alongside

    def postprocessors_for(self, variation: Variation) -> list[PostProcessor]:
        return [p for p in self.postprocessors.values() if self._applies(p, variation)]

    def _applies(self, postprocessor: PostProcessor, variation: Variation) -> bool:
        try:
            return bool(postprocessor.applies_to(variation))
        except Exception as error:  # noqa: BLE001 - a plugin's error becomes one line naming it
            raise PluginFailure(self.owner("post-processor", postprocessor.name), "applies_to",
                                f"{type(error).__name__}: {error}") from error

    def spec(self, variation: Variation) -> dict[str, Any]:
        """Everything that decides a variation's bytes, as plain data (never Python objects)."""
        return {
            "variation": variation.spec(),
            "encoders": [e.spec() for e in self.renditions(variation)],
            "postprocessors": [p.spec() for p in self.postprocessors_for(variation)],
        }

    def spec_hash(self, variation: Variation) -> str:
        canonical = json.dumps(self.spec(variation), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_registry(config: PipelineConfig | None = None) -> Registry:
    """The registry for a configuration, built once per process, configuration and autoload switch."""
    config = config or PipelineConfig()
    return _load_cached(config.to_json(), autoload_enabled())


@functools.lru_cache(maxsize=8)
def _load_cached(config_json: str, autoload: bool) -> Registry:  # `autoload` keys the cache only
    return build_registry(PipelineConfig.from_dict(json.loads(config_json)))


def autoload_enabled() -> bool:
    """Whether installed third-party plugins load (PIPELINE_DISABLE_PLUGIN_AUTOLOAD unset or empty)."""
    return not os.environ.get(AUTOLOAD_OFF_ENV)


def build_registry(config: PipelineConfig, *, third_party: list[tuple[str, Any]] | None = None) -> Registry:
    """The built-in plugins plus the third-party ones: the installed entry points, or exactly the
    `(name, plugin module)` pairs of `third_party` when it is given (`pipeline.testing` does)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry(config=config)
    order: list[str] = []

    for module_name, default in DEFAULT_PLUGINS:
        name = module_name.rsplit(".", 1)[1]
        enabled = config.plugin_enabled(name, default)
        registry.plugins.append(PluginInfo(name, "built-in", enabled))
        if enabled:
            manager.register(importlib.import_module(module_name), name=name)
            order.append(name)

    if third_party is None:
        candidates = [(ep.name, _dist_name(ep), ep.value, ep.load) for ep in third_party_entry_points()]
    else:
        candidates = [(name, f"module {plugin.__name__}", plugin.__name__, lambda plugin=plugin: plugin)
                      for name, plugin in third_party]
    for name, source, value, load in candidates:
        if any(p.name == name for p in registry.plugins):
            raise PluginError(f"plugin name {name!r} of {source} is taken by another plugin")
        enabled = config.plugin_enabled(name, True)
        registry.plugins.append(PluginInfo(name, source, enabled))
        if enabled:
            try:
                plugin = load()
            except Exception as error:
                raise PluginError(f"plugin {name!r} ({value}) failed to import: {error}") from error
            manager.register(plugin, name=name)
            order.append(name)

    known = {p.name for p in registry.plugins}
    unknown = set(config.plugins) - known
    if unknown:
        raise PluginError(
            f"configuration names plugin(s) {', '.join(sorted(unknown))} that are not installed; "
            f"installed: {', '.join(sorted(known))}"
        )
    # A misspelt hook name in a plugin fails here instead of being silently ignored.
    manager.check_pending()

    collectors: dict[str, tuple[str, dict, Callable[[Any], str]]] = {
        "register_transforms": ("transform", registry.transforms, lambda t: t.name),
        "register_encoders": ("encoder", registry.encoders, lambda e: e.format),
        "register_postprocessors": ("post-processor", registry.postprocessors, lambda p: p.name),
        "register_variations": ("variation", registry.variations, lambda v: v.name),
    }
    expected = {"transform": Transform, "encoder": Encoder, "post-processor": PostProcessor, "variation": Variation}
    for hook_name, (kind, items, key_of) in collectors.items():
        impls = sorted(getattr(manager.hook, hook_name).get_hookimpls(), key=lambda i: order.index(i.plugin_name))
        for impl in impls:
            plugin_name = impl.plugin_name

            def register(item, *, _kind=kind, _items=items, _key_of=key_of, _plugin=plugin_name):
                if not isinstance(item, expected[_kind]):
                    raise PluginError(f"plugin {_plugin!r} registered {item!r}, expected a {expected[_kind].__name__}")
                key = _key_of(item)
                if key in _items:
                    raise PluginError(
                        f"{_kind} {key!r} is registered by both plugin {registry.owner(_kind, key)!r} "
                        f"and plugin {_plugin!r}; names are S3 prefixes and must be unique"
                    )
                _items[key] = item
                registry.owners[(_kind, key)] = _plugin

            arguments = {"register": register, "options": config.plugin_options(plugin_name)}
            try:
                impl.function(*(arguments[a] for a in impl.argnames))
            except PluginError:
                raise
            except Exception as error:
                raise PluginError(f"plugin {plugin_name!r} failed in {hook_name}: {error}") from error

    _drop_disabled_variations(registry)
    _check_references(registry)
    return registry


def _drop_disabled_variations(registry: Registry) -> None:
    for name in registry.config.disabled_variations:
        if name not in registry.variations:
            raise PluginError(
                f"disabled_variations names {name!r}, which no enabled plugin registers; "
                f"known: {', '.join(registry.variations)}"
            )
        del registry.variations[name]


def _check_references(registry: Registry) -> None:
    for variation in registry.variations.values():
        plugin = registry.owner("variation", variation.name)
        if variation.transform not in registry.transforms:
            raise PluginError(
                f"variation {variation.name!r} of plugin {plugin!r} uses transform {variation.transform!r}, "
                f"which no enabled plugin registers (known: {', '.join(registry.transforms) or 'none'})"
            )
        if variation.format not in registry.encoders:
            raise PluginError(
                f"variation {variation.name!r} of plugin {plugin!r} uses format {variation.format!r}, "
                f"which no enabled plugin registers (known: {', '.join(registry.encoders) or 'none'})"
            )
        quality = variation.options.get("quality")
        if quality is not None:
            encoder = registry.encoders[variation.format]
            if encoder.with_quality is None:
                raise PluginError(f"variation {variation.name!r} of plugin {plugin!r} asks for quality {quality}, "
                                  f"but encoder {encoder.format!r} has no with_quality")
            try:
                registry.main_encoders[variation.name] = encoder.with_quality(quality)
            except PluginError as error:
                raise PluginError(f"variation {variation.name!r}: {error}") from None


def third_party_entry_points() -> list:
    """Entry points of the `image_pipeline.plugins` group, sorted by name; none when
    PIPELINE_DISABLE_PLUGIN_AUTOLOAD is set.

    importlib.metadata reads the metadata of every installed distribution (about 40 ms in a
    development environment, paid by every `process` run), so a quick scan of the
    entry_points.txt files first tells whether any distribution declares the group at all.
    """
    if not autoload_enabled() or not _any_distribution_declares(hookspecs.ENTRY_POINT_GROUP):
        return []
    from importlib.metadata import entry_points

    unique = {ep.name: ep for ep in entry_points(group=hookspecs.ENTRY_POINT_GROUP)}
    return [unique[name] for name in sorted(unique)]


def _any_distribution_declares(group: str) -> bool:
    needle = f"[{group}]"
    for folder in sys.path:
        try:
            entries = os.scandir(folder or ".")
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.endswith((".dist-info", ".egg-info")):
                    try:
                        with open(os.path.join(entry.path, "entry_points.txt"), encoding="utf-8") as file:
                            if needle in file.read():
                                return True
                    except OSError:
                        continue
    return False


def _dist_name(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else entry_point.value
