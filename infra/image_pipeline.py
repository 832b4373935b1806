"""The whole stack as one component: storage, events, functions, CDN."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.backfill import Backfill, BackfillArgs
from infra.cdn import Cdn, CdnArgs
from infra.config import StackSettings
from infra.events import Events, EventsArgs
from infra.functions import Functions, FunctionsArgs
from infra.storage import Storage, StorageArgs
from infra.uploader import Uploader, UploaderArgs
from pipeline.registry import load_registry


@dataclass
class ImagePipelineArgs:
    settings: StackSettings


class ImagePipeline(pulumi.ComponentResource):
    def __init__(self, name: str, args: ImagePipelineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:ImagePipeline", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        caller = aws.get_caller_identity_output()
        account_id = caller.account_id
        self.storage = Storage("storage", StorageArgs(
            cors_origins=settings.cors_origins, backup_retention_mode=settings.backup_retention_mode,
            backup_retention_days=settings.backup_retention_days,
            backup_transition_days=settings.backup_transition_days,
            uploads_noncurrent_version_days=settings.uploads_noncurrent_version_days,
            tombstone_days=settings.tombstone_days, browser_uploads=settings.browser_uploads,
            protect_data=settings.protect_data, deployer_arn=settings.deployer_arn, caller_arn=caller.arn), child)
        self.events = Events("events", EventsArgs(self.storage.buckets["uploads"], account_id), child)
        # The CDN comes before the functions: the resize function invalidates its changed paths.
        # Nothing of the CDN depends on the functions, so there is no cycle.
        self.cdn = Cdn("cdn", CdnArgs(
            self.storage.buckets["uploads"], self.storage.buckets["processed"], settings.price_class,
            settings.cors_origins, settings.domain_name, settings.certificate_arn, settings.originals,
            settings.originals_public_key), child)
        self.functions = Functions("functions", FunctionsArgs(
            settings, self.storage.buckets, self.events.topic, self.cdn.distribution), child)
        self.storage.allow_cdn_reads(self.cdn.distribution.arn, originals=settings.originals != "private")
        self.uploader = Uploader("uploader", UploaderArgs(self.storage.buckets["uploads"],
                                                          settings.uploader_role_trust), child)
        self.backfill = Backfill("backfill", BackfillArgs(settings, self.storage.buckets, self.functions, account_id),
                                 child)
        self.url_patterns = self.cdn.domain_name.apply(lambda domain: url_patterns(domain, settings))
        self.register_outputs({"cdn_domain": self.cdn.domain_name, "url_patterns": self.url_patterns})


def url_patterns(domain: str, settings: StackSettings) -> dict[str, str]:
    """Where an app finds an upload's original, manifest and each variation, by the original's
    `{path}` (extension and all): `<variation>/{path}`, alternates `<variation>.<ext>/{path}`.
    No original when the CDN serves none (`originals: private`); with `signed` its URL needs a
    signature."""
    registry = load_registry(settings.pipeline)
    base = f"https://{domain}/uploads/images"
    patterns = {"original": f"{base}/original/{{path}}"} if settings.originals != "private" else {}
    patterns["manifest"] = f"{base}/manifest/{{path}}.json"
    for name, variation in registry.variations.items():
        patterns[name] = f"{base}/{name}/{{path}}"
        _, *alongside = registry.renditions(variation)
        for encoder in alongside:  # e.g. "large.webp" when the webp plugin is on
            patterns[f"{name}.{encoder.extension}"] = f"{base}/{name}.{encoder.extension}/{{path}}"
    return patterns
