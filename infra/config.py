"""Every stack setting, read in one place. Pulumi.yaml describes each key and gives its default;
stack files (Pulumi.dev.yaml, Pulumi.prod.yaml) hold values only.

`_check` refuses, at preview, every value AWS would refuse later (or accept and then fail on), with
a message naming the key; then `missing_settings` lists, in one message naming each, what this
stack cannot be deployed without and only a person can set (deployerArn, alarmEmail, corsOrigins,
originalsPublicKey, each under its own condition); `advice` returns what is allowed but likely to
fail on some accounts, or weakens a protection, which `read_settings` logs as warnings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi

from infra.cdn import ORIGINALS_MODES
from pipeline.config import ConfigError, PipelineConfig

ARCHITECTURES = ("arm64", "x86_64")
PYTHON_VERSIONS = ("3.12", "3.13")
RETENTION_MODES = ("GOVERNANCE", "COMPLIANCE")
PRICE_CLASSES = ("PriceClass_100", "PriceClass_200", "PriceClass_All")
# CloudWatch Logs accepts these retentions only; 0 keeps the events forever (the provider's
# retentionInDays; CloudWatch Logs PutRetentionPolicy).
LOG_RETENTION_DAYS = (0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)
# Lambda: memory 128-10240 MB, timeout up to 900 s (Lambda quotas).
LAMBDA_MEMORY_MB = (128, 10240)
LAMBDA_TIMEOUT_S = (1, 900)
# Lambda keeps this many concurrent executions of an account unreserved (PutFunctionConcurrency).
UNRESERVED_MINIMUM = 100
FUNCTIONS = 2  # resize and backup, each reserving `reservedConcurrency`; the backfill reserves `backfillConcurrency`
# CloudFront takes ACM certificates from us-east-1 only.
CERTIFICATE_REGION = "us-east-1"
# An IAM principal: an account's root, a role or a user. What a role's trust policy may name
# (uploaderRoleTrust) and what aws:PrincipalArn is (deployerArn), never an STS session's ARN.
PRINCIPAL_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:(root|role/\S+|user/\S+)\Z")


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
    # Data lifecycle (README, Deploy): protect the buckets from `pulumi destroy`, and who may
    # change the backup bucket's settings and policy.
    protect_data: bool = True
    deployer_arn: str | None = None
    account_concurrency_limit: int | None = None  # None: not stated
    # The backfill (README, "Backfill"): its function's reserved concurrency, how long job files stay.
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
        protect_data=config.require_bool("protectData"),
        deployer_arn=config.get("deployerArn") or None,
        account_concurrency_limit=config.get_int("accountConcurrencyLimit") or None,
        backfill_concurrency=config.require_int("backfillConcurrency"),
        backfill_report_days=config.require_int("backfillReportDays"),
    )
    _check(settings)
    _stop_without_missing_settings(settings)
    for warning in advice(settings):
        pulumi.log.warn(warning)
    return settings


def _one_of(key: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"stack config '{key}' must be one of {', '.join(map(str, allowed))}, not {value!r}")


def _within(key: str, value: int, low: int, high: int | None = None, unit: str = "") -> None:
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"stack config '{key}' must be {span}{unit}, not {value}")


def _check(settings: StackSettings) -> None:
    _one_of("architecture", settings.architecture, ARCHITECTURES)
    _one_of("pythonVersion", settings.python_version, PYTHON_VERSIONS)
    _one_of("backupRetentionMode", settings.backup_retention_mode, RETENTION_MODES)
    _one_of("priceClass", settings.price_class, PRICE_CLASSES)
    if settings.log_retention_days not in LOG_RETENTION_DAYS:
        raise ConfigError(f"stack config 'logRetentionDays' must be one of the retentions CloudWatch Logs accepts "
                          f"({', '.join(map(str, LOG_RETENTION_DAYS))}; 0 keeps logs forever), "
                          f"not {settings.log_retention_days}")
    for key, memory in (("resizeMemoryMb", settings.resize_memory_mb), ("backupMemoryMb", settings.backup_memory_mb)):
        _within(key, memory, *LAMBDA_MEMORY_MB, unit=" (MB, Lambda's range)")
    for key, timeout in (("resizeTimeoutSeconds", settings.resize_timeout_s),
                         ("backupTimeoutSeconds", settings.backup_timeout_s)):
        _within(key, timeout, *LAMBDA_TIMEOUT_S, unit=" (seconds, Lambda's range)")
    if settings.reserved_concurrency < -1:
        raise ConfigError(f"stack config 'reservedConcurrency' must be -1 (no reservation) or at least 0, "
                          f"not {settings.reserved_concurrency}")
    _within("backfillConcurrency", settings.backfill_concurrency, 1, unit=" (concurrent backfill functions)")
    if bool(settings.domain_name) != bool(settings.certificate_arn):
        raise ConfigError("stack config 'domainName' and 'certificateArn' go together (an ACM certificate "
                          "in us-east-1 for that domain)")
    if settings.certificate_arn:
        _check_certificate(settings.certificate_arn)
    if not 0 <= settings.max_retries <= 2:
        raise ConfigError("stack config 'maxRetries' must be 0, 1 or 2 (Lambda's asynchronous retry limit)")
    if not 60 <= settings.max_event_age_s <= 21600:
        raise ConfigError("stack config 'maxEventAgeSeconds' must be from 60 to 21600")
    # S3 lifecycle and object lock days are whole, positive numbers; 0 would also expire what is still needed.
    for key, days in (("uploadsNoncurrentVersionDays", settings.uploads_noncurrent_version_days),
                      ("tombstoneDays", settings.tombstone_days),
                      ("backupRetentionDays", settings.backup_retention_days),
                      ("backupTransitionDays", settings.backup_transition_days),
                      ("backfillReportDays", settings.backfill_report_days)):
        if days < 1:
            raise ConfigError(f"stack config '{key}' must be at least 1 (days), not {days}")
    if settings.account_concurrency_limit is not None and settings.account_concurrency_limit < 0:
        raise ConfigError("stack config 'accountConcurrencyLimit' must be your account's Lambda concurrency "
                          "limit (aws lambda get-account-settings), or 0 when not stated")
    if settings.deployer_arn:  # required while protectData is true: see missing_settings
        _check_deployer(settings.deployer_arn)
    for origin in settings.cors_origins:
        if not CORS_ORIGIN.match(origin):
            raise ConfigError(f"stack config 'corsOrigins': {origin!r} is not an origin: scheme://host[:port], "
                              "without path or trailing slash, '*' at most as the leftmost label "
                              "(https://app.example.org, https://*.example.org, http://localhost:3000)")
    if settings.uploader_role_trust and not PRINCIPAL_ARN.match(settings.uploader_role_trust):
        raise ConfigError(f"stack config 'uploaderRoleTrust': {settings.uploader_role_trust!r} is not an AWS "
                          "principal ARN (arn:aws:iam::123456789012:role/app-backend, ...:user/..., ...:root)")
    _one_of("originals", settings.originals, ORIGINALS_MODES)
    if settings.originals_public_key and settings.originals != "signed":
        raise ConfigError(f"stack config 'originalsPublicKey' is set but 'originals' is {settings.originals!r}: "
                          "set originals to signed, or remove the key")
    if settings.originals_public_key and not PUBLIC_KEY_PEM.match(settings.originals_public_key.strip()):
        raise ConfigError("stack config 'originalsPublicKey' must be a PEM public key, from "
                          "-----BEGIN PUBLIC KEY----- to -----END PUBLIC KEY----- (openssl rsa -pubout)")


# An origin a browser sends: http(s), a host (its leftmost label may be `*`), an optional port.
CORS_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:\d{1,5})?\Z")
# What CloudFront takes as a public key: PEM, SubjectPublicKeyInfo ("openssl rsa -pubout").
PUBLIC_KEY_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----\s+[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----\Z")


def _check_certificate(arn: str) -> None:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "acm" or not parts[5].startswith("certificate/"):
        raise ConfigError(f"stack config 'certificateArn' must be an ACM certificate ARN "
                          f"(arn:aws:acm:us-east-1:<account>:certificate/<id>), not {arn!r}")
    if parts[3] != CERTIFICATE_REGION:
        raise ConfigError(f"stack config 'certificateArn' must be a certificate in {CERTIFICATE_REGION} "
                          f"(CloudFront uses ACM certificates from {CERTIFICATE_REGION} only), not {parts[3]}")


def _check_deployer(arn: str) -> None:
    if ":assumed-role/" in arn:
        raise ConfigError(f"stack config 'deployerArn' must be the role's ARN (arn:aws:iam::<account>:role/<name>), "
                          f"not a session's ({arn}): aws:PrincipalArn, which the backup bucket's policy compares, "
                          f"is the role's")
    if not PRINCIPAL_ARN.match(arn):
        raise ConfigError(f"stack config 'deployerArn' must be an IAM role or user ARN "
                          f"(arn:aws:iam::<account>:role/<name> or :user/<name>), not {arn!r}")


def missing_settings(settings: StackSettings) -> dict[str, str]:
    """Each setting only a person can know that this stack cannot be deployed without and does not
    have, with why and how to set it. With requireHumanSettings: alarmEmail, and corsOrigins when
    browsers upload directly. Always: deployerArn while protectData is true, originalsPublicKey
    when originals are signed. Never: domainName (the CloudFront domain works)."""
    missing = {}
    if settings.protect_data and not settings.deployer_arn:
        missing["deployerArn"] = ("protectData is true: the IAM role (or user) that runs pulumi up and destroy, the "
                                  "only principal the backup bucket's policy lets change its settings and policy; "
                                  "pulumi config set deployerArn arn:aws:iam::<account>:role/<name> (the role, "
                                  "not a session's ARN)")
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


def reserved_concurrency(settings: StackSettings) -> int:
    """Every concurrent execution the stack's functions reserve: `reservedConcurrency` for each of
    resize and backup (-1: none), and `backfillConcurrency` for the backfill function, always."""
    return FUNCTIONS * max(settings.reserved_concurrency, 0) + settings.backfill_concurrency


def required_account_concurrency(settings: StackSettings) -> int:
    """The smallest Lambda concurrency limit an account needs for the functions' reservations."""
    return reserved_concurrency(settings) + UNRESERVED_MINIMUM


