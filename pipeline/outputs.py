"""From an original's bytes to the exact objects the resize path writes, manifest last.

Pure: no AWS and no files. The Lambda handler, `python -m pipeline process`, the backfill and
the local stack all call `outputs_for_original` and hand the result to their storage adapter.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from pipeline import keys
from pipeline.imaging import RejectedImage, Rendering, render
from pipeline.registry import Registry

MANIFEST_VERSION = 1
# Variations never change under their key for a given source and spec (both are in the
# object's metadata), so browsers and the CDN may keep them for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
# The manifest says "ready" or "failed"; it must be re-read when an original is replaced.
MANIFEST_CACHE = "public, max-age=60"


class OutputObject(NamedTuple):
    key: str
    body: bytes
    content_type: str
    cache_control: str
    metadata: dict[str, str]


class Outputs(NamedTuple):
    objects: list[OutputObject]  # variations first, the manifest last
    manifest: dict[str, Any]
    rendering: Rendering | None
    reason: str | None  # why the source was rejected, or None

    @property
    def failed(self) -> bool:
        return self.reason is not None


def outputs_for_original(original_key: str, data: bytes, etag: str, registry: Registry) -> Outputs:
    """Every object the resize path writes for one original; a rejected source gets its manifest."""
    path = keys.source_path(original_key)
    try:
        rendering = render(data, registry)
    except RejectedImage as rejection:
        return failed_outputs(original_key, etag, len(data), rejection.reason)

    source = {**_source(original_key, etag, len(data)), "format": rendering.source.format,
              "width": rendering.source.width, "height": rendering.source.height}
    objects: list[OutputObject] = []
    variations: dict[str, Any] = {}
    metadata = {"source-etag": etag}
    for rendered in rendering.variations:
        entries = []
        for file in rendered.files:
            key = keys.variation_key(rendered.variation.name, path, file.encoder.extension)
            objects.append(OutputObject(key, file.data, file.encoder.content_type, IMMUTABLE,
                                        {**metadata, "spec-hash": rendered.spec_hash}))
            entries.append({"key": key, "bytes": len(file.data), "content_type": file.encoder.content_type})
        main, alternates = entries[0], entries[1:]
        variations[rendered.variation.name] = {
            **main, "width": rendered.width, "height": rendered.height,
            "spec_hash": rendered.spec_hash, "alternates": alternates,
        }
    manifest = {"manifest_version": MANIFEST_VERSION, "status": "ready", "source": source,
                "placeholder": rendering.placeholder, "variations": variations}
    objects.append(_manifest_object(path, manifest, etag))
    return Outputs(objects, manifest, rendering, None)


def failed_outputs(original_key: str, etag: str, size: int, reason: str) -> Outputs:
    """Only the manifest that says why the source was rejected: an app waiting can stop waiting."""
    manifest = {"manifest_version": MANIFEST_VERSION, "status": "failed",
                "source": _source(original_key, etag, size), "reason": reason, "variations": {}}
    return Outputs([_manifest_object(keys.source_path(original_key), manifest, etag)], manifest, None, reason)


def _source(original_key: str, etag: str, size: int) -> dict[str, Any]:
    return {"key": original_key, "etag": etag, "bytes": size}


def manifest_keys(manifest: dict[str, Any]) -> list[str]:
    """Every object key a manifest lists (main files and alternates)."""
    listed = []
    for entry in manifest.get("variations", {}).values():
        listed.append(entry["key"])
        listed.extend(alternate["key"] for alternate in entry.get("alternates", []))
    return listed


def _manifest_object(path: str, manifest: dict[str, Any], etag: str) -> OutputObject:
    body = json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
    return OutputObject(keys.manifest_key(path), body, "application/json", MANIFEST_CACHE, {"source-etag": etag})
