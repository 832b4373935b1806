"""The manifest and its placeholder: what an app reads before and after the variations exist."""

from __future__ import annotations

import blurhash
from PIL import Image

from conftest import render_outputs
from images import encode
from pipeline import keys
from pipeline.placeholder import placeholder


def test_placeholder_decodes_to_the_image_colours():
    image = Image.new("RGB", (640, 400), (200, 40, 40))
    image.paste((40, 40, 200), (320, 0, 640, 400))  # left red, right blue
    result = placeholder(image)
    assert result["dominant_color"] in ("#c82828", "#2828c8")
    assert len(result["blurhash"]) == 4 + 2 * 4 * 3
    decoded = blurhash.decode(result["blurhash"], 8, 4)
    left, right = decoded[2][0], decoded[2][7]
    assert left[0] > left[2] + 60 and right[2] > right[0] + 60, (left, right)


def test_manifest_is_written_last_with_everything_an_app_needs(registry):
    outputs = render_outputs(encode(Image.new("RGB", (1000, 500), (10, 200, 90)), "PNG"), registry, "a/b/c.png")
    assert outputs.objects[-1].key == "uploads/images/manifest/a/b/c.json"
    assert outputs.objects[-1].content_type == "application/json"
    manifest = outputs.manifest
    assert manifest["placeholder"]["dominant_color"] == "#0ac85a"
    assert manifest["variations"]["small"]["key"] == "uploads/images/small/a/b/c.jpg"
    for obj in outputs.objects[:-1]:
        assert obj.cache_control == "public, max-age=31536000, immutable"
        assert obj.metadata["source-etag"] == "etag-1" and len(obj.metadata["spec-hash"]) == 16


def test_keys_follow_the_contract():
    assert keys.source_path("uploads/images/original/2026/trip/IMG 1.HEIC") == "2026/trip/IMG 1.HEIC"
    assert keys.variation_key("large", "2026/trip/IMG 1.HEIC", "jpg") == "uploads/images/large/2026/trip/IMG 1.jpg"
    assert keys.manifest_key("a.b/photo") == "uploads/images/manifest/a.b/photo.json"
    assert keys.variation_key("small", "archive.tar.gz", "jpg") == "uploads/images/small/archive.tar.jpg"
    for bad in ("uploads/images/large/photo.jpg", "uploads/images/original/", "other/photo.jpg"):
        assert not keys.is_original(bad)
