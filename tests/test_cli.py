"""`python -m pipeline process` and `plugins`, run as a user runs them."""

from __future__ import annotations

import json
import os
import sys

from PIL import Image

from conftest import autoloading_env, run_cli
from images import png_header_only
from pipeline import samples

DEFAULTS = ["large", "medium", "small", "xsmall", "square_medium", "square_small"]


def written(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_process_writes_exactly_the_resize_objects_at_their_keys(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(samples.jpeg_bytes(samples.photo(3000, 2000, grain=0), exif=samples.gps_exif(6)))
    result = run_cli("process", str(photo), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = tmp_path / "out"
    assert written(out) == sorted([f"uploads/images/{n}/photo.jpg" for n in DEFAULTS]
                                  + ["uploads/images/manifest/photo.jpg.json"])
    manifest = json.loads((out / "uploads/images/manifest/photo.jpg.json").read_text())
    assert manifest["status"] == "ready"
    assert manifest["source"] == {"key": "uploads/images/original/photo.jpg", "etag": manifest["source"]["etag"],
                                  "version_id": None, "sequencer": None, "bytes": photo.stat().st_size,
                                  "format": "JPEG", "width": 2000, "height": 3000}
    assert len(manifest["source"]["etag"]) == 32
    for name in DEFAULTS:
        entry = manifest["variations"][name]
        with Image.open(out / entry["key"]) as image:
            assert image.size == (entry["width"], entry["height"])
        assert entry["bytes"] == (out / entry["key"]).stat().st_size
        assert entry["content_type"] == "image/jpeg" and len(entry["spec_hash"]) == 16
    assert (manifest["variations"]["large"]["width"], manifest["variations"]["large"]["height"]) == (1365, 2048)
    for name in DEFAULTS:  # the table names every variation and its key
        assert f"uploads/images/{name}/photo.jpg" in result.stdout


def test_rejected_files_get_one_line_each_and_the_others_still_run(tmp_path):
    files = {
        "empty.jpg": b"",
        "page.png": b"<!DOCTYPE html>\n<html><body>404</body></html>\n",
        "bomb.png": png_header_only(30000, 30000),
        "cut.jpg": samples.jpeg_bytes(samples.photo(1200, 900))[:20000],
        "good.jpg": samples.jpeg_bytes(samples.photo(1200, 900, grain=0)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / name) for name in files] + [str(tmp_path / "missing.jpg")]
    result = run_cli("process", *paths, "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 5, result.stderr
    reasons = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
    assert reasons[str(tmp_path / "empty.jpg")] == "empty file (0 bytes)"
    assert "looks like HTML" in reasons[str(tmp_path / "page.png")]
    assert "30000x30000" in reasons[str(tmp_path / "bomb.png")]
    assert "truncated JPEG data" in reasons[str(tmp_path / "cut.jpg")]
    assert "cannot read" in reasons[str(tmp_path / "missing.jpg")]
    out = tmp_path / "out" / "uploads/images"
    assert (out / "large/good.jpg").exists()
    for name in ("empty.jpg", "page.png", "bomb.png", "cut.jpg"):  # an app waiting for these can stop waiting
        manifest = json.loads((out / f"manifest/{name}.json").read_text())
        assert manifest["status"] == "failed" and manifest["reason"] and manifest["variations"] == {}
        assert not (out / f"large/{name}").exists()


def test_files_of_the_same_name_in_different_folders_are_kept_apart(tmp_path):
    for folder, size in (("a", (800, 600)), ("b", (300, 600))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo.jpg").write_bytes(samples.jpeg_bytes(samples.photo(*size, grain=0)))
    result = run_cli("process", str(tmp_path / "a/photo.jpg"), str(tmp_path / "b/photo.jpg"),
                     "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out/uploads/images"
    with Image.open(out / "large/a/photo.jpg") as a, Image.open(out / "large/b/photo.jpg") as b:
        assert (a.size, b.size) == ((800, 600), (300, 600))
    assert json.loads((out / "manifest/b/photo.jpg.json").read_text())["source"]["key"] == "uploads/images/original/b/photo.jpg"


def test_a_plugin_that_raises_fails_its_file_with_one_line_and_the_others_run(tmp_path, install_plugin):
    install_plugin("flaky_marks", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import PostProcessor

        def apply(image):
            if image.getpixel((0, 0)) == (255, 0, 0):
                raise ValueError("cannot mark red photos")
            return image.resize((image.width // 2, image.height)) if image.getpixel((0, 0)) == (0, 255, 0) else image

        @hookimpl
        def register_postprocessors(register):
            register(PostProcessor("marks", apply, lambda variation: variation.name == "small"))
    """)
    for name, colour in (("red.png", (255, 0, 0)), ("green.png", (0, 255, 0)), ("blue.png", (0, 0, 255))):
        Image.new("RGB", (800, 600), colour).save(tmp_path / name)
    env = autoloading_env(PYTHONPATH=os.pathsep.join(sys.path))
    result = run_cli("process", *(str(tmp_path / n) for n in ("red.png", "green.png", "blue.png")),
                     "--out", str(tmp_path / "out"), "--quiet", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'red.png'}: plugin 'flaky_marks' failed in apply: ValueError: cannot mark red photos",
        f"{tmp_path / 'green.png'}: plugin 'flaky_marks' failed in apply: post-processor 'marks' returned a "
        "320x480 image for a 640x480 one",
    ]
    out = tmp_path / "out/uploads/images"
    assert (out / "manifest/blue.png.json").exists() and not (out / "manifest/red.png.json").exists()
    assert not (out / "large/red.png").exists(), "nothing is written for a file a plugin failed"


def test_a_bad_config_file_is_one_clear_line(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text("{not json")
    result = run_cli("plugins", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {config}: not valid JSON") and "Traceback" not in result.stderr


def test_plugins_lists_plugins_variations_and_hashes():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    for plugin, enabled in (("sizes", "yes"), ("square_crops", "yes"), ("watermark", "no"), ("webp", "no"),
                            ("avif", "no")):
        assert any(line.split()[0] == plugin and line.split()[-1] == enabled
                   for line in result.stdout.splitlines() if line.strip()), plugin
    for name in DEFAULTS:
        assert any(line.startswith(name + " ") for line in result.stdout.splitlines()), name
