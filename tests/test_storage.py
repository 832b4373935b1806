"""The storage adapters on their own: what each call writes, and how S3's answers are read."""

from __future__ import annotations

import os

import boto3
import pytest
from moto import mock_aws

from pipeline.outputs import OutputObject
from pipeline.storage import CdnInvalidator, Conflict, LocalDirectory, S3Store


def test_local_directory_writes_each_object_at_its_key_and_leaves_no_partial_file(tmp_path):
    target = LocalDirectory(tmp_path).put(OutputObject("uploads/images/large/a b/c.jpg", b"pixels", "image/jpeg", "", {}))
    assert target == os.path.join(tmp_path, "uploads", "images", "large", "a b", "c.jpg")
    assert open(target, "rb").read() == b"pixels"
    LocalDirectory(str(tmp_path)).put(OutputObject("uploads/images/large/a b/c.jpg", b"new", "image/jpeg", "", {}))
    assert open(target, "rb").read() == b"new"
    assert sorted(os.listdir(os.path.dirname(target))) == ["c.jpg"]


@pytest.fixture
def s3(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        for bucket in ("bkt", "versioned"):
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
        yield client


def manifest(key="uploads/images/manifest/x.jpg.json", body=b"{}"):
    return OutputObject(key, body, "application/json", "public, max-age=60", {}, "")


def test_put_writes_headers_metadata_and_tags(s3):
    store = S3Store(s3)
    store.put("bkt", OutputObject("k", b"x", "image/webp", "public, max-age=120", {"spec-hash": "abc"}, "t=1"))
    head = s3.head_object(Bucket="bkt", Key="k")
    assert (head["ContentType"], head["CacheControl"], head["Metadata"]) == ("image/webp", "public, max-age=120",
                                                                             {"spec-hash": "abc"})
    assert s3.get_object_tagging(Bucket="bkt", Key="k")["TagSet"] == [{"Key": "t", "Value": "1"}]
    store.put("bkt", OutputObject("untagged", b"x", "image/jpeg", "c", {}))
    assert s3.get_object_tagging(Bucket="bkt", Key="untagged")["TagSet"] == []


def test_a_manifest_is_written_only_over_the_one_read(s3):
    store = S3Store(s3)
    store.put_manifest("bkt", manifest(body=b"1"), replacing=None)
    with pytest.raises(Conflict, match="changed since it was read"):
        store.put_manifest("bkt", manifest(body=b"2"), replacing=None)  # one appeared meanwhile
    etag = s3.head_object(Bucket="bkt", Key="uploads/images/manifest/x.jpg.json")["ETag"].strip('"')
    with pytest.raises(Conflict):
        store.put_manifest("bkt", manifest(body=b"3"), replacing="0" * 32)  # another one was written meanwhile
    store.put_manifest("bkt", manifest(body=b"4"), replacing=etag)
    assert s3.get_object(Bucket="bkt", Key="uploads/images/manifest/x.jpg.json")["Body"].read() == b"4"
    with pytest.raises(Conflict):  # the one read is gone
        store.put_manifest("bkt", manifest(key="gone.json"), replacing=etag)


def test_a_manifest_write_refused_for_another_reason_is_raised_not_taken_for_a_conflict(s3):
    """Only a precondition that failed (or the one read gone) is a conflict, which the round retries
    as lost; anything else (here a bucket that does not exist) is an error the invocation reports."""
    store = S3Store(s3)
    for replacing in (None, "0" * 32):
        with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucket"):
            store.put_manifest("no-such-bucket", manifest(), replacing=replacing)


def test_reading_a_manifest_tells_absent_untrusted_and_trusted(s3):
    store = S3Store(s3)
    assert store.read_manifest("bkt", "none.json") == (None, None)
    s3.put_object(Bucket="bkt", Key="bad.json", Body=b"[]")
    untrusted = store.read_manifest("bkt", "bad.json")
    assert untrusted.manifest is None and untrusted.etag == s3.head_object(Bucket="bkt", Key="bad.json")["ETag"].strip('"')


def test_get_original_reads_the_current_version_and_refuses_big_ones_unread(s3):
    store = S3Store(s3)
    first = s3.put_object(Bucket="versioned", Key="o", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket="versioned", Key="o", Body=b"two!")["VersionId"]
    original = store.get_original("versioned", "o", max_bytes=100)
    assert (original.body, original.size, original.version_id) == (b"two!", 4, second) and first != second
    assert original.etag == s3.head_object(Bucket="versioned", Key="o")["ETag"].strip('"')
    assert store.get_original("versioned", "o", max_bytes=3).body is None
    assert store.get_original("versioned", "o", max_bytes=4).body == b"two!", "the limit itself is allowed"
    assert store.head_original("versioned", "o") == original._replace(body=None), "a HEAD: all but the bytes"
    s3.delete_object(Bucket="versioned", Key="o")
    assert store.get_original("versioned", "o", max_bytes=100) is None, "a delete marker means gone"
    assert store.head_original("versioned", "o") is None
    assert store.get_original("bkt", "never", max_bytes=100) is None


def test_delete_removes_in_batches_of_a_thousand_and_reports_errors(s3, monkeypatch):
    store = S3Store(s3)
    for i in range(3):
        s3.put_object(Bucket="bkt", Key=f"k{i}", Body=b"x")
    calls = []
    real = s3.delete_objects
    monkeypatch.setattr(s3, "delete_objects", lambda **kw: calls.append(len(kw["Delete"]["Objects"])) or real(**kw))
    store.delete("bkt", [f"k{i}" for i in range(1001)] + ["k0"])
    assert calls == [1000, 1] and s3.list_objects_v2(Bucket="bkt").get("KeyCount") == 0
    monkeypatch.setattr(s3, "delete_objects", lambda **kw: {"Errors": [{"Key": "k7", "Code": "AccessDenied",
                                                                          "Message": "no"}]})
    with pytest.raises(RuntimeError, match="deleting s3://bkt/k7 failed: AccessDenied no"):
        store.delete("bkt", ["k7"])


def test_copy_version_copies_that_version_with_its_headers_and_records_it(s3):
    store = S3Store(s3)
    headers = {"ContentType": "image/png", "CacheControl": "no-store", "ContentDisposition": 'inline; filename="o.png"',
               "ContentEncoding": "identity", "ContentLanguage": "fr"}
    old = s3.put_object(Bucket="versioned", Key="o", Body=b"old", Metadata={"who": "me"}, **headers)["VersionId"]
    s3.put_object(Bucket="versioned", Key="o", Body=b"new")
    head = store.copy_version("versioned", "o", old, "bkt")
    assert head["VersionId"] == old
    copy = s3.get_object(Bucket="bkt", Key="o")
    assert copy["Body"].read() == b"old" and {h: copy.get(h) for h in headers} == headers, "restored as uploaded"
    assert copy["Metadata"] == {"who": "me", "source-version-id": old,
                                "source-etag": s3.head_object(Bucket="versioned", Key="o", VersionId=old)["ETag"].strip('"')}
    assert store.backed_up_versions("bkt", "o") == {old}
    assert store.backed_up_versions("bkt", "other") == set()
    doomed = s3.put_object(Bucket="versioned", Key="o", Body=b"brief")["VersionId"]
    s3.delete_object(Bucket="versioned", Key="o", VersionId=doomed)  # deleted for good before the copy
    assert store.copy_version("versioned", "o", doomed, "bkt") is None


def test_invalidation_asks_for_each_changed_path_once_url_encoded():
    sent = []

    class CloudFront:
        def create_invalidation(self, **request):
            sent.append(request)

    CdnInvalidator(CloudFront(), "E1").invalidate(["uploads/images/large/caf\u00e9 1.jpg", "uploads/images/large/caf\u00e9 1.jpg",
                                                   "uploads/images/manifest/a+b.jpg.json"], reference="r1")
    assert sent == [{"DistributionId": "E1", "InvalidationBatch": {
        "Paths": {"Quantity": 2, "Items": ["/uploads/images/large/caf%C3%A9%201.jpg",
                                           "/uploads/images/manifest/a%2Bb.jpg.json"]},
        "CallerReference": "r1"}}]


def test_a_head_error_for_a_version_that_still_exists_is_raised_not_taken_for_gone(s3, monkeypatch):
    from botocore.exceptions import ClientError

    store = S3Store(s3)
    version = s3.put_object(Bucket="versioned", Key="o", Body=b"x")["VersionId"]
    s3.put_object(Bucket="versioned", Key="other", Body=b"y")

    def forbidden(**kwargs):
        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    monkeypatch.setattr(s3, "head_object", forbidden)
    with pytest.raises(ClientError, match="403"):
        store.copy_version("versioned", "o", version, "bkt")
    assert s3.list_objects_v2(Bucket="bkt").get("KeyCount") == 0


def test_a_file_named_like_anothers_temporary_keeps_its_own_bytes(tmp_path):
    directory = LocalDirectory(tmp_path)
    directory.put(OutputObject("uploads/images/large/p.png.partial", b"first", "image/jpeg", "", {}))
    directory.put(OutputObject("uploads/images/large/p.png", b"second", "image/jpeg", "", {}))
    large = tmp_path / "uploads/images/large"
    assert {p.name: p.read_bytes() for p in large.iterdir()} == {"p.png.partial": b"first", "p.png": b"second"}
    assert sorted(os.listdir(tmp_path)) == [".partial", "uploads"], "temporary files stay beside the tree of keys"
    assert os.listdir(tmp_path / ".partial") == [], "and none is left behind"


def test_an_oversized_or_deeply_nested_manifest_is_untrusted_not_a_crash(s3):
    from pipeline.outputs import parse_manifest

    assert parse_manifest(b"[" * 100_000 + b"]" * 100_000) is None
    s3.put_object(Bucket="bkt", Key="big.json", Body=b" " * (1024 * 1024 + 1))
    stored = S3Store(s3).read_manifest("bkt", "big.json")
    assert stored.manifest is None and stored.etag


def test_folder_invalidation_asks_for_one_wildcard_per_folder_in_one_request():
    sent = []

    class CloudFront:
        def create_invalidation(self, **request):
            sent.append(request)

    paths = CdnInvalidator(CloudFront(), "E1").invalidate_folders(
        ["uploads/images/og/", "uploads/images/og.webp", "uploads/images/og/", "uploads/images/caf\u00e9 x/"], reference="r2")
    assert paths == ["/uploads/images/caf%C3%A9%20x/*", "/uploads/images/og.webp/*", "/uploads/images/og/*"]
    assert sent == [{"DistributionId": "E1", "InvalidationBatch": {
        "Paths": {"Quantity": 3, "Items": paths}, "CallerReference": "r2"}}]


def test_local_directory_renames_each_file_into_place_from_beside_its_tree(tmp_path, monkeypatch):
    """The file is written under the root, on the file system of its key, so the rename is atomic."""
    renamed, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: (renamed.append(source), real_replace(source, target))[1])
    target = LocalDirectory(tmp_path).put(OutputObject("uploads/images/large/a.jpg", b"pixels", "image/jpeg", "", {}))
    assert open(target, "rb").read() == b"pixels"
    assert [os.path.dirname(source) for source in renamed] == [str(tmp_path / ".partial")]


