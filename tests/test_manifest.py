"""The manifest and its placeholder: what an app reads before and after the variations exist."""

from __future__ import annotations

import blurhash
from PIL import Image

from conftest import render_outputs
from images import encode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import keys
from pipeline.caching import MANIFEST_CACHE, VARIATION_CACHE
from pipeline.outputs import (SourceRef, manifest_outputs, outputs_for_original, parse_manifest, tombstone_outputs,
                              url_version, versioned_url)
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
    assert outputs.objects[-1].key == "uploads/images/manifest/a/b/c.png.json"
    assert outputs.objects[-1].content_type == "application/json"
    assert outputs.objects[-1].cache_control == MANIFEST_CACHE
    manifest = outputs.manifest
    assert manifest["placeholder"]["dominant_color"] == "#0ac85a"
    small = manifest["variations"]["small"]
    assert small["key"] == "uploads/images/small/a/b/c.png" and small["content_type"] == "image/jpeg"
    assert small["url"] == f"/uploads/images/small/a/b/c.png?v={url_version('etag-1', small['spec_hash'])}"
    for obj in outputs.objects[:-1]:
        assert obj.cache_control == VARIATION_CACHE
        assert obj.metadata["source-etag"] == "etag-1" and len(obj.metadata["spec-hash"]) == 16
    assert [o.key for o in outputs.objects[:-1]] == [manifest["variations"][n]["key"] for n in registry.variations]


def test_the_url_version_changes_with_the_source_and_the_spec():
    assert url_version("etag-1", "spec-a") != url_version("etag-2", "spec-a") != url_version("etag-2", "spec-b")
    assert url_version("etag-1", "spec-a") == url_version("etag-1", "spec-a")
    assert versioned_url("uploads/images/large/caf\u00e9 1+2.jpg", "abc") == "/uploads/images/large/caf%C3%A9%201%2B2.jpg?v=abc"


def test_each_manifest_write_is_a_new_object_even_with_the_same_content(registry):
    data = encode(Image.new("RGB", (64, 48), (1, 2, 3)), "PNG")
    first, second = render_outputs(data, registry), render_outputs(data, registry)
    assert first.manifest == second.manifest
    assert first.objects[-1].body != second.objects[-1].body, "a conditional write must see a rewrite as a change"


def test_rendering_only_some_variations_keeps_the_others_entries(registry):
    data = encode(Image.new("RGB", (640, 480), (1, 2, 3)), "PNG")
    full = render_outputs(data, registry)
    only = outputs_for_original("uploads/images/original/photo.jpg", data, "etag-1", registry,
                                only={"small"}, previous=full.manifest)
    assert [o.key for o in only.objects] == ["uploads/images/small/photo.jpg", "uploads/images/manifest/photo.jpg.json"]
    assert only.manifest["variations"] == full.manifest["variations"]
    assert list(only.manifest["variations"]) == list(registry.variations)


def test_a_tombstone_is_tagged_and_lists_nothing():
    tombstone = tombstone_outputs("uploads/images/original/x.jpg", "00AB")
    (obj,) = tombstone.objects
    assert obj.key == "uploads/images/manifest/x.jpg.json" and obj.tagging == "image-pipeline=tombstone"
    assert tombstone.manifest["status"] == "deleted" and tombstone.manifest["variations"] == {}
    assert parse_manifest(obj.body)["source"] == {"key": "uploads/images/original/x.jpg", "sequencer": "00AB"}


