"""pipeline.testing, the helpers a plugin's tests use: exactly the given plugins, files at hand."""

from __future__ import annotations

import io
import types

import pytest
from PIL import Image

from pipeline.hookspecs import hookimpl
from pipeline.testing import registry_with, render, sample_photo
from pipeline.types import Variation


def plugin_module(name: str, variation: str) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def register_variations(register, options):
        register(Variation(variation, "fit", options.get("width", 100), 100))

    module.register_variations = register_variations
    return module


def test_registry_with_holds_the_builtins_and_exactly_the_given_plugins(install_plugin):
    install_plugin("installed_plugin", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Variation

        @hookimpl
        def register_variations(register):
            register(Variation("installed", "fit", 100, 100))
    """)
    registry = registry_with(plugin_module("given_plugin", "given"), named=plugin_module("other", "named"),
                             config={"plugins": {"named": {"width": 50}}, "disabled_variations": ["xsmall"]})
    assert list(registry.variations) == ["large", "medium", "small", "square_medium", "square_small", "given", "named"]
    assert registry.owner("variation", "given") == "given_plugin" and registry.owner("variation", "named") == "named"
    assert registry.variations["named"].width == 50


def test_render_gives_each_variation_and_alternate_decoded():
    rendered = render(sample_photo(1200, 900), registry_with(config={"plugins": {"webp": {"enabled": True}}}), "a/b.jpg")
    assert rendered.reason is None
    assert rendered.variations == ["large", "medium", "small", "xsmall", "square_medium", "square_small"]
    assert rendered.image("small").size == (640, 480) and rendered.image("small").format == "JPEG"
    assert rendered.image("small", "webp").format == "WEBP"
    assert rendered.file("small").key == "uploads/images/small/a/b.jpg"
    with pytest.raises(LookupError, match="no file uploads/images/og/a/b.jpg"):
        rendered.image("og")


def test_render_of_a_refused_upload_says_why():
    rendered = render(b"<html></html>", registry_with())
    assert rendered.reason and rendered.manifest["status"] == "failed"
    with pytest.raises(LookupError, match="nothing was rendered"):
        rendered.image("small")


def test_the_photo_bytes_fixture_is_a_3000x2000_jpeg(photo_bytes):
    with Image.open(io.BytesIO(photo_bytes)) as image:
        assert (image.format, image.size) == ("JPEG", (3000, 2000))