def test_local_directory_files_get_the_permissions_of_any_new_file(tmp_path):
    """A web server running as another user can serve `process --out`: not owner-only files."""
    previous = os.umask(0o022)
    try:
        target = LocalDirectory(tmp_path).put(OutputObject("uploads/images/large/a.jpg", b"x", "image/jpeg", "", {}))
    finally:
        os.umask(previous)
    assert os.stat(target).st_mode & 0o777 == 0o644


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt("Ctrl-C")])
def test_a_failed_or_interrupted_local_write_leaves_no_partial_file(tmp_path, monkeypatch, error):
    def full(source, target):
        raise error

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(type(error)):
        LocalDirectory(tmp_path).put(OutputObject("uploads/images/large/a.jpg", b"x", "image/jpeg", "", {}))
    assert os.listdir(tmp_path / ".partial") == []


def test_a_gone_version_is_looked_for_under_its_own_key_not_across_the_bucket(s3):
    """Telling "gone" from a refused HEAD lists the versions of that key only: a bucket holds millions."""
    store = S3Store(s3)
    key = "uploads/images/original/o.jpg"
    version = s3.put_object(Bucket="versioned", Key=key, Body=b"x")["VersionId"]
    s3.put_object(Bucket="versioned", Key=key, Body=b"newer")
    s3.put_object(Bucket="versioned", Key="uploads/images/original/other.jpg", Body=b"y")
    s3.delete_object(Bucket="versioned", Key=key, VersionId=version)
    listed = []
    s3.meta.events.register("provide-client-params.s3.ListObjectVersions",
                            lambda params, **_: listed.append(dict(params)))
    assert store.copy_version("versioned", key, version, "bkt") is None
    assert listed and all(params.get("Prefix") == key for params in listed)
    assert s3.list_objects_v2(Bucket="bkt").get("KeyCount") == 0


