"""The key scheme every part relies on. Keys are injective: no two originals, and no two files of
one original, share a key.

    original    uploads/images/original/<path>
    variation   uploads/images/<variation>/<path>          the original's own path, extension and all
    alternate   uploads/images/<variation>.<ext>/<path>    WebP/AVIF next to a variation
    manifest    uploads/images/manifest/<path>.json

`<path>` may contain folders. The content type, not the extension, says a file's format.
Variation names are path segments without a dot and never `original` or `manifest`, so an
alternate's folder can never be a variation's, and no variation shares a folder with the
originals or the manifests.
"""

from __future__ import annotations

IMAGES_PREFIX = "uploads/images/"
ORIGINAL_PREFIX = IMAGES_PREFIX + "original/"
MANIFEST_PREFIX = IMAGES_PREFIX + "manifest/"


def is_original(key: str) -> bool:
    return key.startswith(ORIGINAL_PREFIX) and len(key) > len(ORIGINAL_PREFIX) and not key.endswith("/")


def source_path(original_key: str) -> str:
    """`<path>` of an original's key; a key outside the originals prefix is a ValueError."""
    if not is_original(original_key):
        raise ValueError(f"{original_key!r} is not an original (keys start with {ORIGINAL_PREFIX!r})")
    return original_key[len(ORIGINAL_PREFIX):]


# S3's limit on a key, in bytes of UTF-8: an original whose derived keys would pass it cannot be processed.
MAX_KEY_BYTES = 1024


def has_plain_segments(path: str) -> bool:
    """No empty, `.` or `..` segment: a URL with one resolves to another path (`a/../b` is `b`), so
    two keys that S3 keeps apart would share a URL."""
    return all(segment not in ("", ".", "..") for segment in path.split("/"))


def belongs_to(key: str, path: str) -> bool:
    """Is `key` a variation's or an alternate's file of the original at `path`? (Never a manifest,
    an original, or another original's file: what a stored manifest lists is only trusted as far.)"""
    if not key.startswith(IMAGES_PREFIX) or not key.endswith("/" + path):
        return False
    folder = key[len(IMAGES_PREFIX):len(key) - len(path) - 1]
    return bool(folder) and "/" not in folder and folder not in ("original", "manifest")


def original_key(path: str) -> str:
    return ORIGINAL_PREFIX + path


def variation_key(variation: str, path: str, alternate: str | None = None) -> str:
    """A variation's main file, or with `alternate` ("webp", "avif") the file beside it."""
    folder = f"{variation}.{alternate}" if alternate else variation
    return f"{IMAGES_PREFIX}{folder}/{path}"


def manifest_key(path: str) -> str:
    return f"{MANIFEST_PREFIX}{path}.json"
