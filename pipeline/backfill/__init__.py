"""The backfill: after adding or changing a variation, re-render exactly what is missing or stale.

    core.py      one original: read its manifest, decide, and when there is work call the same
                 `apply_change` as the resize function (Lambda-safe: the backfill function imports it)
    plan.py      list the originals, read manifests with a thread pool, count what a run would do
    local.py     the local engine: worker processes on this machine, through boto3
    batch.py     the batch engine's control plane: an S3 Batch Operations job and its report
    pricing.py   the price table and the estimates made from it
    report.py    the JSON report of a run
    progress.py  the progress bar (rich)
    command.py   `image-pipeline backfill`

Only core.py runs in Lambda; the rest are the command's, and may import what Lambda lacks.
"""
