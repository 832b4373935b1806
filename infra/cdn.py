"""CloudFront in front of both buckets: originals at once, variations as soon as they exist, and
nothing stale (see pipeline/caching.py for the two lifetimes).

- The cache key is the path plus the query string `v` only: a versioned URL is its own object.
- A viewer-response function gives a versioned response VERSIONED_CACHE and leaves an unversioned
  one the origin's Cache-Control (VARIATION_CACHE when the origin sent none). CloudFront does not
  run viewer-response functions on 4xx/5xx responses, so errors go out as S3 sent them.
- The originals' behaviour has its own viewer-response function: the same rule, and an original
  whose stored content type is not an accepted image type goes out as a download. It is a
  function of its own, not a test of the URI in a shared one: CloudFront matches behaviours on
  the normalized path, so a URI test could be dodged by spelling the path differently.
- Every response carries nosniff and CONTENT_SECURITY_POLICY (response headers policy).
- Originals (ORIGINALS_MODES): `public` serves them to anyone at once; `signed` only with a URL
  signed by the key in the stack's key group; `private` never: no origin for the uploads bucket,
  and their path is answered 403 at the edge (a viewer-request function), so it cannot fall
  through to the processed bucket's behaviour either. 403, not 404, on purpose: the path is
  refused whether or not the original exists, and a 404 would claim that there is none.
- Nothing outside `/uploads/images/` is served: the default behaviour's viewer-request function
  (NOT_SERVED_CODE) answers 404 before the cache and any origin, `/` included.
- A key that does not exist answers 404 NoSuchKey: the distribution may list each bucket it serves
  (infra.policies.cloudfront_grants), without which S3 answers it 403 AccessDenied for a missing
  key. 404s are cached at the edge for ERROR_CACHE_SECONDS only, so a variation asked for before it
  exists appears soon after. So are 403s, so that none lingers where S3 still sends one: while a
  bucket policy is not in force yet (a first `pulumi up` puts it after the distribution, whose ARN
  it names).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# The header rules themselves (viewer_response_headers, served_as_image, security_headers, ...)
# live in pipeline.caching, pure, so that the local CDN applies exactly what these functions and
# this policy do; here they become JavaScript and Pulumi resources.
from pipeline.caching import (CONTENT_SECURITY_POLICY, CORS_ALLOWED_HEADERS, CORS_METHODS, DOWNLOAD_CONTENT_TYPE,
                              DOWNLOAD_DISPOSITION, FRAME_OPTIONS, HSTS_MAX_AGE, MEDIA_TYPE_PATTERN,
                              ORIGINAL_IMAGE_TYPES, REFERRER_POLICY, SOURCE_ETAG_HEADER, SPEC_HASH_HEADER,
                              VARIATION_CACHE, VERSION_PARAMETER, VERSIONED_CACHE)

ERROR_CACHE_SECONDS = 5
CACHED_ERRORS = (403, 404)


def _max_age(cache_control: str) -> int:
    return int(re.search(r"max-age=(\d+)", cache_control).group(1))


# What the edge keeps an object for when the origin says nothing (an unversioned variation's
# lifetime) and at most (a versioned one's).
DEFAULT_TTL = _max_age(VARIATION_CACHE)
MAX_TTL = _max_age(VERSIONED_CACHE)


def _viewer_response_code(original: bool) -> str:
    header, versioned, unversioned, parameter, etag, spec = (json.dumps(text) for text in (
        "cache-control", VERSIONED_CACHE, VARIATION_CACHE, VERSION_PARAMETER, SOURCE_ETAG_HEADER, SPEC_HASH_HEADER))
    code = (
        'var crypto = require("crypto");\n'
        "function handler(event) {\n"
        "  var response = event.response, headers = response.headers;\n"
        f"  var version = event.request.querystring[{parameter}], origin = headers[{header}];\n"
        f"  var etag = headers[{etag}], spec = headers[{spec}];\n"
        # a year only for the bytes of the version asked for (pipeline.caching.url_version)
        '  if (version && version.value && etag && spec && crypto.createHash("sha256")\n'
        '      .update(etag.value + "/" + spec.value).digest("hex").substring(0, 12) === version.value) {\n'
        f"    headers[{header}] = {{value: {versioned}}};\n"
        "  } else if (!(origin && origin.value)) {\n"
        f"    headers[{header}] = {{value: {unversioned}}};\n"
        "  }\n")
    if original:
        content_type, disposition, images, download, attachment = (json.dumps(value) for value in (
            "content-type", "content-disposition", list(ORIGINAL_IMAGE_TYPES), DOWNLOAD_CONTENT_TYPE,
            DOWNLOAD_DISPOSITION))
        code += (
            f"  var type = headers[{content_type}];\n"
            f"  var media = type && /{MEDIA_TYPE_PATTERN}/.exec(type.value)[1].toLowerCase();\n"
            f"  if ({images}.indexOf(media) < 0) {{\n"
            f"    headers[{content_type}] = {{value: {download}}};\n"
            f"    headers[{disposition}] = {{value: {attachment}}};\n"
            "  }\n")
    return code + "  return response;\n}\n"


VIEWER_RESPONSE_CODE = _viewer_response_code(original=False)
ORIGINALS_RESPONSE_CODE = _viewer_response_code(original=True)
# The default behaviour: every path the distribution serves is under /uploads/images/, which the
# ordered behaviours match, so whatever reaches this one names nothing, and is answered here, before
# the cache and any origin. It looks at nothing of the request on purpose: there is no URI test to
# dodge. Above all it keeps `/` from S3, which would answer it with a listing of the bucket (the
# distribution may list the buckets it serves, for their 404s).
NOT_SERVED_CODE = (
    "function handler(event) {\n"
    "  return {statusCode: 404, statusDescription: \"Not Found\"};\n"
    "}\n")
# With `originals: private`: every request for an original is answered here, before the cache.
ORIGINALS_DENIED_CODE = (
    "function handler(event) {\n"
    "  return {statusCode: 403, statusDescription: \"Forbidden\"};\n"
    "}\n")

ORIGINALS_PATH = "/uploads/images/original/*"
ORIGINALS_MODES = ("public", "signed", "private")


@dataclass
class CdnArgs:
    uploads_bucket: aws.s3.Bucket
    processed_bucket: aws.s3.Bucket
    price_class: str
    cors_origins: list[str]
    domain_name: str | None = None
    certificate_arn: str | None = None
    originals: str = "public"  # one of ORIGINALS_MODES
    originals_public_key: str | None = None  # PEM; the key signed URLs of originals are checked with


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
                "strict_transport_security": {"access_control_max_age_sec": HSTS_MAX_AGE, "include_subdomains": True,
                                              "override": True},
                "content_type_options": {"override": True},
                "content_security_policy": {"content_security_policy": CONTENT_SECURITY_POLICY, "override": True},
                "frame_options": {"frame_option": FRAME_OPTIONS, "override": True},
                "referrer_policy": {"referrer_policy": REFERRER_POLICY, "override": True},
            },
            # Reads with CORS (an app's fetch of a manifest) from the named origins only; an <img>
            # needs none.
            cors_config={
                "access_control_allow_credentials": False,
                "access_control_allow_headers": {"items": list(CORS_ALLOWED_HEADERS)},
                "access_control_allow_methods": {"items": list(CORS_METHODS)},
                "access_control_allow_origins": {"items": args.cors_origins},
                "origin_override": True,
            } if args.cors_origins else None)

        prefix = f"{pulumi.get_project()}-{pulumi.get_stack()}"  # both names are unique per account
        self.cache_policy = aws.cloudfront.CachePolicy(
            f"{name}-cache-policy", name=f"{prefix}-versioned", opts=child,
            comment=f"Path and ?{VERSION_PARAMETER}= only; no headers, no cookies",
            min_ttl=0, default_ttl=DEFAULT_TTL, max_ttl=MAX_TTL,
            parameters_in_cache_key_and_forwarded_to_origin={
                "cookies_config": {"cookie_behavior": "none"},
                "headers_config": {"header_behavior": "none"},
                "query_strings_config": {"query_string_behavior": "whitelist",
                                         "query_strings": {"items": [VERSION_PARAMETER]}},
                "enable_accept_encoding_gzip": True, "enable_accept_encoding_brotli": True,
            })
        self.viewer_response = aws.cloudfront.Function(
            f"{name}-cache-control", name=f"{prefix}-cache-control", runtime="cloudfront-js-2.0",
            comment=f"Cache-Control: a year with ?{VERSION_PARAMETER}=, else the origin's", publish=True,
            code=VIEWER_RESPONSE_CODE, opts=child)
        self.not_served = aws.cloudfront.Function(
            f"{name}-not-served", name=f"{prefix}-not-served", runtime="cloudfront-js-2.0",
            comment="404 for every path outside /uploads/images/, / included: no request of it reaches S3",
            publish=True, code=NOT_SERVED_CODE, opts=child)

        def behaviour(origin: str, path: str | None = None, function: aws.cloudfront.Function | None = None,
                      event: str = "viewer-response") -> dict:
            result = {"target_origin_id": origin, "viewer_protocol_policy": "redirect-to-https",
                      "allowed_methods": ["GET", "HEAD", "OPTIONS"], "cached_methods": ["GET", "HEAD"],
                      "cache_policy_id": self.cache_policy.id, "response_headers_policy_id": headers.id,
                      "compress": True,
                      "function_associations": [{"event_type": event,
                                                 "function_arn": (function or self.viewer_response).arn}]}
            return {**result, "path_pattern": path} if path else result

        self.originals_key: aws.cloudfront.PublicKey | None = None
        if args.originals == "private":
            denied = aws.cloudfront.Function(
                f"{name}-originals-denied", name=f"{prefix}-originals-denied", runtime="cloudfront-js-2.0",
                comment="originals: private; the CDN never serves an original", publish=True,
                code=ORIGINALS_DENIED_CODE, opts=child)
            # The processed origin is named because a behaviour must name one; the function answers
            # before any origin is asked.
            originals = behaviour("processed", ORIGINALS_PATH, denied, "viewer-request")
        else:
            response = aws.cloudfront.Function(
                f"{name}-originals-response", name=f"{prefix}-originals-response", runtime="cloudfront-js-2.0",
                comment="Cache-Control as for every file; an original that is no accepted image type is a download",
                publish=True, code=ORIGINALS_RESPONSE_CODE, opts=child)
            originals = behaviour("uploads", ORIGINALS_PATH, response)
        if args.originals == "signed":
            # Autonamed (a prefix, not a name): a new key replaces the old one without a name clash.
            # The provider compares the PEM as given, trailing newline included.
            self.originals_key = aws.cloudfront.PublicKey(
                f"{name}-originals-key", name_prefix=f"{prefix}-originals-", opts=child,
                comment="Checks signed URLs of originals", encoded_key=args.originals_public_key.strip() + "\n")
            key_group = aws.cloudfront.KeyGroup(
                f"{name}-originals-key-group", name=f"{prefix}-originals", items=[self.originals_key.id],
                comment="Signers of URLs of originals", opts=child)
            originals["trusted_key_groups"] = [key_group.id]

        certificate = ({"acm_certificate_arn": args.certificate_arn, "ssl_support_method": "sni-only",
                        "minimum_protocol_version": "TLSv1.2_2021"}
                       if args.certificate_arn else {"cloudfront_default_certificate": True})
        self.distribution = aws.cloudfront.Distribution(
            f"{name}-distribution", enabled=True, is_ipv6_enabled=True, http_version="http2and3",
            price_class=args.price_class, aliases=[args.domain_name] if args.domain_name else None,
            comment=f"{pulumi.get_project()} {pulumi.get_stack()}",
            origins=([{"origin_id": "uploads", "domain_name": args.uploads_bucket.bucket_regional_domain_name,
                       "origin_access_control_id": access.id}] if args.originals != "private" else []) + [
                {"origin_id": "processed", "domain_name": args.processed_bucket.bucket_regional_domain_name,
                 "origin_access_control_id": access.id},
            ],
            # First match wins: originals come from the uploads bucket (or nowhere), everything else
            # under uploads/images/ (variations, manifests) from the processed bucket, and any
            # other path from nowhere: the default behaviour names the processed origin because a
            # behaviour must name one, and its function answers 404 before any origin is asked.
            ordered_cache_behaviors=[originals, behaviour("processed", "/uploads/images/*")],
            default_cache_behavior=behaviour("processed", function=self.not_served, event="viewer-request"),
            custom_error_responses=[{"error_code": code, "error_caching_min_ttl": ERROR_CACHE_SECONDS}
                                    for code in CACHED_ERRORS],
            restrictions={"geo_restriction": {"restriction_type": "none"}},
            viewer_certificate=certificate, opts=child)
        self.domain_name = pulumi.Output.from_input(args.domain_name) if args.domain_name \
            else self.distribution.domain_name
        self.register_outputs({"domain_name": self.domain_name})
