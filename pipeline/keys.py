"""The key scheme every part relies on (see DESIGN.md, "Contracts").

    original   uploads/images/original/<path>
    variation  uploads/images/<variation>/<path without extension>.<ext>
    manifest   uploads/images/manifest/<path without extension>.json
"""

from __future__ import annotations

import posixpath

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


def original_key(path: str) -> str:
    return ORIGINAL_PREFIX + path.lstrip("/")


def _stem(path: str) -> str:
    folder, name = posixpath.split(path)
    stem, _ = posixpath.splitext(name)
    return posixpath.join(folder, stem or name)


def variation_key(variation: str, path: str, extension: str) -> str:
    return f"{IMAGES_PREFIX}{variation}/{_stem(path)}.{extension}"


def manifest_key(path: str) -> str:
    return f"{MANIFEST_PREFIX}{_stem(path)}.json"
