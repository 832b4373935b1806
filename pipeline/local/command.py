"""`image-pipeline local`: start the local stack, print where it is, optionally upload files and
print their variations, then serve until Ctrl-C (or, with --once, stop after the table)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import signal
import stat
import sys
import threading
import time
from urllib.parse import quote

from pipeline.local import DEFAULT_CONCURRENCY, DEFAULT_RETRY_DELAYS, LAMBDA_RETRY_DELAYS

MANIFEST_TIMEOUT = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upload", nargs="+", default=[], metavar="FILE",
                        help="upload these files through S3 once the stack runs, and print their variations")
    parser.add_argument("--once", action="store_true", help="with --upload: stop after the table instead of serving")
    parser.add_argument("--port", type=int, default=0, help="the page's port (default: a free one)")
    parser.add_argument("--cdn-port", type=int, default=0, help="the CDN's port (default: a free one)")
    parser.add_argument("--s3-port", type=int, default=0, help="S3's and SNS's port (default: a free one)")
    parser.add_argument("--functions-port", type=int, default=0,
                        help="the function runner's port, where SNS delivers (default: a free one)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                        help=f"invocations at a time, as Lambda's concurrency ({DEFAULT_CONCURRENCY})")
    parser.add_argument("--retry-delays", default=",".join(f"{s:g}" for s in DEFAULT_RETRY_DELAYS),
                        metavar="S,S", help="seconds before each retry of a failed invocation "
                        f"({','.join(f'{s:g}' for s in DEFAULT_RETRY_DELAYS)}; Lambda waits about "
                        f"{','.join(f'{s:g}' for s in LAMBDA_RETRY_DELAYS)})")
    parser.add_argument("--verbose", action="store_true", help="the functions' own log lines too (JSON, as in CloudWatch)")


def run(args, config) -> int:
    """`config`: the pipeline configuration (PipelineConfig), passed to the functions as PIPELINE_CONFIG."""
    from pipeline.local.topology import QUIET, LocalStack, Ports, StackError

    try:
        delays = tuple(float(s) for s in args.retry_delays.split(",") if s.strip())
    except ValueError:
        print(f"error: --retry-delays must be seconds separated by commas, not {args.retry_delays!r}", file=sys.stderr)
        return 2
    if args.once and not args.upload:
        print("error: --once goes with --upload", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    for file in args.upload:  # before the stack starts, not after it printed its banner
        unreadable = _unreadable(file)
        if unreadable:
            print(f"error: {file}: cannot read: {unreadable}", file=sys.stderr)
            return 2
    _show_log(verbose=args.verbose)
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops it as Ctrl-C does, waiting or serving
    stack = LocalStack(ports=Ports(args.port, args.cdn_port, args.s3_port, args.functions_port),
                       concurrency=args.concurrency, retry_delays=delays, pipeline_config=config.to_json(),
                       function_log_level=logging.INFO if args.verbose else QUIET)
    status = 130  # until the table is printed, Ctrl-C or SIGTERM interrupts the command
    try:
        stack.start()
        print_stack(stack)
        if args.upload:
            status = upload_and_report(stack, args.upload)
            if args.once:
                return status
        else:
            status = 0  # serving: Ctrl-C is how it ends (an upload's failure stays the exit code)
        print(f"\nServing {stack.page_url} until Ctrl-C.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except (StackError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        # The stop lets running invocations finish; a second Ctrl-C or SIGTERM ends the process at once.
        signal.signal(signal.SIGINT, _cut_short)
        signal.signal(signal.SIGTERM, _cut_short)
        stack.stop()
        print("local stack stopped", file=sys.stderr, flush=True)
        for number, handler in previous.items():
            signal.signal(number, handler)
    return status


def _unreadable(file: str) -> str | None:
    """Why `file` cannot be uploaded, or None: it must be a regular file (a pipe would be read
    once, or block) that this process may read."""
    try:
        mode = os.stat(file).st_mode
    except OSError as error:
        return error.strerror
    if not stat.S_ISREG(mode):
        return os.strerror(errno.EISDIR) if stat.S_ISDIR(mode) else "not a regular file"
    return None if os.access(file, os.R_OK) else os.strerror(errno.EACCES)


def _cut_short(number, frame) -> None:
    print("\nstop cut short: invocations still running were abandoned", file=sys.stderr, flush=True)
    os._exit(130)


def _show_log(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    local = logging.getLogger("pipeline.local")
    local.addHandler(handler)
    local.setLevel(logging.DEBUG if verbose else logging.INFO)
    local.propagate = False


def print_stack(stack) -> None:
    runner = stack.runner
    delays = " and ".join(f"{s:g} s" for s in runner.retry_delays) or "never"
    print("image-pipeline local stack, on 127.0.0.1 (Ctrl-C stops it)")
    print(f"  page        {stack.page_url}")
    print(f"  cdn         {stack.cdn_url}")
    print(f"  s3, sns     {stack.s3_url}")
    print(f"  functions   {stack.functions_url}  (resize, backup; {runner.concurrency} at a time; "
          f"retried after {delays}, then dead letters)")
    print(f"  buckets     uploads {stack.buckets['uploads']}, processed {stack.buckets['processed']}, "
          f"backup {stack.buckets['backup']}")
    print(f"  topic       {stack.topic_arn}")
    print("For the AWS CLI, boto3, `image-pipeline sign` and `image-pipeline backfill`, in another shell:")
    for name, value in stack.environment().items():
        print(f"  export {name}={shlex.quote(value)}")
    print("  unset AWS_PROFILE AWS_SESSION_TOKEN CDN_DISTRIBUTION_ID", flush=True)


def upload_and_report(stack, files: list[str]) -> int:
    """Upload each file with PutObject, wait for its manifest, print one table; 1 if any failed."""
    from pipeline import keys
    from pipeline.cli import source_paths
    from pipeline.uploads import CONTENT_TYPE_OF_EXTENSION

    s3 = stack.client("s3")
    uploaded = []
    for file, path in source_paths(files).items():
        extension = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        content_type = CONTENT_TYPE_OF_EXTENSION.get(extension, "application/octet-stream")
        with open(file, "rb") as handle:
            response = s3.put_object(Bucket=stack.buckets["uploads"], Key=keys.original_key(path), Body=handle,
                                     ContentType=content_type)
        uploaded.append((file, path, response.get("VersionId"), time.monotonic()))
    rows, status = [], 0
    landed = wait_for_manifests(stack, {path: (version_id, put_at) for _, path, version_id, put_at in uploaded})
    for file, path, version_id, put_at in uploaded:
        manifest, seconds = landed[path]
        if manifest["status"] != "ready":
            print(f"{file}: {manifest['status']}: {manifest.get('reason')}", file=sys.stderr)
            status = 1
            continue
        source = manifest["source"]
        first = True
        for name, entry in manifest["variations"].items():
            rows.append((path if first else "", name, f"{entry['width']}x{entry['height']}", f"{entry['bytes']:,}",
                         f"{seconds:.2f} s" if first else "", stack.cdn_url + entry["url"]))
            first = False
        rows.append(("", "(original)", f"{source['width']}x{source['height']}", f"{source['bytes']:,}", "",
                     f"{stack.cdn_url}/{quote(keys.original_key(path))}"))
    print_table(["photo", "variation", "size", "bytes", "to manifest", "CDN URL"], rows)
    return status


def wait_for_manifests(stack, expected: dict[str, tuple[str | None, float]]) -> dict[str, tuple[dict, float]]:
    """Each path's manifest once it is "ready" or "failed" for the version uploaded, and the seconds
    from the upload's end (`expected`: path -> (version id, time.monotonic() after the put)).

    Where no manifest will come, the path gets {"status": ..., "reason": ...} instead: "dead letter"
    once the version's resize went to the dead letters, "failed" once a resize of that version
    failed it without writing one (a key too long for S3), "no manifest" after the timeout.
    """
    from pipeline import keys

    s3, landed = stack.client("s3"), {}
    path_of = {keys.original_key(path): path for path in expected}
    timeout = MANIFEST_TIMEOUT + sum(stack.runner.retry_delays)  # time for the retries that end in a dead letter
    deadline = time.monotonic() + timeout
    while len(landed) < len(expected):
        for path, (manifest, at) in _ended_without_manifest(stack.runner, path_of, expected).items():
            landed.setdefault(path, (manifest, at - expected[path][1]))
        for path, (version_id, put_at) in expected.items():
            if path in landed:
                continue
            manifest = stack.manifest(path, s3)
            if manifest and manifest["status"] in ("ready", "failed") and \
                    manifest["source"].get("version_id") == version_id:
                landed[path] = (manifest, time.monotonic() - put_at)
        if time.monotonic() > deadline:
            for path in set(expected) - set(landed):
                landed[path] = ({"status": "no manifest", "reason": f"none after {timeout:g} s"}, timeout)
        time.sleep(0.02)
    return landed


def _ended_without_manifest(runner, path_of: dict[str, str], expected: dict[str, tuple[str | None, float]]
                            ) -> dict[str, tuple[dict, float]]:
    """The uploads no manifest will describe, each with what to report and when it became final."""
    from pipeline.local.runner import event_objects

    ended = {}
    for letter in list(runner.dead_letters):
        for key, version_id in event_objects(letter.event) if letter.function == "resize" else ():
            path = path_of.get(key)
            if path is not None and version_id == expected[path][0]:
                reason = f"the resize function failed {letter.attempts} times; the last error: {letter.error}"
                ended[path] = ({"status": "dead letter", "reason": reason}, time.monotonic())
    for attempt in list(runner.attempts):
        for entry in attempt.results if attempt.function == "resize" else ():
            path = path_of.get(entry.get("key"))
            if path is None or entry.get("outcome") != "failed":
                continue
            # The version uploaded failed if the event of a failed attempt names it: by time, the
            # notification can start the resize before the put's response reaches us.
            if (entry["key"], expected[path][0]) in attempt.objects:
                ended.setdefault(path, ({"status": "failed", "reason": entry.get("reason")}, attempt.finished))
    return ended


def print_table(header: list[str], rows: list[tuple]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    right = {2, 3, 4}
    print()
    for row in [header, *rows]:
        cells = [str(cell).rjust(width) if index in right else str(cell).ljust(width)
                 for index, (cell, width) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    sys.stdout.flush()
