"""`--engine batch`, `--resume JOB_ID` and `--retry-from REPORT`: plan, create the job awaiting
confirmation, show its task count and estimated cost, ask, confirm, follow it to the end, print
its failed tasks, invalidate the re-rendered variations on the CDN."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime, timezone

from pipeline.backfill import batch, pricing
from pipeline.backfill.command import STACK_OUTPUTS, Context, UsageError, invalidate
from pipeline.backfill.core import ERROR, FAILED, PERMANENT, scope_arguments
from pipeline.backfill.report import EXIT_OK

POLL_SECONDS = 5.0


def clients():
    import boto3

    from pipeline.backfill.local import s3_client

    return boto3.client("s3control"), s3_client()


def target_of(context: Context) -> batch.JobTarget:
    args, stack = context.args, context.stack
    function = args.backfill_function or stack.get(STACK_OUTPUTS["function"])
    role = args.batch_role or stack.get(STACK_OUTPUTS["role"])
    bucket = args.jobs_bucket or stack.get(STACK_OUTPUTS["jobs_bucket"])
    if not (function and role and bucket):
        raise UsageError("the batch engine needs the stack's backfill function, batch role and backfill bucket: "
                         "--stack NAME, or --backfill-function, --batch-role and --jobs-bucket")
    return batch.JobTarget(batch.account_of(role), function, role, bucket, context.uploads)


def run(context: Context, *, s3control=None, s3=None, ask=input, sleep=time.sleep) -> int:
    args = context.args
    target = target_of(context)
    if s3control is None:
        s3control, s3 = clients()
    summary = context.summary("batch")
    if args.resume:
        job_id, planned_variations = args.resume, None
    else:
        job_id, planned_variations, megapixels_per_task = create(context, target, s3control, s3)
        if job_id is None:
            return context.emit(summary)  # nothing to do
        status = batch.follow(s3control, target.account_id, job_id, lambda s: None, until=lambda s: s.status in (
            "Suspended", "Ready", "Active") or s.finished, interval=POLL_SECONDS, sleep=sleep)
        tasks = status.total or 0
        stack = context.stack
        estimate = pricing.batch_estimate(
            tasks, tasks, tasks, tasks * 2, 0, tasks * megapixels_per_task, pricing.SECONDS_PER_MEGAPIXEL,
            int(stack.get(STACK_OUTPUTS["memory"]) or pricing.LAMBDA_MEMORY_MB),
            stack.get(STACK_OUTPUTS["architecture"]) or "arm64",
            int(stack.get(STACK_OUTPUTS["concurrency"]) or 10), 0)
        renders = (f"tasks rendering one variation of {megapixels_per_task:.0f} MP on average" if megapixels_per_task
                   else "no task renders, they only prune")
        print(f"job {job_id}: {tasks:,} tasks; estimated ${estimate.total:,.2f} at most ({renders}; "
              f"--dry-run measures it): "
              + ", ".join(f"{line.what} ${line.dollars:,.4f}" for line in estimate.lines if line.dollars),
              file=sys.stderr)
        if not args.yes:
            if not sys.stdin.isatty() and ask is input:
                batch.cancel(s3control, target.account_id, job_id, "not confirmed (no terminal to ask; use --yes)")
                raise UsageError(f"job {job_id} cancelled: no terminal to ask for confirmation; pass --yes")
            if ask("run it? [y/N] ").strip().lower() not in ("y", "yes"):
                batch.cancel(s3control, target.account_id, job_id, "not confirmed")
                print(f"job {job_id} cancelled", file=sys.stderr)
                return EXIT_OK
        batch.confirm(s3control, target.account_id, job_id)
    from pipeline.backfill.progress import Bar

    with Bar(f"job {job_id}", enabled=not args.json, unit="tasks") as bar:
        def on_update(status: batch.JobStatus) -> None:
            bar.update(done=status.succeeded + status.failed, total=status.total, failed=status.failed)

        try:
            status = batch.follow(s3control, target.account_id, job_id, on_update, interval=POLL_SECONDS, sleep=sleep)
        except KeyboardInterrupt:
            print(f"\nthe job goes on without this command; follow it again with --resume {job_id}", file=sys.stderr)
            summary.interrupted = True
            summary.job = {"id": job_id}
            return context.emit(summary)
    summary.job = {"id": job_id, "status": status.status, "tasks": status.total, "succeeded": status.succeeded,
                   "failed": status.failed, "reasons": status.reasons}
    summary.listed = status.total or 0
    summary.counts["succeeded"] = status.succeeded
    location = batch.report_location(status)
    if location and status.failed:
        summary.job["report"] = f"s3://{location[0]}/{location[1]}"
        for task in batch.failed_tasks(s3, *location):
            status_name = FAILED if task.code == PERMANENT else ERROR
            summary.counts[status_name] += 1
            summary.failures.append({"key": task.key, "status": status_name, "reason": f"{task.code}: {task.message}"})
    if status.succeeded:  # what the job may have re-rendered: the plan's, or every chosen variation
        chosen = planned_variations if planned_variations is not None else set(
            context.scope.variations or context.registry.variations)
        summary.rendered.update({name: 0 for name in chosen})
        invalidate(context, summary)
        summary.rendered.clear()
    if status.status != "Complete":
        summary.failures.append({"key": "", "status": ERROR, "reason": f"job {status.status}: {'; '.join(status.reasons)}"})
    return context.emit(summary)


def create(context: Context, target: batch.JobTarget, s3control, s3):
    """Plan (unless --no-plan), write the job's manifest, create the job awaiting confirmation.
    (job id or None when there is nothing to do, the variations it renders, megapixels a task)."""
    args, registry = context.args, context.registry
    stamp = datetime.now(timezone.utc)
    name = f"{stamp:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    description = f"image-pipeline backfill {' '.join(sys.argv[2:])}"
    megapixels = pricing.TYPICAL_MEGAPIXELS
    if args.retry_from:
        keys = [task.key for task in batch.report_from(s3, args.retry_from) if task.key]
        manifest, generator, variations = batch.put_manifest(s3, target, name, batch.csv_manifest(
            context.uploads, keys)), None, None
    elif args.no_plan:
        manifest, variations = None, None
        generator = batch.generated_manifest(target, "uploads/images/original/" + args.prefix, stamp)
    else:
        from pipeline.backfill.local import s3_client
        from pipeline.backfill.plan import Listing, plan_store
        from pipeline.storage import S3Store

        listing = Listing(s3_client(), context.uploads, args.prefix, args.limit)
        tally, work = plan_store(S3Store(s3), listing, context.processed, registry, context.scope)
        print(f"planned {listing.count:,} originals: {tally.work:,} need work", file=sys.stderr)
        if not work:
            return None, None, None
        manifest = batch.put_manifest(s3, target, name, batch.csv_manifest(context.uploads,
                                                                           (p.listed.key for p in work)))
        generator, variations = None, set(tally.render) | set(tally.prune)
        megapixels = tally.megapixels / len(work)
    job_id = batch.create_job(s3control, target, scope_arguments(context.scope), token=name, description=description,
                              manifest=manifest, generator=generator)
    return job_id, variations, megapixels