def _reservations(settings: StackSettings) -> str:
    backfill = f"'backfillConcurrency' {settings.backfill_concurrency} for the backfill function"
    if settings.reserved_concurrency < 0:
        return backfill
    return (f"'reservedConcurrency' {settings.reserved_concurrency} for each of the resize and backup functions, "
            f"and {backfill},")


def advice(settings: StackSettings) -> list[str]:
    """Settings AWS may still refuse on some accounts, or that weaken a protection: warnings."""
    warnings = []
    needed = required_account_concurrency(settings)
    limit = settings.account_concurrency_limit
    if limit is None:
        warnings.append(
            f"{_reservations(settings)} need an account Lambda concurrency limit of at least {needed} (Lambda "
            f"keeps {UNRESERVED_MINIMUM} unreserved); new accounts start lower. Set 'accountConcurrencyLimit' to "
            f"yours (aws lambda get-account-settings) to check it here, or lower 'reservedConcurrency' (-1 "
            f"reserves none) or 'backfillConcurrency'")
    elif limit < needed:
        warnings.append(
            f"{_reservations(settings)} need an account Lambda concurrency limit of at least {needed} (Lambda "
            f"keeps {UNRESERVED_MINIMUM} unreserved), and 'accountConcurrencyLimit' says {limit}: creating the "
            f"functions would fail. Lower 'reservedConcurrency' or 'backfillConcurrency', or raise the quota first")
    if not settings.deployer_arn:
        warnings.append("no 'deployerArn': the backup bucket's policy denies deleting and unlocking backups to "
                        "everyone, but anyone allowed by IAM may change its settings and policy")
    return warnings
