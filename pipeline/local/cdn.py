"""The local CDN: the distribution's routing and headers, in front of the local buckets.

What the real distribution (infra/cdn.py) does, and so this does too:

- `/uploads/images/original/*` is read from the uploads bucket, the rest of `/uploads/images/*`
  from the processed bucket, by the decoded path with its dot segments resolved (CloudFront matches
  behaviours on the normalized path); only `v` of the query string counts, and it never reaches S3;
- any other path, `/` included, answers 404 with no body, as the default behaviour's
  viewer-request function does (infra.cdn.NOT_SERVED_CODE): no bucket is asked;
- a successful response gets the viewer-response function's headers
  (`pipeline.caching.viewer_response_headers`: a year with `?v=`, the stored Cache-Control
  otherwise, and an original that is no accepted image type as a download); every response gets
  the response headers policy's (`security_headers`, and `cors_headers` for the stack's CORS
  origins);
- a key that does not exist answers 404 NoSuchKey, as S3 answers the distribution, which may list
  the buckets it serves for exactly that (infra.policies.cloudfront_grants). That holds for a
  manifest not written yet, a variation not rendered yet, a deleted original and a deleted
  variation alike. A removed original's tombstone manifest is an object like any other: 200,
  `"status": "deleted"`;
- GET, HEAD and OPTIONS only; anything else is 403, as CloudFront answers a method the behaviour
  does not allow.

It keeps no cache: a response is what the edge would send on a miss. So nothing here is ever
stale, and the resize function has nothing to invalidate (the local stack sets no
CDN_DISTRIBUTION_ID). A browser still caches by the headers, as it would with the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from pipeline import keys
from pipeline.caching import VERSION_PARAMETER, cors_headers, security_headers, viewer_response_headers
from pipeline.local.servers import Handler, LocalServer

# What S3 answers a reader that may list the bucket, for a key that is not there.
MISSING_STATUS = 404
# What the default behaviour's function answers for a path outside /uploads/images/.
NOT_SERVED_STATUS = 404
# The origin's response headers that reach a viewer (hop-by-hop and S3's own request ids do not).
PASSED_HEADERS = ("content-type", "content-length", "content-range", "etag", "last-modified", "cache-control",
                  "content-disposition", "content-encoding", "content-language", "expires", "accept-ranges",
                  "x-amz-version-id", "x-amz-server-side-encryption")


def missing_body(key: str) -> bytes:
    """S3's body for a GET of a key that is not there (less its RequestId and HostId)."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
            f"<Message>The specified key does not exist.</Message><Key>{escape(key)}</Key></Error>").encode()


def _resolve_dot_segments(path: str) -> str:
    """RFC 3986's remove_dot_segments for an absolute path: `.` and `..` go, nothing else changes
    (empty segments stay: `//a` is not `/a`)."""
    segments, resolved = path.split("/")[1:], []
    for index, segment in enumerate(segments):
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
            continue
        if index == len(segments) - 1:  # `/a/b/..` is `/a/`
            resolved.append("")
    return "/" + "/".join(resolved)


def route(path: str) -> tuple[str, str] | None:
    """("uploads" or "processed", key) for a request's path (still percent-encoded), as the
    distribution's behaviours route it; None for a path outside /uploads/images/, which the default
    behaviour answers at the edge."""
    decoded = _resolve_dot_segments("/" + unquote(path).removeprefix("/"))
    key = decoded[1:]
    if not key.startswith(keys.IMAGES_PREFIX):
        return None
    return ("uploads" if key.startswith(keys.ORIGINAL_PREFIX) else "processed"), key


class LocalCdn:
    def __init__(self, s3_client, buckets: dict[str, str], *, cors_origins: Sequence[str] = (), port: int = 0):
        """`buckets`: the bucket of each origin, "uploads" and "processed"."""
        self.s3, self.buckets, self.cors_origins = s3_client, dict(buckets), list(cors_origins)
        self.server = LocalServer("cdn", _Viewer, self, port)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> LocalCdn:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def fetch(self, method: str, path: str, query: str, request_headers) -> tuple[int, dict[str, str], bytes]:
        """The status, headers (by lower-case name) and body a viewer gets."""
        edge = {**security_headers(),
                **cors_headers(request_headers.get("Origin"), self.cors_origins, preflight=method == "OPTIONS")}
        if method == "OPTIONS":
            return (200 if "access-control-allow-origin" in edge else 403), edge, b""
        if method not in ("GET", "HEAD"):
            return 403, edge, b""
        target = route(path)
        if target is None:
            return NOT_SERVED_STATUS, edge, b""
        origin, key = target
        status, headers, body = self._origin(method, self.buckets[origin], key, request_headers)
        if status == 404:
            return MISSING_STATUS, {**edge, "content-type": "application/xml"}, missing_body(key)
        if status >= 400:
            return status, {**headers, **edge}, body
        version = (parse_qs(query).get(VERSION_PARAMETER) or [""])[0]
        viewer = viewer_response_headers(headers, version=version or None, original=origin == "uploads")
        return status, {**viewer, **edge}, body

    def _origin(self, method: str, bucket: str, key: str, request_headers) -> tuple[int, dict[str, str], bytes]:
        """What S3 answers the distribution's origin request (GET or HEAD, Range and If-None-Match)."""
        from botocore.exceptions import ClientError

        arguments = {"Bucket": bucket, "Key": key}
        for header, argument in (("Range", "Range"), ("If-None-Match", "IfNoneMatch")):
            if request_headers.get(header):
                arguments[argument] = request_headers[header]
        try:
            response = (self.s3.head_object if method == "HEAD" else self.s3.get_object)(**arguments)
        except ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 502)
            sent = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            headers = {name: value for name, value in sent.items() if name in PASSED_HEADERS}
            if status == 304:
                return 304, headers, b""
            return (404 if status in (403, 404) else status), {"content-type": "application/xml"}, b""
        sent = response["ResponseMetadata"]["HTTPHeaders"]
        headers = {name: value for name, value in sent.items()
                   if name in PASSED_HEADERS or name.startswith("x-amz-meta-")}
        body = b"" if method == "HEAD" else response["Body"].read()
        return response["ResponseMetadata"]["HTTPStatusCode"], headers, body


class _Viewer(Handler):
    def _answer(self) -> None:
        cdn: LocalCdn = self.owner
        self.body()  # a request's body is never forwarded; read, so the connection stays usable
        parts = urlsplit(self.path)
        status, headers, body = cdn.fetch(self.command, parts.path, parts.query, self.headers)
        if self.command == "HEAD" or status == 304:
            if status == 304:
                headers.pop("content-length", None)
            self.send(status, b"", headers)  # a HEAD keeps the origin's content-length
            return
        self.send(status, body, {**headers, "content-length": str(len(body))})

    do_GET = do_HEAD = do_OPTIONS = do_POST = do_PUT = do_DELETE = do_PATCH = _answer  # noqa: N815
