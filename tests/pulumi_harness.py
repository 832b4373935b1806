"""Runs the real Pulumi program (__main__.py) under pulumi.runtime.set_mocks for a stack file.

Config comes from Pulumi.yaml's defaults overlaid with Pulumi.<stack>.yaml, as the CLI does.
`preview=False`, so every value is known and no assertion can be skipped by an unknown.
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

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


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict
    outputs: dict


@dataclass
class Deployment:
    resources: list[Registered] = field(default_factory=list)
    exports: dict = field(default_factory=dict)

    def of_type(self, token: str) -> list[Registered]:
        return [r for r in self.resources if r.type == token]

    def named(self, name: str) -> Registered:
        (found,) = [r for r in self.resources if r.name == name]
        return found


class Mocks(pulumi.runtime.Mocks):
    def __init__(self, deployment: Deployment):
        self.deployment = deployment

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
        self.deployment.resources.append(Registered(kind, args.name, dict(args.inputs), outputs))
        return [resource_id, outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDA", "id": ACCOUNT}
        raise AssertionError(f"the program made an unexpected call: {args.token}")


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
    "prod": {"alarmEmail": "ops@example.com", "corsOrigins": json.dumps(["https://www.example.com"]),
             "originalsPublicKey": ORIGINALS_PUBLIC_KEY},
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
    pulumi.runtime.set_mocks(Mocks(deployment), project=PROJECT, stack=stack, preview=False)

    @pulumi.runtime.test
    def program():
        namespace = runpy.run_path(str(ROOT / "__main__.py"), run_name="__pulumi_program__")
        return pulumi.Output.all(**namespace["outputs"]).apply(deployment.exports.update)  # what it exports

    program()
    return deployment
