"""The flags of `image-pipeline backfill`, apart from the command so that building the parser
imports nothing (`process` pays for every import at start-up)."""


def add_arguments(parser) -> None:
    where = parser.add_argument_group("where")
    where.add_argument("--stack", metavar="NAME", help="read the buckets (and the rest) from `pulumi stack output "
                                                       "--json --stack NAME`; needs the Pulumi CLI")
    where.add_argument("--uploads-bucket", metavar="BUCKET", help="the originals' bucket (default: $UPLOADS_BUCKET)")
    where.add_argument("--processed-bucket", metavar="BUCKET",
                       help="the variations' and manifests' bucket (default: $PROCESSED_BUCKET)")
    where.add_argument("--config", metavar="FILE", help="pipeline configuration (JSON or TOML); default: the "
                                                        "stack's, else $PIPELINE_CONFIG")
    where.add_argument("--distribution-id", metavar="ID",
                       help="CloudFront distribution to invalidate re-rendered variations on (default: the stack's)")
    what = parser.add_argument_group("what")
    what.add_argument("--variation", metavar="NAME", action="append", dest="variations",
                      help="only this variation (repeatable); default: every defined one")
    what.add_argument("--prefix", default="", metavar="PATH", help="only originals whose <path> starts with PATH")
    what.add_argument("--limit", type=int, metavar="N", help="at most N originals (in listing order)")
    what.add_argument("--force", action="store_true", help="re-render the chosen variations even when current")
    what.add_argument("--prune", action="store_true", help="delete variations no longer defined (default: keep)")
    what.add_argument("--retry-failed", action="store_true",
                      help="process failed uploads again even under the limits that refused them")
    how = parser.add_argument_group("how")
    how.add_argument("--engine", choices=("local", "batch"), default="local",
                     help="local: worker processes here (default); batch: an S3 Batch Operations job")
    how.add_argument("--jobs", type=int, metavar="N", help="worker processes of the local engine (default: one per "
                                                          "core; 0 renders in this process)")
    how.add_argument("--dry-run", action="store_true", help="read the manifests, print what would render and what "
                                                            "each engine would cost; write nothing")
    how.add_argument("--sample", type=int, metavar="N", help="with --dry-run: read N random manifests, not all")
    how.add_argument("--yes", action="store_true", help="batch: confirm the job without asking")
    how.add_argument("--no-plan", action="store_true", help="batch: read no manifest here; S3's manifest generator "
                                                            "lists the originals and the function skips what is current")
    how.add_argument("--backfill-function", metavar="ARN", help="batch: the backfill function (default: the stack's)")
    how.add_argument("--batch-role", metavar="ARN", help="batch: the role the job runs as (default: the stack's)")
    how.add_argument("--jobs-bucket", metavar="BUCKET", help="batch: job manifests and reports (default: the stack's)")
    how.add_argument("--resume", metavar="JOB_ID", help="batch: follow a job already created")
    how.add_argument("--retry-from", metavar="REPORT", help="batch: a new job of the failed tasks of a completion "
                                                           "report (s3://bucket/key of its manifest.json, or a file)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    out.add_argument("--report", metavar="FILE", help="write the JSON report here (default: "
                                                     "backfill-report-<time>.json, when anything failed)")
