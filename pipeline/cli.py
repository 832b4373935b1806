"""`python -m pipeline` (or `image-pipeline`): process local files, list plugins, sign a browser's
upload, backfill, run the local stack.

    python -m pipeline process FILE... --out DIR [--config FILE] [--quiet]
    python -m pipeline plugins [--config FILE]
    python -m pipeline sign PATH [--bucket B] [--prefix-only] [--content-type T] [--expires S] [--json] [--config FILE]
    python -m pipeline backfill [--stack NAME | --uploads-bucket B --processed-bucket B] [--dry-run] ...
    python -m pipeline local [--upload FILE... [--once]] [--port N] [--cdn-port N] [--s3-port N] [--config FILE] ...
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

from pipeline.config import ConfigError, PipelineConfig
from pipeline.types import PluginError


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, sized without importing shutil (and with it bz2 and lzma) on every start."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ.get("COLUMNS") or os.get_terminal_size().columns)
        except (OSError, ValueError):
            width = 80
        super().__init__(prog, width=width - 2)


def main(argv: list[str] | None = None) -> int:
    # The docstring's first paragraph, whole; the program as it was called (the console script or -m).
    summary = " ".join(__doc__.split("\n\n")[0].split())
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    parser = argparse.ArgumentParser(prog="image-pipeline" if called == "image-pipeline" else "python -m pipeline",
                                     description=summary, formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    process = commands.add_parser("process", help="render the variations of local image files",
                                  formatter_class=_HelpFormatter)
    process.add_argument("files", nargs="+", metavar="FILE")
    process.add_argument("--out", required=True, metavar="DIR", help="write objects as files under DIR at their keys")
    process.add_argument("--config", metavar="FILE", help="pipeline configuration (JSON or TOML)")
    process.add_argument("--quiet", action="store_true", help="print nothing but errors")

    plugins = commands.add_parser("plugins", help="list the plugins, their variations and spec hashes",
                                  formatter_class=_HelpFormatter)
    plugins.add_argument("--config", metavar="FILE", help="pipeline configuration (JSON or TOML)")

    sign = commands.add_parser("sign", help="print a presigned POST a browser uploads one original with",
                               formatter_class=_HelpFormatter)
    sign.add_argument("path", metavar="PATH", help="the original's path: its key is uploads/images/original/PATH")
    sign.add_argument("--bucket", help="the uploads bucket (default: $UPLOADS_BUCKET)")
    sign.add_argument("--prefix-only", action="store_true",
                      help="allow any key under uploads/images/original/PATH/ (the browser's file name by default)")
    sign.add_argument("--content-type", metavar="TYPE",
                      help="the one content type allowed (default: from PATH's extension)")
    sign.add_argument("--expires", type=int, default=600, metavar="S", help="seconds it is valid (600; at most 3600)")
    sign.add_argument("--json", action="store_true", help="print one JSON object: url, fields, key, ...")
    sign.add_argument("--config", metavar="FILE", help="pipeline configuration (JSON or TOML): its max_bytes")

    backfill = commands.add_parser(
        "backfill", help="re-render what is missing or stale in the stored images (after adding or changing a "
                         "variation)", formatter_class=_HelpFormatter,
        description="Re-render exactly the variations that are missing or stale (their spec hash changed) in "
                    "the stored images. Exit status: 0 all done, 1 some failed, 2 usage or configuration error, "
                    "130 interrupted (run it again to continue).")
    from pipeline.backfill.arguments import add_arguments

    add_arguments(backfill)

    local = commands.add_parser("local", help="run the whole pipeline on this machine: S3, SNS, the functions, "
                                "a CDN and a page, on 127.0.0.1", formatter_class=_HelpFormatter)
    local.add_argument("--config", metavar="FILE", help="pipeline configuration (JSON or TOML) for the functions")
    from pipeline.local.command import add_arguments

    add_arguments(local)

    args = parser.parse_args(argv)
    if args.command == "backfill":
        from pipeline.backfill.command import main as backfill_main

        return backfill_main(args)
    try:
        config = PipelineConfig.from_file(args.config) if args.config else PipelineConfig.from_env()
        if args.command == "sign":
            return sign_upload(args, config)
        from pipeline.registry import load_registry

        registry = load_registry(config)
    except (ConfigError, PluginError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "plugins":
        return list_plugins(registry)
    if args.command == "local":
        from pipeline.local.command import run

        return run(args, config)
    return process_files(args.files, args.out, registry, quiet=args.quiet)


def process_files(files: list[str], out: str, registry, *, quiet: bool = False) -> int:
    from pipeline import keys
    from pipeline.types import PluginFailure
    from pipeline.outputs import outputs_for_original
    from pipeline.storage import LocalDirectory

    storage = LocalDirectory(out)
    status = 0
    for file, path in source_paths(files).items():
        started = time.perf_counter()
        try:
            with open(file, "rb") as handle:
                data = handle.read()
        except OSError as error:
            print(f"{file}: cannot read: {error.strerror}", file=sys.stderr)
            status = 1
            continue
        # S3's ETag of a single-part upload is the MD5 of its bytes: the manifest records the same.
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        try:
            outputs = outputs_for_original(keys.original_key(path), data, etag, registry)
        except PluginFailure as failure:  # the file is fine, a plugin is not: nothing is written for it
            print(f"{file}: {failure}", file=sys.stderr)
            status = 1
            continue
        for obj in outputs.objects:
            storage.put(obj)
        if outputs.failed:
            print(f"{file}: {outputs.reason}", file=sys.stderr)
            status = 1
        elif not quiet:
            print_table(file, outputs, time.perf_counter() - started)
    return status


def source_paths(files: list[str]) -> dict[str, str]:
    """Each file's `<path>` in the key scheme: its path below the folder all the files share, so
    that `a/photo.jpg` and `b/photo.jpg` stay apart (and one file given twice is rendered once)."""
    absolute = {file: os.path.abspath(file) for file in files}
    unique = sorted(set(absolute.values()))
    if not unique:
        return {}
    common = os.path.dirname(unique[0]) if len(unique) == 1 else os.path.commonpath(unique)
    paths, seen = {}, set()
    for file, full in absolute.items():
        if full not in seen:
            seen.add(full)
            paths[file] = os.path.relpath(full, common).replace(os.sep, "/")
    return paths


def print_table(file: str, outputs, seconds: float) -> None:
    source = outputs.manifest["source"]
    print(f"{file}: {source['format']} {source['width']}x{source['height']}, {source['bytes']:,} bytes, "
          f"{seconds * 1000:.0f} ms in all")
    print(f"  {'variation':<16}{'size':>11}{'bytes':>11}{'ms':>7}  key")
    for rendered in outputs.rendering.variations:
        for file_ in rendered.files:
            name = rendered.variation.name if file_ is rendered.files[0] else ""
            entry = outputs.manifest["variations"][rendered.variation.name]
            key = entry["key"] if file_ is rendered.files[0] else next(
                a["key"] for a in entry["alternates"] if a["content_type"] == file_.encoder.content_type)
            size = f"{rendered.width}x{rendered.height}"
            ms = f"{rendered.seconds * 1000:.0f}" if name else ""
            print(f"  {name:<16}{size:>11}{len(file_.data):>11,}{ms:>7}  {key}")


def sign_upload(args, config: PipelineConfig) -> int:
    import json

    from botocore.exceptions import BotoCoreError

    from pipeline import uploads

    bucket = args.bucket or os.environ.get("UPLOADS_BUCKET")
    if not bucket:
        print("error: no bucket: give --bucket or set UPLOADS_BUCKET", file=sys.stderr)
        return 2
    try:
        upload = uploads.presigned_upload(uploads.signing_client(), bucket, args.path,
                                          content_type=args.content_type, prefix_only=args.prefix_only,
                                          max_bytes=config.max_bytes, expires_in=args.expires)
    except (uploads.UploadError, BotoCoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(upload.to_dict(), indent=2))
        return 0
    print(f"POST {upload.url}")
    print(f"key {upload.key}, {upload.content_type}, 1 to {upload.max_bytes:,} bytes, until {upload.expires_at}")
    print("fields (in this order, then the file as `file`):")
    for name, value in upload.fields.items():
        print(f"  {name}: {value}")
    return 0


def list_plugins(registry) -> int:
    print(f"{'plugin':<16}{'from':<28}enabled")
    for plugin in registry.plugins:
        print(f"{plugin.name:<16}{plugin.source:<28}{'yes' if plugin.enabled else 'no'}")
    print()
    print(f"{'variation':<16}{'plugin':<16}{'rule':<20}{'files':<12} spec hash")
    for variation in registry.variations.values():
        rule = f"{variation.transform} {variation.width}x{variation.height}"
        formats = "+".join(e.format for e in registry.renditions(variation))
        marks = "".join(f" +{p.name}" for p in registry.postprocessors_for(variation))
        print(f"{variation.name:<16}{registry.owner('variation', variation.name):<16}{rule:<20}"
              f"{formats + marks:<12} {registry.spec_hash(variation)}")
    print()
    print("transforms:      " + ", ".join(f"{n} ({registry.owner('transform', n)})" for n in registry.transforms))
    print("encoders:        " + ", ".join(f"{n} ({registry.owner('encoder', n)})" for n in registry.encoders))
    print("post-processors: " + (", ".join(f"{n} ({registry.owner('post-processor', n)})"
                                           for n in registry.postprocessors) or "none"))
    return 0
