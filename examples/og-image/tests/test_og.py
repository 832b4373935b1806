"""The og variation, rendered in memory by the built-in plugins and this one, with no AWS."""

import image_pipeline_og
from pipeline.testing import registry_with, render, sample_photo


def test_og_is_a_1200x630_crop(photo_bytes):
    rendered = render(photo_bytes, registry_with(og=image_pipeline_og))
    assert rendered.image("og").size == (1200, 630)
    assert rendered.manifest["variations"]["og"]["key"] == "uploads/images/og/photo.jpg"


def test_og_takes_its_size_from_the_configuration():
    registry = registry_with(og=image_pipeline_og, config={"plugins": {"og": {"width": 1000, "height": 500}}})
    assert render(sample_photo(3000, 2000), registry).image("og").size == (1000, 500)


def test_og_never_upscales_a_small_photo():
    rendered = render(sample_photo(800, 600), registry_with(og=image_pipeline_og))
    assert rendered.image("og").size == (800, 420)