def test_keys_follow_the_contract():
    assert keys.source_path("uploads/images/original/2026/trip/IMG 1.HEIC") == "2026/trip/IMG 1.HEIC"
    assert keys.variation_key("large", "2026/trip/IMG 1.HEIC") == "uploads/images/large/2026/trip/IMG 1.HEIC"
    assert keys.variation_key("large", "2026/trip/IMG 1.HEIC", "webp") == "uploads/images/large.webp/2026/trip/IMG 1.HEIC"
    assert keys.manifest_key("a.b/photo") == "uploads/images/manifest/a.b/photo.json"
    assert keys.original_key("a/b.jpg") == "uploads/images/original/a/b.jpg"
    for bad in ("uploads/images/large/photo.jpg", "uploads/images/original/", "uploads/images/original/a/",
                "other/photo.jpg", "uploads/images/originals/x.jpg"):
        assert not keys.is_original(bad)
    with pytest.raises(ValueError, match="not an original"):
        keys.source_path("uploads/images/large/photo.jpg")


paths = st.text(alphabet=st.sampled_from("ab./ -+\u00e9"), min_size=1, max_size=8).filter(lambda p: not p.endswith("/"))
names = st.from_regex(r"[a-z0-9_-]{1,6}", fullmatch=True).filter(lambda n: n not in ("original", "manifest"))


@given(st.lists(paths, min_size=2, max_size=4, unique=True), st.lists(names, min_size=1, max_size=3, unique=True))
def test_keys_are_injective(originals, variations):
    """No two originals, and no two files of one original, share a key."""
    written = [keys.original_key(p) for p in originals]
    for path in originals:
        written.append(keys.manifest_key(path))
        for name in variations:
            written += [keys.variation_key(name, path), keys.variation_key(name, path, "webp"),
                        keys.variation_key(name, path, "avif")]
    assert len(written) == len(set(written))
    assert all(keys.source_path(keys.original_key(p)) == p for p in originals)


@pytest.mark.parametrize("key, trusted", [
    ("uploads/images/large/a/b.jpg", True),
    ("uploads/images/large.webp/a/b.jpg", True),
    ("uploads/images/large/a/other.jpg", False),  # another original's file
    ("uploads/images/original/a/b.jpg", False),  # the original itself
    ("uploads/images/manifest/a/b.jpg", False),
    ("backups/images/large/a/b.jpg", False),  # outside the pipeline's folders, same length of prefix
    ("uploads/images/x/y/a/b.jpg", False),
    ("uploads/images//a/b.jpg", False),
])
def test_a_stored_manifest_is_trusted_only_with_this_originals_variation_files(key, trusted):
    """The keys a manifest lists are deleted when it is replaced: only this original's variation
    files may be, never a key outside uploads/images/ that a tampered manifest names."""
    assert keys.belongs_to(key, "a/b.jpg") is trusted


def test_a_manifest_only_update_keeps_the_entries_kept_and_names_the_new_version(registry):
    previous = {"manifest_version": 2, "status": "ready", "placeholder": {"dominant_color": "#102030"},
                "source": {"key": "uploads/images/original/a.jpg", "etag": "e", "version_id": "v1", "bytes": 10,
                           "sequencer": "0A", "format": "JPEG", "width": 40, "height": 30},
                "variations": {"large": {"key": "uploads/images/large/a.jpg", "spec_hash": "1"},
                               "og": {"key": "uploads/images/og/a.jpg", "spec_hash": "2"}}}
    kept = {"og": previous["variations"]["og"], "large": {"key": "elsewhere", "spec_hash": "3"}}
    outputs = manifest_outputs(SourceRef("uploads/images/original/a.jpg", "e", "v2", "0B"), 10, registry, previous, kept)
    (manifest_file,) = outputs.objects
    assert manifest_file.key == "uploads/images/manifest/a.jpg.json" and outputs.manifest is not None
    manifest = outputs.manifest
    assert manifest["source"] == {**previous["source"], "version_id": "v2", "sequencer": "0B"}
    assert manifest["variations"] == previous["variations"], "og kept; large stays the defined one, not the kept copy"
    assert manifest["placeholder"] == previous["placeholder"]
    without = manifest_outputs(SourceRef("uploads/images/original/a.jpg", "e", "v2", "0B"), 10, registry, previous)
    assert set(without.manifest["variations"]) == {"large"}, "a variation no longer defined leaves unless kept"
