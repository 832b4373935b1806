"""The local stack's page in headless Chromium: upload a photo through the file input, see the
original and then the six variations appear, delete it and see them go. Screenshots are saved as
test artifacts (TEST_ARTIFACTS_DIR, by default .cache/test-artifacts).

The browser is Debian's `chromium`, installed here with apt-get when missing (as root), driven by
Playwright's Python package pointed at it: Playwright's own browser download cannot work where
only the package registries are reachable, and is never used. Without a browser and without a way
to install one, the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from pipeline import samples
from pipeline.local.topology import LocalStack

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / ".cache" / "test-artifacts")
PACKAGES = ["chromium", "fonts-dejavu-core"]  # a font, so that screenshots show text


def install_chromium() -> str:
    """Debian's chromium: found on PATH, or installed with apt-get; skips the test if neither works."""
    found = shutil.which("chromium")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("no `chromium` on PATH, and no apt-get to run as root to install Debian's: "
                    "run `apt-get install chromium` to run the browser test")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # perhaps a stale package list
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    found = shutil.which("chromium")
    if result.returncode != 0 or not found:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        pytest.skip(f"no browser: `{' '.join(install)}` failed ({last[0]})")
    return found


@pytest.fixture(scope="module")
def browser():
    executable = install_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


def polled_through(message, stack: LocalStack) -> bool:
    """A 404 is how the CDN answers for a manifest not written yet: the page polls through it.
    (The browser logs each one; any other failed request is a problem.)"""
    return "status of 404" in message.text and (message.location.get("url") or "").startswith(
        stack.cdn_url + "/uploads/images/manifest/")


def test_upload_watch_the_variations_appear_and_delete_in_the_page(browser, tmp_path):
    photo = tmp_path / "beach café.jpg"
    photo.write_bytes(samples.jpeg_bytes(samples.photo(1800, 1200, seed=4)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with LocalStack(retry_delays=(0.05, 0.1)) as stack:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda message: problems.append(f"{message.text} ({message.location.get('url')})")
                if message.type == "error" and not polled_through(message, stack) else None)
        page.goto(stack.page_url)
        page.set_input_files("#file", str(photo))

        card = page.locator('article.card[data-path="browser/beach café.jpg"]')
        card.wait_for(timeout=30_000)
        page.wait_for_function("""() => {
            const image = document.querySelector('article.card figure.original img');
            return image && image.complete && image.naturalWidth === 1800;
        }""", timeout=30_000)
        page.wait_for_function(
            "() => document.querySelectorAll('article.card figure.variation img.loaded').length === 6",
            timeout=60_000)
        assert card.get_attribute("data-status") == "ready"
        shown = page.evaluate("""() => [...document.querySelectorAll('article.card figure.variation')].map(f => {
            const image = f.querySelector('img');
            return [f.dataset.variation, image.naturalWidth, image.naturalHeight, f.querySelector('.frame').style.background];
        })""")
        manifest = stack.manifest("browser/beach café.jpg")
        colour = manifest["placeholder"]["dominant_color"]
        assert {name: (width, height) for name, width, height, _ in shown} == {
            name: (entry["width"], entry["height"]) for name, entry in manifest["variations"].items()}
        assert all(background for *_, background in shown), "each tile is painted the placeholder colour"
        assert colour.startswith("#")
        assert "manifest" in card.locator(".timing").inner_text()
        page.wait_for_timeout(400)  # the variations' fade-in
        page.screenshot(path=str(ARTIFACTS / "local-page-ready.png"), full_page=True)

        card.locator("button", has_text="Delete").click()
        page.wait_for_function(
            "() => document.querySelector('article.card').dataset.status === 'deleted'", timeout=30_000)
        assert card.locator("figure.variation").count() == 0 and card.locator("figure.original").count() == 0
        assert stack.manifest("browser/beach café.jpg")["status"] == "deleted"
        page.screenshot(path=str(ARTIFACTS / "local-page-deleted.png"), full_page=True)
        assert page.locator("#dead-letters li.none").count() == 1
        page.close()
    assert problems == []
    print(f"\nscreenshots: {ARTIFACTS / 'local-page-ready.png'}, {ARTIFACTS / 'local-page-deleted.png'}")
