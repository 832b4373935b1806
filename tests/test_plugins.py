"""The plugin registry: hooks, discovery through entry points, name clashes, spec hashes, config."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, autoloading_env, open_output, render_outputs, run_cli
from images import encode
from pipeline import hookspecs, samples
from pipeline.config import ConfigError, PipelineConfig
from pipeline.registry import build_registry
from pipeline.types import PluginError, Variation

HOOK_NAMES = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


def test_default_registry_has_the_six_default_variations(registry):
    assert list(registry.variations) == ["large", "medium", "small", "xsmall", "square_medium", "square_small"]
    assert {n: (v.transform, v.width) for n, v in registry.variations.items()} == {
        "large": ("fit", 2048), "medium": ("fit", 1280), "small": ("fit", 640), "xsmall": ("fit", 320),
        "square_medium": ("cover", 600), "square_small": ("cover", 150)}
    assert registry.owner("variation", "large") == "sizes"
    assert registry.owner("variation", "square_small") == "square_crops"


def test_register_variations_duplicate_name_fails_naming_both_plugins(install_plugin):
    install_plugin("my_sizes", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Variation

        @hookimpl
        def register_variations(register):
            register(Variation("large", "fit", 4096, 4096))
    """)
    with pytest.raises(PluginError) as error:
        build_registry(PipelineConfig())
    assert "'sizes'" in str(error.value) and "'my_sizes'" in str(error.value)
    assert "variation 'large'" in str(error.value)


def test_register_variations_from_a_third_party_plugin_are_rendered(install_plugin, tmp_path):
    install_plugin("banner_plugin", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Variation

        @hookimpl
        def register_variations(register, options):
            register(Variation("banner", "cover", options.get("width", 1500), 500))
    """, entry_name="banner")
    registry = build_registry(PipelineConfig.from_dict({"plugins": {"banner": {"width": 1000}}}))
    assert registry.owner("variation", "banner") == "banner"
    outputs = render_outputs(samples.jpeg_bytes(samples.photo(3000, 2000, grain=0)), registry)
    assert open_output(outputs, "uploads/images/banner/photo.jpg").size == (1000, 500)
    disabled = build_registry(PipelineConfig.from_dict({"plugins": {"banner": {"enabled": False}}}))
    assert "banner" not in disabled.variations


@pytest.mark.parametrize("name", ["Large", "has space", "original", "manifest", "a/b", ""])
def test_variation_names_must_be_safe_path_segments(name):
    with pytest.raises(PluginError):
        Variation(name, "fit", 100, 100)


def test_register_transforms_adds_a_geometry_rule(install_plugin):
    install_plugin("top_strip", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Geometry, Transform, Variation

        def top(source_size, box):
            width, height = source_size
            crop_height = width * box[1] / box[0]
            return Geometry(size=box, region=(0, 0, width, crop_height))

        @hookimpl
        def register_transforms(register):
            register(Transform("top", top))

        @hookimpl
        def register_variations(register):
            register(Variation("header", "top", 400, 100))
    """)
    registry = build_registry(PipelineConfig())
    assert registry.owner("transform", "top") == "top_strip"
    image = Image.new("RGB", (800, 800), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 800, 200))  # the top quarter is red
    header = open_output(render_outputs(encode(image, "PNG"), registry, "p.png"), "uploads/images/header/p.png")
    assert header.size == (400, 100)
    assert header.getpixel((200, 50))[0] > 200 and header.getpixel((200, 50))[2] < 60


