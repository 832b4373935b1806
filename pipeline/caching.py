"""How long browsers and the CDN may keep what the pipeline serves, and every header the CDN sets.

A variation's key is shared by every version of its original, so its bytes change on a
replacement, a deletion or a re-render. Two kinds of request therefore get two lifetimes:

- versioned (`?v=...`, the URLs the manifest lists): `v` changes whenever the bytes do, so the
  response may be kept for a year (the CDN's function sets VERSIONED_CACHE on these, when the
  bytes answered are that version's);
- unversioned (the URL rule an app derives from the original's path): the stored object's own
  Cache-Control, kept short so that the CDN's copy plus a browser's copy are never older than
  five minutes in total, even when an invalidation is lost.

The header rules below are pure functions and constants: infra/cdn.py builds the CloudFront
Functions' JavaScript and the response headers policy from them, and the local CDN
(pipeline/local/cdn.py) applies the same functions, so both send the same headers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

VERSION_PARAMETER = "v"
VERSIONED_CACHE = "public, max-age=31536000, immutable"
# Edge and browser each keep an unversioned variation at most two minutes: four in the worst case.
VARIATION_CACHE = "public, max-age=120"
# The manifest is what an app polls until "ready"; a minute at the edge and a minute in a browser.
MANIFEST_CACHE = "public, max-age=60"
# The environment variable that names the CloudFront distribution whose changed paths the resize
# function invalidates; without it (tests, `process`) nothing is invalidated.
DISTRIBUTION_ENV = "CDN_DISTRIBUTION_ID"
# A removed original leaves a tombstone manifest (status "deleted") tagged with this, so that a
# late event can never bring its variations back; the processed bucket's lifecycle rule expires
# tombstones after some days, long after any invocation that could race it has ended.
TOMBSTONE_TAG = ("image-pipeline", "tombstone")
# What the CDN serves an original as (its functions apply this; a local CDN should too). An
# original goes out as itself only when its stored content type is one of these image types;
# any other original goes out as a download, so that an HTML file uploaded as `avatar.jpg` is
# never a page on the CDN's domain. The presigned POST may restrict uploads to the same types.
ORIGINAL_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/heic", "image/heif",
                        "image/avif")
DOWNLOAD_CONTENT_TYPE = "application/octet-stream"
DOWNLOAD_DISPOSITION = "attachment"
# Every CDN response: a document that slips through anyway is inert (no script, no subresource,
# an opaque origin).
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"
# The distribution's response headers policy, on every response: HSTS for two years, no framing,
# no referrer beyond the origin across origins.
HSTS_MAX_AGE = 63072000
FRAME_OPTIONS = "DENY"
REFERRER_POLICY = "strict-origin-when-cross-origin"
# With CORS origins configured, an app's script on one of them may read with these methods (an
# <img> needs no CORS at all).
CORS_METHODS = ("GET", "HEAD")
CORS_ALLOWED_HEADERS = ("*",)


def url_version(etag: str, spec_hash: str) -> str:
    """The `v` of a variation's URL: it changes whenever the variation's bytes can change."""
    return hashlib.sha256(f"{etag}/{spec_hash}".encode()).hexdigest()[:12]


# The metadata every variation is stored with (pipeline.outputs), as S3 sends it in a response.
SOURCE_ETAG_HEADER = "x-amz-meta-source-etag"
SPEC_HASH_HEADER = "x-amz-meta-spec-hash"


def viewer_cache_control(version: str | None, origin_cache_control: str | None,
                         source_etag: str | None = None, spec_hash: str | None = None) -> str:
    """The Cache-Control a viewer gets for a successful response: the rule the CloudFront function
    applies (infra.cdn.VIEWER_RESPONSE_CODE). A year only when the requested `v` is the version of
    the bytes answered (their metadata hashes to it): a manifest cached a little longer than its
    original, or a race, can never pin other bytes under a `v` for a year. Error responses (4xx,
    5xx) keep whatever the origin sent."""
    if version and source_etag is not None and spec_hash is not None and url_version(source_etag, spec_hash) == version:
        return VERSIONED_CACHE
    return origin_cache_control or VARIATION_CACHE


# The media type of a Content-Type value: what precedes its parameters, without the blanks HTTP
# allows before it. The same pattern, as a JavaScript regular expression, is in the function.
MEDIA_TYPE_PATTERN = r"^[ \t]*([^; \t]*)"


def served_as_image(content_type: str | None) -> bool:
    """Is an original stored with this Content-Type served as itself? Only when its media type,
    in any case, is one of ORIGINAL_IMAGE_TYPES; no Content-Type at all is not an image."""
    media_type = re.match(MEDIA_TYPE_PATTERN, content_type or "").group(1).lower()
    return media_type in ORIGINAL_IMAGE_TYPES


def original_download_headers(content_type: str | None) -> dict[str, str]:
    """The headers the originals' function sets on a successful response: none for an image of an
    accepted type; for anything else a type and a disposition that make a browser save it rather
    than render it."""
    if served_as_image(content_type):
        return {}
    return {"content-type": DOWNLOAD_CONTENT_TYPE, "content-disposition": DOWNLOAD_DISPOSITION}


def viewer_response_headers(headers: Mapping[str, str], *, version: str | None, original: bool) -> dict[str, str]:
    """Every header of a successful response once its behaviour's viewer-response function ran
    (infra.cdn.ORIGINALS_RESPONSE_CODE when `original`, else VIEWER_RESPONSE_CODE). `headers`: the
    origin's, by lower-case name."""
    result = dict(headers)
    result["cache-control"] = viewer_cache_control(version, headers.get("cache-control"),
                                                   headers.get(SOURCE_ETAG_HEADER), headers.get(SPEC_HASH_HEADER))
    if original:
        result.update(original_download_headers(headers.get("content-type")))
    return result


def security_headers() -> dict[str, str]:
    """What the response headers policy adds to every response, errors included, by lower-case name."""
    return {"strict-transport-security": f"max-age={HSTS_MAX_AGE}; includeSubDomains",
            "x-content-type-options": "nosniff",
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-frame-options": FRAME_OPTIONS,
            "referrer-policy": REFERRER_POLICY}


def cors_headers(origin: str | None, allowed_origins: Sequence[str], *, preflight: bool = False) -> dict[str, str]:
    """The CORS headers of the response headers policy for a request from `origin`: none unless it is
    one of `allowed_origins` (the stack's corsOrigins); a preflight also gets the methods and headers."""
    if not origin or origin not in allowed_origins:
        return {}
    headers = {"access-control-allow-origin": origin}
    if preflight:
        headers["access-control-allow-methods"] = ", ".join((*CORS_METHODS, "OPTIONS"))
        headers["access-control-allow-headers"] = ", ".join(CORS_ALLOWED_HEADERS)
    return headers
