"""What a plugin's tests need: sample photos, a registry of exactly the plugins under test, a render.

    import image_pipeline_og
    from pipeline.testing import registry_with, render, sample_photo

    def test_og_is_a_1200x630_crop():
        rendered = render(sample_photo(3000, 2000), registry_with(image_pipeline_og))
        assert rendered.image("og").size == (1200, 630)

Everything happens in memory: no AWS, no files. `registry_with` builds the built-in plugins plus
exactly the modules it is given, never whatever else is installed, so a test's result does not
depend on the environment it runs in.

Installing image-pipeline also registers this module as a pytest plugin (entry point
`image_pipeline` in the `pytest11` group), so its fixture `photo_bytes` needs no import and no
conftest.py in a plugin's project. It defines no hooks and no autouse fixtures, and imports
neither Pillow nor the rest of the pipeline until a helper is called, so being loaded into every
pytest run of the environment changes none of them (`-p no:image_pipeline` leaves it out). Where
plugin autoloading is off (PYTEST_DISABLE_PLUGIN_AUTOLOAD), add
`pytest_plugins = ["pipeline.testing"]` to the top-level conftest.py or run
`pytest -p pipeline.testing`.
"""

from __future__ import annotations

import functools
import hashlib
import io
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping

import pytest

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.config import PipelineConfig
    from pipeline.outputs import OutputObject, Outputs
    from pipeline.registry import Registry


@functools.lru_cache(maxsize=16)
def sample_photo(width: int = 3000, height: int = 2000, *, seed: int = 1) -> bytes:
    """A photo-like JPEG (gradients, edges, text, grain) of that size, from `pipeline.samples`."""
    from pipeline import samples

    return samples.jpeg_bytes(samples.photo(width, height, seed=seed))


def registry_with(*plugins: ModuleType, config: PipelineConfig | Mapping[str, Any] | None = None,
                  **named_plugins: ModuleType) -> Registry:
    """The built-in plugins plus exactly the given plugin modules, never the installed ones.

    A module given positionally is named after its module (`image_pipeline_og`); give it by
    keyword to name it as its entry point does (`registry_with(og=image_pipeline_og)`), which is
    the name its options take in `config` (a `PipelineConfig` or the same shape as a dict).
    """
    from pipeline.config import PipelineConfig
    from pipeline.registry import build_registry

    if config is None:
        config = PipelineConfig()
    elif not isinstance(config, PipelineConfig):
        config = PipelineConfig.from_dict(config)
    given = [(module.__name__, module) for module in plugins] + list(named_plugins.items())
    return build_registry(config, third_party=given)


class Rendered:
    """What the resize path would write for one original, with each file at hand by variation name."""

    def __init__(self, outputs: Outputs) -> None:
        self.outputs = outputs

    @property
    def manifest(self) -> dict[str, Any]:
        return self.outputs.manifest

    @property
    def reason(self) -> str | None:
        """Why the pipeline refused the source, or None when it rendered it."""
        return self.outputs.reason

    @property
    def variations(self) -> list[str]:
        """The names of the rendered variations, in the registry's order."""
        return list(self.manifest["variations"])

    def file(self, variation: str, alternate: str | None = None) -> OutputObject:
        """The object written for a variation, or with `alternate` ("webp", "avif") the one beside it."""
        from pipeline import keys

        if self.outputs.failed:
            raise LookupError(f"nothing was rendered: {self.reason}")
        key = keys.variation_key(variation, keys.source_path(self.manifest["source"]["key"]), alternate)
        for obj in self.outputs.objects:
            if obj.key == key:
                return obj
        raise LookupError(f"no file {key}; the variations are {', '.join(self.variations)}")

    def image(self, variation: str, alternate: str | None = None) -> Image.Image:
        """A variation's file, decoded."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.file(variation, alternate).body))
        image.load()
        return image


def render(data: bytes, registry: Registry, path: str = "photo.jpg") -> Rendered:
    """Everything the resize path writes for `data` uploaded at `uploads/images/original/<path>`."""
    from pipeline import keys
    from pipeline.outputs import outputs_for_original

    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()  # S3's ETag of a single-part upload
    return Rendered(outputs_for_original(keys.original_key(path), data, etag, registry))


@pytest.fixture
def photo_bytes() -> bytes:
    """A 3000x2000 photo-like JPEG: big enough for every built-in variation."""
    return sample_photo(3000, 2000)
