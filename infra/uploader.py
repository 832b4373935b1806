"""What an app backend needs to hand a browser an upload: the right to sign presigned POSTs of
originals into the uploads bucket. A managed policy the backend's own role or user attaches and,
when a principal is named (`uploaderRoleTrust`), a role with that policy for it to assume.

The signing code itself is the app's (or pipeline's); the stack exports what it needs: the
policy and role ARNs, the bucket, the key prefix and the pipeline's `max_bytes`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import policies


@dataclass
class UploaderArgs:
    uploads_bucket: aws.s3.Bucket
    trusted_principal: str | None = None  # an AWS principal ARN allowed to assume the role


class Uploader(pulumi.ComponentResource):
    def __init__(self, name: str, args: UploaderArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:Uploader", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"{pulumi.get_project()}-{pulumi.get_stack()}"  # unique per account, like the CDN's names
        self.policy = aws.iam.Policy(
            f"{name}-policy", name=f"{prefix}-sign-uploads", opts=child,
            description="Sign presigned POSTs of originals: s3:PutObject on the uploads bucket's originals prefix only",
            policy=args.uploads_bucket.bucket.apply(lambda bucket: json.dumps(policies.uploader_policy(bucket))))
        self.role: aws.iam.Role | None = None
        if args.trusted_principal:
            self.role = aws.iam.Role(
                f"{name}-role", name=f"{prefix}-uploader", opts=child,
                description="Assumed by the app backend to sign presigned POSTs of originals",
                assume_role_policy=json.dumps(policies.assume_role_by(args.trusted_principal)))
            aws.iam.RolePolicyAttachment(f"{name}-role-policy", role=self.role.name, policy_arn=self.policy.arn,
                                         opts=child)
        self.register_outputs({"policy_arn": self.policy.arn, "role_arn": self.role.arn if self.role else None})
