from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from pipeline.registry import AUTOLOAD_OFF_ENV

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # The suite's results must not depend on what else is installed next to it: only the built-in
    # plugins load, in this process and in every process it starts. A test that wants a
    # third-party plugin installs it with `install_plugin` (or clears the switch for its subprocess).
    os.environ[AUTOLOAD_OFF_ENV] = "1"


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


def autoloading_env(**extra: str) -> dict[str, str]:
    """This process's environment with third-party plugin discovery back on, for a subprocess."""
    env = {name: value for name, value in os.environ.items() if name != AUTOLOAD_OFF_ENV}
    return {**env, **extra}


@pytest.fixture(scope="session")
def moto_server_url():
    """A moto server on 127.0.0.1 at a free port, started once and stopped after the last test."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_server(moto_server_url):
    """The moto server's URL, emptied: for what needs real HTTP (a Lambda, a browser)."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server_url}/moto-api/reset", method="POST"),
                           timeout=30).close()
    return moto_server_url


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Install a plugin module the way pip would: a module plus a dist-info with an entry point.

    The registries this process builds discover the plugins installed here and no other: a plugin
    installed in the environment stays out, as it does for every other test.
    """
    from importlib.metadata import distributions

    from pipeline import hookspecs, registry

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def installed_here() -> list:
        found = {ep.name: ep for dist in distributions(path=[str(site)]) for ep in dist.entry_points
                 if ep.group == hookspecs.ENTRY_POINT_GROUP}
        return [found[name] for name in sorted(found)]

    monkeypatch.setattr(registry, "third_party_entry_points", installed_here)

    def install(module: str, source: str, entry_name: str | None = None) -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        dist = site / f"{module}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(
            f"[image_pipeline.plugins]\n{entry_name or module} = {module}\n")
        sys.modules.pop(module, None)

    yield install


@pytest.fixture
def interruptible_children():
    """Children started in the test take Ctrl-C (SIGINT) as from a terminal, even when pytest itself
    runs with SIGINT ignored (a background job of a script, `cmd &`): an ignored signal stays
    ignored across exec, a handled one is reset to the default, which Python makes KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
