"""`image-pipeline backfill`: re-render what is missing or stale in the stored images.

Exit statuses: 0 all done (or nothing to do), 1 some originals failed (see the report),
2 a usage or configuration error, 130 interrupted (run the same command again to continue).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from pipeline.backfill.report import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Summary, default_report_path
from pipeline.config import ConfigError, PipelineConfig
from pipeline.resize import Scope
from pipeline.types import PluginError

# Stack outputs the command reads (`--stack NAME`), by what it needs them for.
STACK_OUTPUTS = {"uploads": "uploadsBucket", "processed": "processedBucket", "config": "pipelineConfig",
                 "distribution": "distributionId", "function": "backfillFunctionArn", "role": "backfillRoleArn",
                 "jobs_bucket": "backfillBucket", "memory": "backfillMemoryMb", "concurrency": "backfillConcurrency",
                 "architecture": "architecture"}


class UsageError(Exception):
    """Wrong flags or configuration: exit status 2, one line saying what to do."""


def main(args) -> int:
    try:
        return _main(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _main(args) -> int:
    stack = stack_outputs(args.stack) if args.stack else {}
    uploads = args.uploads_bucket or stack.get(STACK_OUTPUTS["uploads"]) or os.environ.get("UPLOADS_BUCKET")
    processed = args.processed_bucket or stack.get(STACK_OUTPUTS["processed"]) or os.environ.get("PROCESSED_BUCKET")
    if not uploads or not processed:
        raise UsageError("name the buckets: --stack NAME, or --uploads-bucket and --processed-bucket "
                         "(or $UPLOADS_BUCKET and $PROCESSED_BUCKET)")
    registry, config = load_definitions(args.config, stack.get(STACK_OUTPUTS["config"]))
    scope = make_scope(args, registry)
    if args.sample is not None and not args.dry_run:
        raise UsageError("--sample goes with --dry-run (a real run reads every manifest anyway)")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.jobs is not None and args.jobs < 0:
        raise UsageError("--jobs must be 0 or more")
    context = Context(args, stack, uploads, processed, registry, config, scope)
    if args.resume or args.retry_from or (args.engine == "batch" and not args.dry_run):
        from pipeline.backfill import batch_command

        return batch_command.run(context)
    if args.dry_run:
        from pipeline.backfill.dry_run import run as dry_run

        return dry_run(context)
    return run_local(context)


class Context:
    """Everything a run was asked for, resolved."""

    def __init__(self, args, stack: dict, uploads: str, processed: str, registry, config: PipelineConfig, scope: Scope):
        self.args, self.stack, self.uploads, self.processed = args, stack, uploads, processed
        self.registry, self.config, self.scope = registry, config, scope
        self.distribution = args.distribution_id or stack.get(STACK_OUTPUTS["distribution"])

    def summary(self, engine: str) -> Summary:
        return Summary(engine, self.uploads, self.processed, scope_json(self.scope))

    def emit(self, summary: Summary, *, report_always: bool = False) -> int:
        """Print the summary (and the JSON), write the report; the exit status."""
        summary.finished = summary.finished or time.time()
        path = self.args.report or (default_report_path(summary.started) if summary.failures or report_always else None)
        if path:
            summary.write(path)
        if self.args.json:
            print(json.dumps(summary.as_json() | ({"report": path} if path else {}), indent=2))
        else:
            print("\n".join(summary.lines()))
            if path:
                print(f"  report: {path}")
        return summary.exit_status()


def scope_json(scope: Scope) -> dict:
    data = asdict(scope)
    data["variations"] = sorted(scope.variations) if scope.variations is not None else None
    return data


def make_scope(args, registry) -> Scope:
    chosen = None
    if args.variations:
        unknown = sorted(set(args.variations) - set(registry.variations))
        if unknown:
            raise UsageError(f"--variation {', '.join(unknown)}: not defined by the configuration "
                             f"(defined: {', '.join(registry.variations)}); --prune deletes undefined ones")
        chosen = frozenset(args.variations)
    return Scope(variations=chosen, force=args.force, prune=args.prune, retry_failed=args.retry_failed)


def load_definitions(config_file: str | None, stack_config: str | None):
    from pipeline.registry import load_registry

    try:
        if config_file:
            config = PipelineConfig.from_file(config_file)
        elif stack_config:
            config = PipelineConfig.from_dict(json.loads(stack_config), origin="the stack's pipelineConfig")
        else:
            config = PipelineConfig.from_env()
        return load_registry(config), config
    except (ConfigError, PluginError, ValueError) as error:
        raise UsageError(str(error)) from None


def stack_outputs(stack: str) -> dict[str, Any]:
    """`pulumi stack output --json --stack NAME`, run where the Pulumi program is."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise UsageError("--stack needs the Pulumi CLI (https://www.pulumi.com/docs/install/); without it, name "
                         "the buckets with --uploads-bucket and --processed-bucket")
    result = subprocess.run([pulumi, "stack", "output", "--json", "--stack", stack], capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        raise UsageError(f"pulumi stack output --stack {stack} failed: {result.stderr.strip() or result.stdout.strip()}")
    try:
        outputs = json.loads(result.stdout)
    except ValueError:
        raise UsageError(f"pulumi stack output --stack {stack} printed no JSON") from None
    if not isinstance(outputs, dict):
        raise UsageError(f"pulumi stack output --stack {stack} printed no JSON object")
    return outputs


def run_local(context: Context) -> int:
    from pipeline.backfill import local
    from pipeline.backfill.plan import Listing
    from pipeline.backfill.progress import Bar

    args = context.args
    jobs = local.default_jobs() if args.jobs is None else args.jobs
    work = local.Work(context.uploads, context.processed, context.config.to_json(), context.scope)
    summary = context.summary("local")
    listing = Listing(local.s3_client(), context.uploads, args.prefix, args.limit)
    with Bar(f"backfill ({jobs or 'no'} workers)", enabled=not args.json) as bar:
        def on_progress(summary: Summary, listing: Listing) -> None:
            bar.update(done=summary.done, total=listing.count if listing.done else None, failed=summary.failed)

        local.run(work, listing, summary, jobs=jobs, on_progress=on_progress)
        bar.update(done=summary.done, total=listing.count, failed=summary.failed)
    invalidate(context, summary)
    return context.emit(summary)


def invalidate(context: Context, summary: Summary) -> None:
    """One wildcard per re-rendered (or pruned) variation, after the run: never a path per image."""
    from pipeline.backfill.core import invalidation_prefixes

    folders = invalidation_prefixes(set(summary.rendered), set(summary.pruned), context.registry)
    if not folders:
        return
    if not context.distribution:
        print("note: no CDN distribution named (--distribution-id or --stack): nothing invalidated; unversioned "
              "URLs of the variations it changed may serve the old bytes for a few minutes", file=sys.stderr)
        return
    import uuid

    import boto3

    from pipeline.storage import CdnInvalidator

    try:
        summary.invalidated = CdnInvalidator(boto3.client("cloudfront"), context.distribution).invalidate_folders(
            folders, reference=f"backfill-{uuid.uuid4().hex}")
    except Exception as error:  # noqa: BLE001 - the short Cache-Control bounds staleness anyway
        print(f"warning: the CDN invalidation failed ({error}); unversioned URLs may serve old bytes for a few "
              "minutes", file=sys.stderr)


__all__ = ["main", "EXIT_OK", "EXIT_INTERRUPTED"]
