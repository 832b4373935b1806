"""The local stack's web page, and the small backend behind it that a real app would have.

    GET    /                      the page (static/index.html, app.js, style.css beside this file)
    GET    /api/stack             the stack's URLs, buckets and environment
    POST   /api/uploads           {"name", "content_type"} -> a presigned POST by pipeline.uploads
    GET    /api/uploads           the most recent originals, deleted ones too, with their CDN URLs
    DELETE /api/uploads?path=P    delete the original at uploads/images/original/P
    GET    /api/status            the function runner: in flight, attempts, dead letters

The browser posts the file straight to the uploads bucket with the presigned POST, reads the
original and the manifest through the CDN, and paints each variation from the manifest's
versioned URL. The API only answers the page's own origin, with JSON, so another site open in
the same browser cannot sign or delete.
"""

from __future__ import annotations

import json
import mimetypes
from importlib import resources
from urllib.parse import parse_qs, quote, urlsplit

from pipeline import keys, uploads
from pipeline.local.servers import Handler, LocalServer

RECENT = 30
STATIC = ("index.html", "app.js", "style.css")


class PageServer:
    def __init__(self, stack, port: int = 0):
        self.stack = stack
        self.server = LocalServer("page", _Page, self, port)
        self._s3 = self._signer = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origins(self) -> set[str]:
        return {self.url, self.url.replace("127.0.0.1", "localhost")}

    def start(self) -> PageServer:
        from pipeline.local.topology import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

        self._s3 = self.stack.client("s3")
        # As the README's backend signs: Signature Version 4, through pipeline.uploads.
        self._signer = uploads.signing_client(endpoint_url=self.stack.s3_url, region_name=REGION,
                                              aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    # The API.

    def describe(self) -> dict:
        return {"page": self.stack.page_url, "cdn": self.stack.cdn_url, "s3": self.stack.s3_url,
                "functions": self.stack.functions_url, "buckets": self.stack.buckets,
                "environment": self.stack.environment()}

    def sign(self, name: str, content_type: str | None) -> dict:
        path = f"browser/{name}"
        if content_type not in uploads.ACCEPTED_CONTENT_TYPES:
            content_type = None  # a browser's guess, or none (HEIC often): from the extension then
        upload = uploads.presigned_upload(self._signer, self.stack.buckets["uploads"], path,
                                          content_type=content_type)
        return {**upload.to_dict(), "path": path, **self.urls(path)}

    def urls(self, path: str, version_id: str | None = None) -> dict:
        cdn = self.stack.cdn_url
        original = f"{cdn}/{quote(keys.original_key(path))}"
        return {"original_url": original + (f"?v={quote(version_id)}" if version_id else ""),
                "manifest_url": f"{cdn}/{quote(keys.manifest_key(path))}"}

    def recent(self) -> list[dict]:
        """The latest version (or delete marker) of the most recently changed originals."""
        latest = []
        paginator = self._s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.stack.buckets["uploads"], Prefix=keys.ORIGINAL_PREFIX):
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if entry.get("IsLatest") and keys.is_original(entry["Key"]):
                    latest.append((entry, "ETag" not in entry))
        latest.sort(key=lambda item: item[0]["LastModified"], reverse=True)
        result = []
        for entry, deleted in latest[:RECENT]:
            path = keys.source_path(entry["Key"])
            result.append({"path": path, "key": entry["Key"], "version_id": entry["VersionId"], "deleted": deleted,
                           "bytes": entry.get("Size"), "last_modified": entry["LastModified"].isoformat(),
                           **self.urls(path, None if deleted else entry["VersionId"])})
        return result

    def delete(self, path: str) -> None:
        uploads.check_path(path)
        self._s3.delete_object(Bucket=self.stack.buckets["uploads"], Key=keys.original_key(path))

    def status(self) -> dict:
        runner = self.stack.runner
        attempts = list(runner.attempts)
        return {"in_flight": runner.in_flight, "attempts": len(attempts),
                "errors": sum(1 for attempt in attempts if attempt.error),
                "concurrency": runner.concurrency, "retry_delays": list(runner.retry_delays),
                "dead_letters": [{k: v for k, v in letter.to_dict().items() if k != "event"}
                                 for letter in runner.dead_letters]}

    def content_security_policy(self) -> str:
        cdn, s3 = self.stack.cdn_url, self.stack.s3_url
        return (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' {cdn}; "
                f"connect-src 'self' {cdn} {s3}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class _Page(Handler):
    @property
    def page(self) -> PageServer:
        return self.owner

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if parts.path in ("/", "/index.html") or parts.path.startswith("/static/"):
            self._static(parts.path)
        elif parts.path == "/api/stack":
            self.send_json(200, self.page.describe())
        elif parts.path == "/api/uploads":
            self.send_json(200, {"uploads": self.page.recent()})
        elif parts.path == "/api/status":
            self.send_json(200, self.page.status())
        elif parts.path == "/favicon.ico":
            self.send(204)  # no icon, and no 404 in the browser's console
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.body()
        if not self._from_the_page() or urlsplit(self.path).path != "/api/uploads":
            return
        try:
            request = json.loads(body)
            signed = self.page.sign(str(request["name"]), request.get("content_type") or None)
        except (ValueError, KeyError, TypeError, uploads.UploadError) as error:
            self.send_json(400, {"error": str(error)})
            return
        self.send_json(200, signed)

    def do_DELETE(self) -> None:  # noqa: N802
        self.body()
        parts = urlsplit(self.path)
        if not self._from_the_page() or parts.path != "/api/uploads":
            return
        try:
            self.page.delete(parse_qs(parts.query)["path"][0])
        except (KeyError, uploads.UploadError) as error:
            self.send_json(400, {"error": str(error)})
            return
        self.send(204)

    def _from_the_page(self) -> bool:
        """Only the page may change anything: JSON (which another origin cannot send without a
        preflight this server never allows), from this origin when the browser names one."""
        origin = self.headers.get("Origin")
        json_body = (self.headers.get("Content-Type") or "").startswith("application/json")
        if (origin and origin not in self.page.origins) or (self.command == "POST" and not json_body):
            self.send_json(403, {"error": "only the page itself may do this"})
            return False
        return True

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        if name not in STATIC:
            self.send_json(404, {"error": "not found"})
            return
        body = resources.files("pipeline.local").joinpath("static", name).read_bytes()
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        self.send(200, body, {"content-type": content_type, "cache-control": "no-cache",
                              "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                              "content-security-policy": self.page.content_security_policy()},
                  head=self.command == "HEAD")