def test_a_versioned_backup_bucket_knows_every_upload_version_it_holds(s3):
    """The backup bucket keeps every copy (it is versioned, nothing deletes from it): each copy's
    own version is asked for its source, so an older upload version is not copied again."""
    store = S3Store(s3)
    s3.create_bucket(Bucket="backup", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket="backup", VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket="versioned", Key="o.jpg", Body=b"first")["VersionId"]
    second = s3.put_object(Bucket="versioned", Key="o.jpg", Body=b"second")["VersionId"]
    s3.put_object(Bucket="versioned", Key="o.jpg.extra", Body=b"a longer key under the same prefix")
    for version in (first, second):
        store.copy_version("versioned", "o.jpg", version, "backup")
    store.copy_version("versioned", "o.jpg.extra", None, "backup")
    listed = []
    s3.meta.events.register("provide-client-params.s3.ListObjectVersions",
                            lambda params, **_: listed.append(dict(params)))
    assert store.backed_up_versions("backup", "o.jpg") == {first, second}
    assert listed and all(params.get("Prefix") == "o.jpg" for params in listed), "that key's versions, not the bucket's"


def test_a_bucket_without_versions_has_its_current_object_copied(s3):
    """Tests and the local stack run unversioned buckets: the copy is of the one object there is."""
    store = S3Store(s3)
    s3.put_object(Bucket="bkt", Key="plain.jpg", Body=b"only")
    head = store.copy_version("bkt", "plain.jpg", None, "versioned")
    copy = s3.get_object(Bucket="versioned", Key="plain.jpg")
    assert head is not None and copy["Body"].read() == b"only" and copy["Metadata"]["source-version-id"] == "null"
