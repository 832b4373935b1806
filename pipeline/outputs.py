"""From an original's bytes to the exact objects the resize path writes, manifest last.

Pure: no AWS and no files. The Lambda handler, `python -m pipeline process`, the backfill and
the local stack all call `outputs_for_original` and hand the result to their storage adapter.

The manifest is what an app reads. Its `status` is "ready" (every listed variation exists and
holds pixels of the version in `source`), "failed" (the upload can never be rendered under the
`limits` recorded; other limits get it processed again) or "deleted" (the original was removed;
this tombstone keeps a late event from bringing the variations back). Each variation entry has a
`url` whose `v` changes whenever its bytes can change (source ETag and spec hash), so the URLs in
the manifest may be cached for a year while the unversioned URL rule stays short-lived.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any, Callable, NamedTuple
from urllib.parse import quote

from pipeline import keys
from pipeline.caching import MANIFEST_CACHE, TOMBSTONE_TAG, VARIATION_CACHE, VERSION_PARAMETER, url_version
from pipeline.imaging import RejectedImage, RenderedVariation, Rendering, judging_limits, render
from pipeline.registry import Registry

MANIFEST_VERSION = 2
STATUSES = ("ready", "failed", "deleted")


class OutputObject(NamedTuple):
    key: str
    body: bytes
    content_type: str
    cache_control: str
    metadata: dict[str, str]
    tagging: str = ""  # S3 object tags, URL-encoded ("key=value")


class SourceRef(NamedTuple):
    """Which original, and which version of it, the outputs describe."""

    key: str
    etag: str
    version_id: str | None = None
    sequencer: str | None = None  # the greatest S3 sequencer of the events applied so far


class Outputs(NamedTuple):
    objects: list[OutputObject]  # variations first, the manifest last
    manifest: dict[str, Any]
    rendering: Rendering | None
    reason: str | None  # why the source was rejected, or None

    @property
    def failed(self) -> bool:
        return self.reason is not None


def outputs_for_original(original_key: str, data: bytes, etag: str, registry: Registry, *,
                         version_id: str | None = None, sequencer: str | None = None,
                         only: set[str] | None = None, previous: dict[str, Any] | None = None,
                         kept: dict[str, Any] | None = None,
                         on_file: Callable[[OutputObject], None] | None = None) -> Outputs:
    """Every object the resize path writes for one original; a rejected source gets its manifest.

    With `only`, just those variations are rendered and put; the others keep their entries from
    `previous` (a manifest of the same source bytes), so adding one variation puts one object
    (with none to render, `manifest_outputs` makes the manifest without the bytes).
    `kept` are entries of variations no longer defined that the manifest keeps listing (the
    backfill without --prune); otherwise a variation the definitions lack leaves the manifest.
    `on_file` is handed each variation's files as soon as they are encoded (possibly from a
    rendering thread), so a caller can store them while the next ones are made; a source
    rejected after some were handed over lists none of them.
    """
    source = SourceRef(original_key, etag, version_id, sequencer)
    path = keys.source_path(original_key)
    kept = {name: entry for name, entry in (kept or {}).items() if name not in registry.variations}
    made: dict[str, tuple[list[OutputObject], dict[str, Any]]] = {}

    def done(rendered: RenderedVariation) -> None:
        made[rendered.variation.name] = files, _ = variation_outputs(rendered, path, etag)
        for file in files if on_file else ():
            on_file(file)

    try:
        rendering = render(data, registry, only=only, on_variation=done)
    except RejectedImage as rejection:
        return failed_outputs(source, len(data), rejection.reason, registry)

    objects: list[OutputObject] = []
    variations: dict[str, Any] = dict(previous["variations"]) if only is not None and previous else {}
    for rendered in rendering.variations:
        files, variations[rendered.variation.name] = made[rendered.variation.name]
        objects.extend(files)
    info = rendering.source
    placeholder = previous.get("placeholder") if only is not None and previous else None
    manifest = {
        "manifest_version": MANIFEST_VERSION, "status": "ready",
        "source": {**_source(source, len(data)), "format": info.format, "width": info.width, "height": info.height},
        "placeholder": placeholder or rendering.placeholder,
        "variations": {**{name: variations[name] for name in registry.variations if name in variations}, **kept},
    }
    objects.append(manifest_object(path, manifest))
    return Outputs(objects, manifest, rendering, None)


def manifest_outputs(source: SourceRef, size: int, registry: Registry, previous: dict[str, Any],
                     kept: dict[str, Any] | None = None) -> Outputs:
    """Only the manifest, for the bytes `previous` was made from with nothing to render: a new
    version of them, or fewer variations. Needs no pixels, so neither the original's bytes."""
    kept = {name: entry for name, entry in (kept or {}).items() if name not in registry.variations}
    manifest = {**previous, "source": {**previous["source"], **_source(source, size)},
                "variations": {**{n: e for n, e in previous["variations"].items() if n in registry.variations},
                               **kept}}
    return Outputs([manifest_object(keys.source_path(source.key), manifest)], manifest, None, None)


