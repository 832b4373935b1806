"""Runs the real Pulumi program (__main__.py) under pulumi.runtime.set_mocks for a stack file.

Config comes from Pulumi.yaml's defaults overlaid with Pulumi.<stack>.yaml, as the CLI does, plus
what the README tells a person to set on that stack before the first `pulumi up` (SET_BY_A_PERSON).
`preview=False`, so every value is known and no assertion can be skipped by an unknown.

Besides each resource's inputs and outputs, the harness records what the engine would receive
with it: its URN, its parent, the resources it depends on (explicit `depends_on` and those its
inputs come from), and its `protect` and `retain_on_delete` options, resolved through the parent
chain as the engine does (the Python SDK fills in `protect` from the parent itself; an unset
`retain_on_delete` is inherited from the parent by the engine). Warnings the program logs
(`pulumi.log.warn`) are kept too.
"""

from __future__ import annotations

import json
import logging
import runpy
import threading
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pulumi
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pulumi.runtime.mocks import MockMonitor

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "image-pipeline"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
CACHE_POLICY_ID = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
DISTRIBUTION_ID = "E2EXAMPLE0CDN"
ORIGINALS_KEY_ID = "K2JCJMDEHXQW5F"  # CloudFront's id of the public key: a signed URL's Key-Pair-Id
KEY_GROUP_ID = "6e1f0c2a-5b7d-4c3e-9a8f-2d4b6c8e0a1f"
# The key pair of signed originals, made once per run as a person would with openssl.
ORIGINALS_PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ORIGINALS_PUBLIC_KEY = ORIGINALS_PRIVATE_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
# Who runs `pulumi up` in these tests: the caller identity the mocks answer, and the stack setting
# that names it (a role deploys; getCallerIdentity answers with its session's ARN).
DEPLOYER_ARN = f"arn:aws:iam::{ACCOUNT}:role/image-pipeline-deployer"
CALLER_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/image-pipeline-deployer/ci"


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict
    outputs: dict
    urn: str = ""
    parent: str = ""  # the parent's URN
    custom: bool = True
    protect: bool | None = None  # as requested; see Deployment.protected
    retain_on_delete: bool | None = None  # as requested; see Deployment.retained
    dependencies: set[str] = field(default_factory=set)  # URNs


@dataclass
class Deployment:
    resources: list[Registered] = field(default_factory=list)
    exports: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def of_type(self, token: str) -> list[Registered]:
        return [r for r in self.resources if r.type == token]

    def named(self, name: str) -> Registered:
        (found,) = [r for r in self.resources if r.name == name]
        return found

    def by_urn(self, urn: str) -> Registered:
        (found,) = [r for r in self.resources if r.urn == urn]
        return found

    def _inherited(self, resource: Registered, option: str) -> bool:
        while resource is not None:
            value = getattr(resource, option)
            if value is not None:
                return value
            resource = next((r for r in self.resources if r.urn == resource.parent), None)
        return False

    def protected(self, resource: Registered) -> bool:
        return self._inherited(resource, "protect")

    def retained(self, resource: Registered) -> bool:
        """Would `pulumi destroy` (or a replacement) leave it in the cloud?"""
        return self._inherited(resource, "retain_on_delete")

    def depends_on(self, resource: Registered, other: Registered) -> bool:
        """Does `resource` depend on `other`, directly or through other resources? Then the engine
        creates it only after `other` exists and deletes it before `other` is deleted."""
        seen, todo = set(), list(resource.dependencies)
        while todo:
            urn = todo.pop()
            if urn == other.urn:
                return True
            if urn not in seen:
                seen.add(urn)
                todo.extend(next((r.dependencies for r in self.resources if r.urn == urn), ()))
        return False


class RecordingMonitor(MockMonitor):
    """The mock monitor, remembering the request being registered so that the mocks can record
    the options the engine would get with it."""

    def __init__(self, mocks: "Mocks"):
        super().__init__(mocks)
        self.current = threading.local()

    def RegisterResource(self, request):
        self.current.request = request
        try:
            return super().RegisterResource(request)
        finally:
            self.current.request = None


