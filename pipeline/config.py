"""The one configuration object: which plugins and variations are on, and their options.

The same JSON shape comes from a file (`--config FILE`, JSON or TOML), from the environment
(`PIPELINE_CONFIG`, as the Lambda functions get it) and from Pulumi stack config:

    {
      "plugins": {"watermark": {"enabled": true, "text": "(c) ACME", "variations": ["large"]},
                  "webp": {"enabled": true}},
      "disabled_variations": ["xsmall"],
      "max_bytes": 52428800,
      "max_memory_mb": 1024
    }

Every key is optional. `max_memory_mb` is the memory one upload's decode may take (by default
derived from the Lambda function's memory, or 1024 off Lambda); `max_pixels` is an extra cap on
the pixel count that older configurations set (memory, not the pixel count, is what refuses a
decompression bomb now).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

# The environment the resize and backfill functions run with. glibc gives each thread that
# allocates at the same time as another a malloc arena of its own and keeps what is freed in it,
# so with two vCPUs the render threads' image buffers would stay resident in two or three arenas
# (peak +10-15 MiB for a 40 MP photo, benchmarks/warm.py section 3). Image buffers are few and
# large: one arena costs no time.
FUNCTION_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}

ENV_VAR = "PIPELINE_CONFIG"
# A gigapixel: five times a 200 MP phone photo and beyond what any camera writes. Memory is the
# real gate (imaging.judging_limits); this only refuses what no camera makes.
DEFAULT_MAX_PIXELS = 1_000_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


class ConfigError(ValueError):
    """The configuration is not usable; the message names the key and the reason."""


@dataclass(frozen=True)
class PipelineConfig:
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    disabled_variations: tuple[str, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_memory_mb: int | None = None  # None: from the Lambda function's memory, or the default off Lambda

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "configuration") -> "PipelineConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: expected an object at the top level")
        unknown = set(data) - {"plugins", "disabled_variations", "max_pixels", "max_bytes", "max_memory_mb"}
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        plugins = data.get("plugins", {})
        if not isinstance(plugins, Mapping) or not all(isinstance(v, Mapping) for v in plugins.values()):
            raise ConfigError(f"{origin}: 'plugins' must map plugin names to objects of options")
        for name, options in plugins.items():
            if "enabled" in options and not isinstance(options["enabled"], bool):
                raise ConfigError(f"{origin}: plugins.{name}.enabled must be true or false")
        disabled = data.get("disabled_variations", [])
        if not isinstance(disabled, (list, tuple)) or not all(isinstance(v, str) for v in disabled):
            raise ConfigError(f"{origin}: 'disabled_variations' must be a list of variation names")
        limits = {}
        for key, default in (("max_pixels", DEFAULT_MAX_PIXELS), ("max_bytes", DEFAULT_MAX_BYTES),
                             ("max_memory_mb", None)):
            value = data.get(key, default)
            if value is None and default is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{origin}: '{key}' must be a positive whole number, not {value!r}")
            limits[key] = value
        return cls(
            plugins={name: dict(options) for name, options in plugins.items()},
            disabled_variations=tuple(disabled),
            **limits,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PipelineConfig":
        path = os.fspath(path)
        toml = path.endswith(".toml")
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read configuration ({error.strerror})") from None
        try:
            if toml:
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as error:
            raise ConfigError(f"{path}: not valid {'TOML' if toml else 'JSON'} ({error})") from None
        return cls.from_dict(data, origin=path)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "PipelineConfig":
        raw = environ.get(ENV_VAR, "").strip()
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise ConfigError(f"environment variable {ENV_VAR}: not valid JSON ({error})") from None
        return cls.from_dict(data, origin=f"environment variable {ENV_VAR}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugins": {name: dict(options) for name, options in self.plugins.items()},
            "disabled_variations": list(self.disabled_variations),
            "max_pixels": self.max_pixels,
            "max_bytes": self.max_bytes,
            # Only when set, so that a configuration without it serialises as it always did.
            **({"max_memory_mb": self.max_memory_mb} if self.max_memory_mb is not None else {}),
        }

    def to_json(self) -> str:
        """The form the Lambda functions receive in `PIPELINE_CONFIG`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def plugin_enabled(self, name: str, default: bool) -> bool:
        return bool(self.plugins.get(name, {}).get("enabled", default))

    def plugin_options(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.plugins.get(name, {}).items() if k != "enabled"}