def variation_outputs(rendered: RenderedVariation, path: str, etag: str) -> tuple[list[OutputObject], dict[str, Any]]:
    """The files of one rendered variation (main first, then alternates) and its manifest entry."""
    name, spec_hash = rendered.variation.name, rendered.spec_hash
    version = url_version(etag, spec_hash)
    files, entries = [], []
    for index, file in enumerate(rendered.files):
        key = keys.variation_key(name, path, None if index == 0 else file.encoder.extension)
        files.append(OutputObject(key, file.data, file.encoder.content_type, VARIATION_CACHE,
                                  {"source-etag": etag, "spec-hash": spec_hash}))
        entries.append({"key": key, "url": versioned_url(key, version), "bytes": len(file.data),
                        "content_type": file.encoder.content_type})
    main, alternates = entries[0], entries[1:]
    return files, {**main, "width": rendered.width, "height": rendered.height, "spec_hash": spec_hash,
                   "alternates": alternates}


def failed_outputs(source: SourceRef, size: int, reason: str, registry: Registry) -> Outputs:
    """Only the manifest that says why the source was rejected: an app waiting can stop waiting."""
    manifest = {"manifest_version": MANIFEST_VERSION, "status": "failed", "source": _source(source, size),
                "reason": reason, "limits": judging_limits(registry.config), "variations": {}}
    return Outputs([manifest_object(keys.source_path(source.key), manifest)], manifest, None, reason)


def tombstone_outputs(original_key: str, sequencer: str | None) -> Outputs:
    """The manifest a removed original leaves: no variations, and a record that it is gone."""
    manifest = {"manifest_version": MANIFEST_VERSION, "status": "deleted",
                "source": {"key": original_key, "sequencer": sequencer}, "variations": {}}
    return Outputs([manifest_object(keys.source_path(original_key), manifest)], manifest, None, None)


def _source(source: SourceRef, size: int) -> dict[str, Any]:
    return {"key": source.key, "etag": source.etag, "version_id": source.version_id, "bytes": size,
            "sequencer": source.sequencer}


def versioned_url(key: str, version: str) -> str:
    """The CDN path of a key with its version, relative to the CDN's origin."""
    return f"/{quote(key, safe='/')}?{VERSION_PARAMETER}={version}"


def listed_keys(manifest: dict[str, Any] | None) -> list[str]:
    """Every object key a manifest lists (main files and alternates)."""
    listed = []
    for entry in (manifest or {}).get("variations", {}).values():
        listed.append(entry["key"])
        listed.extend(alternate["key"] for alternate in entry.get("alternates", []))
    return listed


def parse_manifest(body: bytes) -> dict[str, Any] | None:
    """A stored manifest, or None when it is not one this version can trust (then it is rewritten)."""
    try:
        manifest = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than a manifest ever has
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    source, variations = manifest.get("source"), manifest.get("variations")
    if manifest.get("status") not in STATUSES or not isinstance(source, dict) or not isinstance(variations, dict):
        return None
    if not isinstance(source.get("key"), str) or not isinstance(source.get("sequencer"), (str, type(None))):
        return None
    for entry in variations.values():
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                and isinstance(entry.get("spec_hash"), str) and isinstance(entry.get("alternates", []), list)
                and all(isinstance(a, dict) and isinstance(a.get("key"), str) for a in entry.get("alternates", []))):
            return None
    return manifest


def manifest_object(path: str, manifest: dict[str, Any]) -> OutputObject:
    # A fresh write_id makes every manifest write a new ETag, so a conditional write can tell
    # "unchanged since I read it" from "rewritten with the same content meanwhile".
    body = json.dumps({**manifest, "write_id": secrets.token_hex(8)}, indent=2).encode() + b"\n"
    tagging = f"{TOMBSTONE_TAG[0]}={TOMBSTONE_TAG[1]}" if manifest["status"] == "deleted" else ""
    return OutputObject(keys.manifest_key(path), body, "application/json", MANIFEST_CACHE, {}, tagging)