def test_a_variation_with_an_unknown_transform_names_it(install_plugin):
    install_plugin("spin", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Variation

        @hookimpl
        def register_variations(register):
            register(Variation("spun", "spin", 100, 100))
    """)
    with pytest.raises(PluginError, match="variation 'spun' of plugin 'spin' uses transform 'spin'"):
        build_registry(PipelineConfig())


def test_register_encoders_alongside_and_builtin_webp_avif():
    registry = build_registry(PipelineConfig.from_dict({"plugins": {"webp": {"enabled": True},
                                                                    "avif": {"enabled": True}}}))
    outputs = render_outputs(samples.jpeg_bytes(samples.photo(1000, 800, grain=0)), registry)
    entry = outputs.manifest["variations"]["medium"]
    assert entry["key"] == "uploads/images/medium/photo.jpg" and entry["content_type"] == "image/jpeg"
    assert [(a["key"], a["content_type"]) for a in entry["alternates"]] == [
        ("uploads/images/medium.webp/photo.jpg", "image/webp"), ("uploads/images/medium.avif/photo.jpg", "image/avif")]
    assert open_output(outputs, "uploads/images/medium.webp/photo.jpg").format == "WEBP"
    assert open_output(outputs, "uploads/images/medium.avif/photo.jpg").format == "AVIF"
    assert len([o for o in outputs.objects if o.content_type.startswith("image/")]) == 18


def test_register_encoders_from_a_plugin_declares_format_extension_and_type(install_plugin):
    install_plugin("png_too", """
        import io
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Encoder

        def encode(image):
            out = io.BytesIO()
            image.save(out, "PNG")
            return out.getvalue()

        @hookimpl
        def register_encoders(register):
            register(Encoder("png", "png", "image/png", encode, alongside=True))
    """)
    registry = build_registry(PipelineConfig())
    outputs = render_outputs(samples.transparent_png(300, 200), registry, "logo.png")
    png = next(o for o in outputs.objects if o.key == "uploads/images/small.png/logo.png")
    assert png.content_type == "image/png"
    assert open_output(outputs, png.key).mode == "RGBA"


def test_register_postprocessors_watermark_marks_only_the_named_variations():
    config = {"plugins": {"watermark": {"enabled": True, "text": "ACME", "position": "center",
                                        "opacity": 1.0, "scale": 0.2, "variations": ["large"]}}}
    marked = build_registry(PipelineConfig.from_dict(config))
    plain = build_registry(PipelineConfig())
    data = encode(Image.new("RGB", (3000, 2000), (40, 90, 160)), "PNG")
    marked_out = render_outputs(data, marked, "p.png")
    plain_out = render_outputs(data, plain, "p.png")

    def difference(name):
        a = open_output(marked_out, f"uploads/images/{name}/p.png")
        b = open_output(plain_out, f"uploads/images/{name}/p.png")
        box = (a.width // 3, a.height // 3, 2 * a.width // 3, 2 * a.height // 3)
        return max(abs(x - y) for x, y in zip(a.crop(box).tobytes(), b.crop(box).tobytes()))

    assert difference("large") > 100, "the watermark should show on large"
    assert difference("medium") <= 3, "medium is not named, so it stays clean"
    assert marked.spec_hash(marked.variations["large"]) != plain.spec_hash(plain.variations["large"])
    assert marked.spec_hash(marked.variations["medium"]) == plain.spec_hash(plain.variations["medium"])


def test_register_postprocessors_from_a_plugin(install_plugin):
    install_plugin("greyscale", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import PostProcessor

        @hookimpl
        def register_postprocessors(register, options):
            register(PostProcessor("grey", lambda image: image.convert("L"),
                                   lambda variation: variation.name in options.get("only", [])))
    """)
    registry = build_registry(PipelineConfig.from_dict({"plugins": {"greyscale": {"only": ["small"]}}}))
    outputs = render_outputs(encode(Image.new("RGB", (800, 600), (200, 30, 30)), "PNG"), registry, "p.png")
    assert open_output(outputs, "uploads/images/small/p.png").mode == "L"
    assert open_output(outputs, "uploads/images/medium/p.png").mode == "RGB"


def test_watermark_options_are_checked():
    with pytest.raises(PluginError, match="position"):
        build_registry(PipelineConfig.from_dict({"plugins": {"watermark": {"enabled": True, "text": "x",
                                                                          "position": "middle"}}}))
    with pytest.raises(PluginError, match="exactly one of 'text' or 'logo'"):
        build_registry(PipelineConfig.from_dict({"plugins": {"watermark": {"enabled": True}}}))


def test_watermark_with_a_logo(tmp_path):
    logo = tmp_path / "logo.png"
    logo.write_bytes(samples.transparent_png(200, 100))
    registry = build_registry(PipelineConfig.from_dict({"plugins": {"watermark": {
        "enabled": True, "logo": str(logo), "opacity": 1.0, "scale": 0.3, "position": "center"}}}))
    outputs = render_outputs(encode(Image.new("RGB", (2000, 1000), (250, 250, 250)), "PNG"), registry, "p.png")
    centre = open_output(outputs, "uploads/images/large/p.png").getpixel((1000, 500))
    assert centre[2] > 180 and centre[0] < 80, centre  # the logo's blue disc
    assert "logo_sha256" in json.dumps(registry.spec(registry.variations["large"]))


