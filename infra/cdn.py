"""CloudFront in front of both buckets: originals at once, variations as soon as they exist."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"  # AWS managed cache policy


@dataclass
class CdnArgs:
    uploads_bucket: aws.s3.Bucket
    processed_bucket: aws.s3.Bucket
    price_class: str
    cors_origins: list[str]
    domain_name: str | None = None
    certificate_arn: str | None = None


class Cdn(pulumi.ComponentResource):
    def __init__(self, name: str, args: CdnArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("imagepipeline:index:Cdn", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        access = aws.cloudfront.OriginAccessControl(
            f"{name}-oac", name=f"{pulumi.get_project()}-{pulumi.get_stack()}", origin_access_control_origin_type="s3",
            signing_behavior="always", signing_protocol="sigv4", opts=child)
        headers = aws.cloudfront.ResponseHeadersPolicy(
            f"{name}-headers", name=f"{pulumi.get_project()}-{pulumi.get_stack()}-headers", opts=child,
            security_headers_config={
                "strict_transport_security": {"access_control_max_age_sec": 63072000, "include_subdomains": True,
                                              "override": True},
                "content_type_options": {"override": True},
                "frame_options": {"frame_option": "DENY", "override": True},
                "referrer_policy": {"referrer_policy": "strict-origin-when-cross-origin", "override": True},
            },
            cors_config={
                "access_control_allow_credentials": False,
                "access_control_allow_headers": {"items": ["*"]},
                "access_control_allow_methods": {"items": ["GET", "HEAD"]},
                "access_control_allow_origins": {"items": args.cors_origins},
                "origin_override": True,
            })

        def behaviour(origin: str, path: str | None = None) -> dict:
            result = {"target_origin_id": origin, "viewer_protocol_policy": "redirect-to-https",
                      "allowed_methods": ["GET", "HEAD", "OPTIONS"], "cached_methods": ["GET", "HEAD"],
                      "cache_policy_id": CACHING_OPTIMIZED, "response_headers_policy_id": headers.id,
                      "compress": True}
            return {**result, "path_pattern": path} if path else result

        certificate = ({"acm_certificate_arn": args.certificate_arn, "ssl_support_method": "sni-only",
                        "minimum_protocol_version": "TLSv1.2_2021"}
                       if args.certificate_arn else {"cloudfront_default_certificate": True})
        self.distribution = aws.cloudfront.Distribution(
            f"{name}-distribution", enabled=True, is_ipv6_enabled=True, http_version="http2and3",
            price_class=args.price_class, aliases=[args.domain_name] if args.domain_name else None,
            comment=f"{pulumi.get_project()} {pulumi.get_stack()}",
            origins=[
                {"origin_id": "uploads", "domain_name": args.uploads_bucket.bucket_regional_domain_name,
                 "origin_access_control_id": access.id},
                {"origin_id": "processed", "domain_name": args.processed_bucket.bucket_regional_domain_name,
                 "origin_access_control_id": access.id},
            ],
            # First match wins: originals come from the uploads bucket, everything else under
            # uploads/images/ (variations, manifests) from the processed bucket.
            ordered_cache_behaviors=[behaviour("uploads", "/uploads/images/original/*"),
                                     behaviour("processed", "/uploads/images/*")],
            default_cache_behavior=behaviour("processed"),
            restrictions={"geo_restriction": {"restriction_type": "none"}},
            viewer_certificate=certificate, opts=child)
        self.domain_name = pulumi.Output.from_input(args.domain_name) if args.domain_name \
            else self.distribution.domain_name
        self.register_outputs({"domain_name": self.domain_name})
