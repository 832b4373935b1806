"""How long browsers and the CDN may keep what the pipeline serves.

A variation's key is shared by every version of its original, so its bytes change on a
replacement, a deletion or a re-render. Two kinds of request therefore get two lifetimes:

- versioned (`?v=...`, the URLs the manifest lists): `v` changes whenever the bytes do, so the
  response may be kept for a year (the CDN's function sets VERSIONED_CACHE on these);
- unversioned (the URL rule an app derives from the original's path): the stored object's own
  Cache-Control, kept short so that the CDN's copy plus a browser's copy are never older than
  five minutes in total, even when an invalidation is lost.
"""

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
