from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry():
    from pipeline.registry import load_registry

    return load_registry()


def render_outputs(data: bytes, registry, path: str = "photo.jpg"):
    from pipeline.outputs import outputs_for_original

    return outputs_for_original(f"uploads/images/original/{path}", data, "etag-1", registry)


def open_output(outputs, key: str) -> Image.Image:
    body = next(obj.body for obj in outputs.objects if obj.key == key)
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def moto_server():
    """A moto server on 127.0.0.1 at a free port, for what needs real HTTP (a Lambda, a browser)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Install a plugin module the way pip would: a module plus a dist-info with an entry point."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(module: str, source: str, entry_name: str | None = None) -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        dist = site / f"{module}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(
            f"[image_pipeline.plugins]\n{entry_name or module} = {module}\n")
        sys.modules.pop(module, None)

    yield install