def test_spec_hashes_are_stable_across_runs_and_follow_parameters(tmp_path):
    first, second = run_cli("plugins"), run_cli("plugins")
    assert first.returncode == 0, first.stderr
    hashes = dict(re.findall(r"^(\w+)\s+\w+\s+\w+ \d+x\d+\s+\S+\s+([0-9a-f]{16})$", first.stdout, re.M))
    assert set(hashes) == {"large", "medium", "small", "xsmall", "square_medium", "square_small"}
    assert first.stdout == second.stdout
    registry = build_registry(PipelineConfig())
    assert {n: registry.spec_hash(v) for n, v in registry.variations.items()} == hashes

    config = tmp_path / "quality.json"
    config.write_text(json.dumps({"plugins": {"jpeg": {"quality": 90}}}))
    changed = run_cli("plugins", "--config", str(config))
    changed_hashes = dict(re.findall(r"^(\w+)\s+\w+\s+\w+ \d+x\d+\s+\S+\s+([0-9a-f]{16})$", changed.stdout, re.M))
    assert all(changed_hashes[n] != hashes[n] for n in hashes)


def test_spec_hash_is_of_parameters_not_objects():
    a, b = build_registry(PipelineConfig()), build_registry(PipelineConfig())
    assert a.variations["large"] is not b.variations["large"]
    assert a.spec_hash(a.variations["large"]) == b.spec_hash(b.variations["large"])
    assert a.spec_hash(a.variations["large"]) != a.spec_hash(a.variations["medium"])


def test_configuration_from_file_env_and_dict_agree(tmp_path):
    data = {"plugins": {"webp": {"enabled": True, "quality": 70}}, "disabled_variations": ["xsmall"],
            "max_pixels": 50_000_000}
    (tmp_path / "c.json").write_text(json.dumps(data))
    (tmp_path / "c.toml").write_text('disabled_variations = ["xsmall"]\nmax_pixels = 50000000\n'
                                     '[plugins.webp]\nenabled = true\nquality = 70\n')
    from_dict = PipelineConfig.from_dict(data)
    assert PipelineConfig.from_file(tmp_path / "c.json") == from_dict
    assert PipelineConfig.from_file(tmp_path / "c.toml") == from_dict
    assert PipelineConfig.from_env({"PIPELINE_CONFIG": from_dict.to_json()}) == from_dict
    assert PipelineConfig.from_env({}) == PipelineConfig()
    registry = build_registry(from_dict)
    assert "xsmall" not in registry.variations and "webp" in registry.encoders


@pytest.mark.parametrize("data, message", [
    ({"plugin": {}}, "unknown key"),
    ({"max_pixels": -1}, "max_pixels"),
    ({"plugins": {"webp": {"enabled": "yes"}}}, "plugins.webp.enabled"),
    ({"disabled_variations": "xsmall"}, "disabled_variations"),
])
def test_bad_configuration_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.from_dict(data)


def test_configuration_naming_a_missing_plugin_or_variation_fails():
    with pytest.raises(PluginError, match="watermrk"):
        build_registry(PipelineConfig.from_dict({"plugins": {"watermrk": {"enabled": True}}}))
    with pytest.raises(PluginError, match="disabled_variations names 'xlarge'"):
        build_registry(PipelineConfig.from_dict({"disabled_variations": ["xlarge"]}))


def test_a_misspelt_hook_fails_loudly(install_plugin):
    install_plugin("typo", """
        from pipeline.hookspecs import hookimpl

        @hookimpl
        def register_variation(register):
            pass
    """)
    with pytest.raises(Exception, match="register_variation"):
        build_registry(PipelineConfig())


def test_example_plugin_is_discovered_from_its_entry_point(tmp_path):
    """The path a plugin author takes: pip install the package, the pipeline finds it."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(ROOT / "examples" / "og-image")],
                   check=True, capture_output=True, timeout=300)
    assert list(target.glob("image_pipeline_og-1.0.0.dist-info/entry_points.txt"))
    env = autoloading_env(PYTHONPATH=str(target))
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^og\s+image-pipeline-og 1\.0\.0\s+yes$", listed.stdout, re.M)
    assert re.search(r"^og\s+og\s+cover 1200x630", listed.stdout, re.M)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(samples.jpeg_bytes(samples.photo(2400, 1600, grain=0)))
    processed = run_cli("process", str(photo), "--out", str(tmp_path / "out"), env=env)
    assert processed.returncode == 0, processed.stderr
    with Image.open(tmp_path / "out/uploads/images/og/photo.jpg") as og:
        assert og.size == (1200, 630)


def test_plugin_hooks_are_documented():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^##+ `?(\w+)", guide, re.M))
    missing = [hook for hook in HOOK_NAMES if hook not in headings]
    assert not missing, f"hooks without a heading in docs/plugins.md: {missing}"


def test_plugin_hooks_have_tests():
    """Each hook is exercised by a test whose name contains the hook's name."""
    names = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        names |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    missing = [hook for hook in HOOK_NAMES if not any(hook in name for name in names if name.startswith("test_"))]
    assert HOOK_NAMES and not missing, f"hooks no test names: {missing}"


