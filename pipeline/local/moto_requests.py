"""Make moto's server carry out each S3 request atomically, as S3 does, and without needless work.

- Atomic. moto's threaded server runs requests side by side with nothing between them: a
  conditional write (If-Match, If-None-Match) reads the object and then writes it, and another
  write can land in between, so two writers of one manifest could both win; a presigned POST sends
  its event before it has set the object's content type. S3 makes each request atomic, and the
  pipeline's manifest commit relies on it. moto's S3 answers one request at a time here (moto
  computes in Python under one interpreter lock anyway, so little is lost).
- ListObjectVersions deep-copies every version of every key in the bucket, bodies and all,
  whatever the prefix, and the backup function lists one key's versions for each event: a cost
  that grows with the bucket. Here only the keys under the prefix are copied.
- Each request's dispatch lists moto's own package folder on disk to tell a service name from a
  host name; the list never changes, so it is read once.

`patch_moto_requests()` does all three, once per process.
"""

from __future__ import annotations

import functools
import threading

_lock = threading.Lock()
_request = threading.RLock()
_patched = False


def patch_moto_requests() -> None:
    global _patched
    with _lock:
        if _patched:
            return
        _patched = True
    from moto import backends
    from moto.s3 import models
    from moto.s3.responses import S3Response

    def one_at_a_time(method):
        @functools.wraps(method)
        def serialized(self, *args, **kwargs):
            with _request:
                return method(self, *args, **kwargs)

        return serialized

    for name in ("bucket_response", "key_response"):
        setattr(S3Response, name, one_at_a_time(getattr(S3Response, name)))

    list_object_versions = models.S3Backend.list_object_versions

    @functools.wraps(list_object_versions)
    def list_versions_under_prefix(self, bucket_name, delimiter=None, key_marker=None, max_keys=1000, prefix="",
                                   version_id_marker=None):
        bucket = self.get_bucket(bucket_name)
        every_key = bucket.keys
        if prefix:  # the same store, holding only the keys under the prefix (their version lists shared)
            under = type(every_key)()
            for key, versions in every_key.iterlists():
                if key.startswith(prefix):
                    dict.__setitem__(under, key, versions)
            bucket.keys = under  # no other request runs meanwhile: they are one at a time
        try:
            return list_object_versions(self, bucket_name, delimiter=delimiter, key_marker=key_marker,
                                        max_keys=max_keys, prefix=prefix, version_id_marker=version_id_marker)
        finally:
            bucket.keys = every_key

    models.S3Backend.list_object_versions = list_versions_under_prefix

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)
