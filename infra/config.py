"""Every stack setting, read in one place. Pulumi.yaml describes each key and gives its default;
stack files (Pulumi.dev.yaml, Pulumi.prod.yaml) hold values only."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi

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
        backfill_concurrency=config.require_int("backfillConcurrency"),
        backfill_report_days=config.require_int("backfillReportDays"),
    )
    _check(settings)
    _check_backfill(settings)
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


def _check_backfill(settings: StackSettings) -> None:
    if settings.backfill_concurrency < 1:
        raise ConfigError("stack config 'backfillConcurrency' must be at least 1 (concurrent backfill functions)")
    if settings.backfill_report_days < 1:
        raise ConfigError(f"stack config 'backfillReportDays' must be at least 1 (days), not {settings.backfill_report_days}")