@pytest.mark.parametrize("body, complaint", [
    ("return None", "returned NoneType, not an image"),
    ("return image.resize((image.width - 1, image.height))", "returned a 639x480 image for a 640x480 one"),
    ("return image.convert('P')", "returned mode 'P'"),
    ("raise RuntimeError('font missing')", "RuntimeError: font missing"),
])
def test_a_postprocessor_that_breaks_its_contract_names_the_plugin_and_hook(install_plugin, body, complaint):
    from pipeline.imaging import PluginFailure

    install_plugin("broken_marks", f"""
        from pipeline.hookspecs import hookimpl
        from pipeline.types import PostProcessor

        def apply(image):
            {body}

        @hookimpl
        def register_postprocessors(register):
            register(PostProcessor("marks", apply, lambda variation: variation.name == "small"))
    """)
    registry = build_registry(PipelineConfig())
    with pytest.raises(PluginFailure, match="plugin 'broken_marks' failed in apply: ") as failure:
        render_outputs(encode(Image.new("RGB", (800, 600), (9, 9, 9)), "PNG"), registry)
    assert complaint in str(failure.value)


def test_an_encoder_that_returns_nothing_names_the_plugin():
    from pipeline.imaging import PluginFailure
    from pipeline.types import Encoder

    registry = build_registry(PipelineConfig())
    registry.encoders["jpeg"] = Encoder("jpeg", "jpg", "image/jpeg", lambda image: b"")
    with pytest.raises(PluginFailure, match="plugin 'jpeg' failed in encode: encoder 'jpeg' returned an empty file"):
        render_outputs(encode(Image.new("RGB", (80, 60)), "PNG"), registry)


BAD_PLANS = {
    "not a Geometry": ("return (box, (0, 0) + tuple(source_size))", "planned a tuple, not a Geometry"),
    "an empty region": ("return Geometry(size=box, region=(0, 0, 0, 0))", "the region (0, 0, 0, 0)"),
    "a region outside the image": ("return Geometry(size=box, region=(0, 0, source_size[0] * 2, source_size[1]))",
                                   "of a 800x600 image"),
    "a zero size": ("return Geometry(size=(0, 0), region=(0, 0) + tuple(source_size))", "the size (0, 0)"),
    "an upscale": ("return Geometry(size=(1600, 1200), region=(0, 0) + tuple(source_size))", "(an upscale)"),
}


@pytest.mark.parametrize("what", BAD_PLANS)
def test_a_transform_that_breaks_its_contract_names_the_plugin_and_hook(install_plugin, what):
    from pipeline.types import PluginFailure

    body, complaint = BAD_PLANS[what]
    install_plugin("bad_transform", f"""
        from pipeline.hookspecs import hookimpl
        from pipeline.types import Geometry, Transform, Variation

        def plan(source_size, box):
            {body}

        @hookimpl
        def register_transforms(register):
            register(Transform("bad", plan))

        @hookimpl
        def register_variations(register):
            register(Variation("banner", "bad", 400, 100))
    """)
    registry = build_registry(PipelineConfig())
    with pytest.raises(PluginFailure, match="plugin 'bad_transform' failed in plan: transform 'bad' planned ") as failure:
        render_outputs(encode(Image.new("RGB", (800, 600), (9, 9, 9)), "PNG"), registry)
    assert complaint in str(failure.value)


def test_an_applies_to_that_raises_names_the_plugin_and_hook(install_plugin):
    from pipeline.types import PluginFailure

    install_plugin("bad_filter", """
        from pipeline.hookspecs import hookimpl
        from pipeline.types import PostProcessor

        @hookimpl
        def register_postprocessors(register):
            register(PostProcessor("marks", lambda image: image, lambda variation: variation.options["x"]))
    """)
    registry = build_registry(PipelineConfig())
    with pytest.raises(PluginFailure, match="plugin 'bad_filter' failed in applies_to: KeyError"):
        render_outputs(encode(Image.new("RGB", (80, 60)), "PNG"), registry)
