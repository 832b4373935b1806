"""The CDN's header rules that are not a CloudFront Function's (those are in test_infra.py, run
through node against the functions' code): the security headers and CORS."""

from __future__ import annotations

from pipeline.caching import CONTENT_SECURITY_POLICY, cors_headers, security_headers

APP = "http://127.0.0.1:8000"


def test_every_response_is_inert_unframed_and_https_only():
    assert security_headers() == {
        "strict-transport-security": "max-age=63072000; includeSubDomains",
        "x-content-type-options": "nosniff",
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "x-frame-options": "DENY",
        "referrer-policy": "strict-origin-when-cross-origin",
    }


def test_cors_answers_only_the_configured_origins():
    assert cors_headers(APP, [APP]) == {"access-control-allow-origin": APP}
    assert cors_headers(APP, [APP], preflight=True) == {"access-control-allow-origin": APP,
                                                        "access-control-allow-methods": "GET, HEAD, OPTIONS",
                                                        "access-control-allow-headers": "*"}
    assert cors_headers("http://127.0.0.1:8001", [APP]) == {}
    assert cors_headers(None, [APP]) == {}
    assert cors_headers(APP, []) == {}