class Mocks(pulumi.runtime.Mocks):
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.monitor: RecordingMonitor | None = None

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        physical = args.inputs.get("name") or f"{args.name}-0a1b2c"
        resource_id = f"{args.name}-id"
        kind = args.typ
        if kind == "aws:s3/bucket:Bucket":
            physical = args.inputs.get("bucket") or f"{args.name}-0a1b2c"
            resource_id = physical
            outputs.update(bucket=physical, arn=f"arn:aws:s3:::{physical}",
                           bucketRegionalDomainName=f"{physical}.s3.{REGION}.amazonaws.com")
        elif kind == "aws:sns/topic:Topic":
            outputs.update(arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:{physical}", name=physical)
        elif kind == "aws:sqs/queue:Queue":
            outputs.update(arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{physical}", name=physical,
                           url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}")
        elif kind == "aws:lambda/function:Function":
            outputs.update(arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}", name=physical)
        elif kind == "aws:lambda/layerVersion:LayerVersion":
            outputs.update(arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{args.inputs['layerName']}:1")
        elif kind == "aws:iam/role:Role":
            outputs.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{physical}", name=physical)
            resource_id = physical
        elif kind == "aws:iam/policy:Policy":
            outputs.update(arn=f"arn:aws:iam::{ACCOUNT}:policy/{physical}", name=physical)
        elif kind == "aws:cloudwatch/logGroup:LogGroup":
            outputs.update(arn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}")
        elif kind == "aws:cloudfront/cachePolicy:CachePolicy":
            resource_id = CACHE_POLICY_ID
            outputs.update(etag="E23ZP02F085DFQ")
        elif kind == "aws:cloudfront/function:Function":
            outputs.update(arn=f"arn:aws:cloudfront::{ACCOUNT}:function/{physical}", etag="ETVPDKIKX0DER",
                           liveStageEtag="ETVPDKIKX0DER", status="UNASSOCIATED")
        elif kind == "aws:cloudfront/publicKey:PublicKey":
            resource_id = ORIGINALS_KEY_ID
        elif kind == "aws:cloudfront/keyGroup:KeyGroup":
            resource_id = KEY_GROUP_ID
        elif kind == "aws:cloudfront/distribution:Distribution":
            resource_id = DISTRIBUTION_ID
            outputs.update(arn=f"arn:aws:cloudfront::{ACCOUNT}:distribution/{resource_id}",
                           domainName="d111111abcdef8.cloudfront.net")
        registered = Registered(kind, args.name, dict(args.inputs), outputs, custom=bool(args.custom))
        request = getattr(self.monitor.current, "request", None) if self.monitor else None
        if request is not None:
            registered.urn = self.monitor.make_urn(request.parent, request.type, request.name)
            registered.parent = request.parent
            registered.protect = request.protect if request.HasField("protect") else None
            registered.retain_on_delete = request.retainOnDelete if request.HasField("retainOnDelete") else None
            registered.dependencies = set(request.dependencies) | {
                urn for urns in request.propertyDependencies.values() for urn in urns.urns}
        self.deployment.resources.append(registered)
        return [resource_id, outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": CALLER_ARN, "userId": "AROAEXAMPLE:ci", "id": ACCOUNT}
        raise AssertionError(f"the program made an unexpected call: {args.token}")


class _Warnings(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


_loggers = count()


def stack_config(stack: str) -> dict[str, str]:
    """A stack without a stack file (`pulumi stack init` and nothing set) has the defaults alone."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    values = {f"{PROJECT}:{key}": spec["default"] for key, spec in project["config"].items() if "default" in spec}
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    if stack_file.exists():
        values.update(yaml.safe_load(stack_file.read_text())["config"])
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}


# What a person sets with `pulumi config set` before a stack's first `pulumi up`: the stack files
# ship no value for them (Pulumi.prod.yaml requires them, and `pulumi up` stops without them).
SET_BY_A_PERSON = {
    "prod": {"deployerArn": DEPLOYER_ARN, "alarmEmail": "ops@example.com",
             "corsOrigins": json.dumps(["https://www.example.com"]), "originalsPublicKey": ORIGINALS_PUBLIC_KEY},
    # a new stack without a stack file: protectData is true by default, so it needs a deployer
    "fresh": {"deployerArn": DEPLOYER_ARN},
}


def deploy(stack: str, overrides: dict[str, str] | None = None, *, set_by_a_person: bool = True) -> Deployment:
    """Run the program for Pulumi.<stack>.yaml, with what a person sets on that stack (unless
    `set_by_a_person` is False) and `overrides`, as if set by `pulumi config set`."""
    deployment = Deployment()
    config = stack_config(stack)
    if set_by_a_person:
        config.update({f"{PROJECT}:{key}": value for key, value in SET_BY_A_PERSON.get(stack, {}).items()})
    config.update({f"{PROJECT}:{key}": value for key, value in (overrides or {}).items()})
    pulumi.runtime.set_all_config(config)
    mocks = Mocks(deployment)
    mocks.monitor = RecordingMonitor(mocks)
    logger = logging.getLogger(f"pulumi-harness-{next(_loggers)}")
    logger.propagate = False
    logger.addHandler(_Warnings(deployment.warnings))
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, logger=logger,
                             monitor=mocks.monitor)

    @pulumi.runtime.test
    def program():
        namespace = runpy.run_path(str(ROOT / "__main__.py"), run_name="__pulumi_program__")
        return pulumi.Output.all(**namespace["outputs"]).apply(deployment.exports.update)  # what it exports

    program()
    return deployment
