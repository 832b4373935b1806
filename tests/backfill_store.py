"""A store for backfill tests: a moto server on 127.0.0.1 (so worker processes and subprocesses
reach it too), buckets, and originals processed by the live path (`apply_change`, LIVE scope)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import boto3
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
               "AWS_REGION": REGION}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server():
    """A ThreadedMotoServer on a free port, AWS_ENDPOINT_URL pointing at it while it runs."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client():
    return boto3.client("s3", region_name=REGION)


def make_buckets(s3, uploads: str, processed: str) -> None:
    for bucket in (uploads, processed):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=uploads, VersioningConfiguration={"Status": "Enabled"})


def tiny_jpeg(index: int, size=(96, 64)) -> bytes:
    """A small, distinct photo-like JPEG: rendering it takes milliseconds."""
    image = Image.new("RGB", size, ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256))
    image.paste(((index * 11) % 256, 200, 40), (index % 40, 8, index % 40 + 30, 40))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def path_of(index: int) -> str:
    # keys with spaces, '+' and non-ASCII, in folders, as uploads have them
    return f"2026/{index % 7}/ph\u00f6to +{index:04d}.jpg"


def seed(s3, uploads: str, processed: str, count: int, config=None, *, bodies=None) -> None:
    """Upload `count` originals and process each on the live path, as the resize function would."""
    from pipeline.config import PipelineConfig
    from pipeline.events import ObjectChange
    from pipeline.registry import load_registry
    from pipeline.resize import apply_change
    from pipeline.storage import S3Store

    registry = load_registry(config or PipelineConfig())
    store = S3Store(s3)

    def one(index: int) -> None:
        key = f"uploads/images/original/{path_of(index)}"
        body = bodies(index) if bodies else tiny_jpeg(index)
        s3.put_object(Bucket=uploads, Key=key, Body=body, ContentType="image/jpeg")
        apply_change(store, ObjectChange("created", "ObjectCreated:Put", uploads, key), processed, registry)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def state(s3, bucket: str) -> dict[str, tuple[str, object]]:
    """Every object: key -> (ETag, last modified)."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (obj["ETag"], obj["LastModified"])
    return found


def run_backfill(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "backfill", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def backfill_json(*args: str, env: dict | None = None) -> tuple[int, dict]:
    result = run_backfill(*args, "--json", env=env)
    try:
        return result.returncode, json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"no JSON (exit {result.returncode}): {result.stdout}\n{result.stderr}") from None
