"""Every stack setting, read in one place. Pulumi.yaml describes each key and gives its default;
stack files (Pulumi.dev.yaml, Pulumi.prod.yaml) hold values only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi

from infra.cdn import ORIGINALS_MODES
from pipeline.config import ConfigError, PipelineConfig

RETENTION_MODES = ("GOVERNANCE", "COMPLIANCE")
PRICE_CLASSES = ("PriceClass_100", "PriceClass_200", "PriceClass_All")


@dataclass(frozen=True)
class StackSettings:
    architecture: str
    python_version: str
    resize_memory_mb: int
    resize_timeout_s: int
    backup_memory_mb: int
    backup_timeout_s: int
    reserved_concurrency: int  # -1: no reservation
    max_retries: int
    max_event_age_s: int
    log_retention_days: int
    backup_retention_mode: str
    backup_retention_days: int
    backup_transition_days: int
    uploads_noncurrent_version_days: int
    tombstone_days: int
    cors_origins: list[str]
    price_class: str
    domain_name: str | None
    certificate_arn: str | None
    alarm_email: str | None
    pipeline: PipelineConfig
    browser_uploads: bool = True
    uploader_role_trust: str | None = None
    originals: str = "public"
    originals_public_key: str | None = None
    require_human_settings: bool = False
    backfill_concurrency: int = 10
    backfill_report_days: int = 30


def read_settings() -> StackSettings:
    config = pulumi.Config()
    try:
        pipeline_config = PipelineConfig.from_dict(json.loads(config.require("pipeline")),
                                                   origin="stack config 'pipeline'")
    except ValueError as error:  # ConfigError, or JSON that does not parse
        raise ConfigError(f"stack config 'pipeline': {error}") from None
    settings = StackSettings(
        architecture=config.require("architecture"),
        python_version=config.require("pythonVersion"),
        resize_memory_mb=config.require_int("resizeMemoryMb"),
        resize_timeout_s=config.require_int("resizeTimeoutSeconds"),
        backup_memory_mb=config.require_int("backupMemoryMb"),
        backup_timeout_s=config.require_int("backupTimeoutSeconds"),
        reserved_concurrency=config.require_int("reservedConcurrency"),
        max_retries=config.require_int("maxRetries"),
        max_event_age_s=config.require_int("maxEventAgeSeconds"),
        log_retention_days=config.require_int("logRetentionDays"),
        backup_retention_mode=config.require("backupRetentionMode"),
        backup_retention_days=config.require_int("backupRetentionDays"),
        backup_transition_days=config.require_int("backupTransitionDays"),
        uploads_noncurrent_version_days=config.require_int("uploadsNoncurrentVersionDays"),
        tombstone_days=config.require_int("tombstoneDays"),
        cors_origins=list(config.require_object("corsOrigins")),
        price_class=config.require("priceClass"),
        domain_name=config.get("domainName") or None,
        certificate_arn=config.get("certificateArn") or None,
        alarm_email=config.get("alarmEmail") or None,
        pipeline=pipeline_config,
        browser_uploads=config.require_bool("browserUploads"),
        uploader_role_trust=config.get("uploaderRoleTrust") or None,
        originals=config.require("originals"),
        originals_public_key=config.get("originalsPublicKey") or None,
        require_human_settings=config.require_bool("requireHumanSettings"),
        backfill_concurrency=config.require_int("backfillConcurrency"),
        backfill_report_days=config.require_int("backfillReportDays"),
    )
    _check(settings)
    _check_backfill(settings)
    _stop_without_missing_settings(settings)
    return settings


def _check(settings: StackSettings) -> None:
    if settings.architecture not in ("arm64", "x86_64"):
        raise ConfigError(f"stack config 'architecture' must be arm64 or x86_64, not {settings.architecture!r}")
    if settings.python_version not in ("3.12", "3.13"):
        raise ConfigError(f"stack config 'pythonVersion' must be 3.12 or 3.13, not {settings.python_version!r}")
    if settings.backup_retention_mode not in RETENTION_MODES:
        raise ConfigError(f"stack config 'backupRetentionMode' must be one of {', '.join(RETENTION_MODES)}")
    if settings.price_class not in PRICE_CLASSES:
        raise ConfigError(f"stack config 'priceClass' must be one of {', '.join(PRICE_CLASSES)}")
    if bool(settings.domain_name) != bool(settings.certificate_arn):
        raise ConfigError("stack config 'domainName' and 'certificateArn' go together (an ACM certificate "
                          "in us-east-1 for that domain)")
    if not 0 <= settings.max_retries <= 2:
        raise ConfigError("stack config 'maxRetries' must be 0, 1 or 2 (Lambda's asynchronous retry limit)")
    if not 60 <= settings.max_event_age_s <= 21600:
        raise ConfigError("stack config 'maxEventAgeSeconds' must be from 60 to 21600")
    # S3 lifecycle days are whole, positive numbers; 0 would also expire what is still needed.
    for key, days in (("uploadsNoncurrentVersionDays", settings.uploads_noncurrent_version_days),
                      ("tombstoneDays", settings.tombstone_days)):
        if days < 1:
            raise ConfigError(f"stack config '{key}' must be at least 1 (days), not {days}")
    for origin in settings.cors_origins:
        if not CORS_ORIGIN.match(origin):
            raise ConfigError(f"stack config 'corsOrigins': {origin!r} is not an origin: scheme://host[:port], "
                              "without path or trailing slash, '*' at most as the leftmost label "
                              "(https://app.example.org, https://*.example.org, http://localhost:3000)")
    if settings.uploader_role_trust and not PRINCIPAL_ARN.match(settings.uploader_role_trust):
        raise ConfigError(f"stack config 'uploaderRoleTrust': {settings.uploader_role_trust!r} is not an AWS "
                          "principal ARN (arn:aws:iam::123456789012:role/app-backend, ...:user/..., ...:root)")
    if settings.originals not in ORIGINALS_MODES:
        raise ConfigError(f"stack config 'originals' must be one of {', '.join(ORIGINALS_MODES)}, "
                          f"not {settings.originals!r}")
    if settings.originals_public_key and settings.originals != "signed":
        raise ConfigError(f"stack config 'originalsPublicKey' is set but 'originals' is {settings.originals!r}: "
                          "set originals to signed, or remove the key")
    if settings.originals_public_key and not PUBLIC_KEY_PEM.match(settings.originals_public_key.strip()):
        raise ConfigError("stack config 'originalsPublicKey' must be a PEM public key, from "
                          "-----BEGIN PUBLIC KEY----- to -----END PUBLIC KEY----- (openssl rsa -pubout)")


# An origin a browser sends: http(s), a host (its leftmost label may be `*`), an optional port.
CORS_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:\d{1,5})?\Z")
# An IAM principal a role's trust policy may name: an account's root, a role or a user.
PRINCIPAL_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:(root|role/\S+|user/\S+)\Z")
# What CloudFront takes as a public key: PEM, SubjectPublicKeyInfo ("openssl rsa -pubout").
PUBLIC_KEY_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----\s+[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----\Z")


def missing_settings(settings: StackSettings) -> dict[str, str]:
    """Each setting only a person can know that this stack cannot be deployed without and does not
    have, with why and how to set it. With requireHumanSettings: alarmEmail, and corsOrigins when
    browsers upload directly. Always: originalsPublicKey when originals are signed. Never:
    domainName (the CloudFront domain works)."""
    missing = {}
    if settings.require_human_settings and not settings.alarm_email:
        missing["alarmEmail"] = ("who receives the alarms; pulumi config set alarmEmail <address>")
    if settings.require_human_settings and settings.browser_uploads and not settings.cors_origins:
        missing["corsOrigins"] = ("the origins of the apps whose browsers upload (browserUploads is true); "
                                  "pulumi config set --path 'corsOrigins[0]' https://<app's host>")
    if settings.originals == "signed" and not settings.originals_public_key:
        missing["originalsPublicKey"] = ("originals is signed: the PEM public key of the key pair an app signs "
                                         "URLs with; pulumi config set originalsPublicKey < originals-public.pem")
    return missing


def _stop_without_missing_settings(settings: StackSettings) -> None:
    missing = missing_settings(settings)
    if missing:
        raise ConfigError(f"stack {pulumi.get_stack()!r} is missing settings only a person can know; "
                          "set each, then run pulumi up again:\n"
                          + "\n".join(f"  {key}: {why}" for key, why in missing.items()))


def _check_backfill(settings: StackSettings) -> None:
    if settings.backfill_concurrency < 1:
        raise ConfigError("stack config 'backfillConcurrency' must be at least 1 (concurrent backfill functions)")
    if settings.backfill_report_days < 1:
        raise ConfigError(f"stack config 'backfillReportDays' must be at least 1 (days), not {settings.backfill_report_days}")
