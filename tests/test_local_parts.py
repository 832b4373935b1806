"""The local stack's parts, each test with a stack of its own: the functions' environment and event,
Lambda's retries and dead letters, and the `image-pipeline local` command (--once, Ctrl-C)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import ROOT
from pipeline import keys, samples
from pipeline.local.runner import event_keys
from pipeline.local.topology import LocalStack, StackError

VARIATIONS = {"large", "medium", "small", "xsmall", "square_medium", "square_small"}


def test_one_stack_per_process():
    with LocalStack():
        with pytest.raises(StackError, match="already runs in this process"):
            LocalStack().start()


def test_the_functions_get_the_stacks_environment_and_nothing_that_leaves_the_machine(monkeypatch):
    monkeypatch.setenv("CDN_DISTRIBUTION_ID", "E2EXAMPLE")
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.com")
    seen = {}

    def resize(event, context):
        seen.update({name: os.environ.get(name) for name in (
            "UPLOADS_BUCKET", "PROCESSED_BUCKET", "BACKUP_BUCKET", "PIPELINE_CONFIG", "CDN_DISTRIBUTION_ID",
            "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")})
        seen["event"] = event
        return {"results": []}

    with LocalStack(functions={"resize": resize}, pipeline_config='{"max_bytes": 1000}') as running:
        running.client("s3").put_object(Bucket=running.buckets["uploads"], Key=keys.original_key("a b.jpg"), Body=b"x")
        assert running.wait_idle(10)
        environment = running.environment()
    assert seen["UPLOADS_BUCKET"] == environment["UPLOADS_BUCKET"] and seen["PIPELINE_CONFIG"] == '{"max_bytes": 1000}'
    assert seen["PROCESSED_BUCKET"] and seen["BACKUP_BUCKET"] and seen["AWS_ENDPOINT_URL"] == environment["AWS_ENDPOINT_URL"]
    assert seen["CDN_DISTRIBUTION_ID"] is None and seen["AWS_PROFILE"] is None and seen["AWS_ENDPOINT_URL_S3"] is None
    (record,) = seen["event"]["Records"]
    assert record["EventSource"] == "aws:sns" and record["EventSubscriptionArn"].startswith(running.topic_arn + ":")
    assert set(record["Sns"]) == {"Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp",
                                  "SignatureVersion", "Signature", "SigningCertUrl", "UnsubscribeUrl",
                                  "MessageAttributes"}
    (s3_record,) = json.loads(record["Sns"]["Message"])["Records"]
    assert s3_record["s3"]["object"]["key"] == "uploads/images/original/a+b.jpg"
    assert s3_record["s3"]["object"]["versionId"] and s3_record["s3"]["object"]["sequencer"]
    # ... and everything is back as it was once the stack stopped.
    assert os.environ["CDN_DISTRIBUTION_ID"] == "E2EXAMPLE" and os.environ["AWS_PROFILE"] == "production"
    assert os.environ["AWS_ENDPOINT_URL_S3"] == "https://s3.example.com" and "UPLOADS_BUCKET" not in os.environ


def test_a_failing_invocation_is_retried_twice_then_dead_lettered():
    calls = []

    def flaky(event, context):  # fails twice, then works: no dead letter
        if not event_keys(event):
            return {"results": []}  # the s3:TestEvent that configuring the notification sends
        calls.append(("flaky", time.monotonic()))
        if len([c for c in calls if c[0] == "flaky"]) < 3:
            raise RuntimeError("S3 slowed down")
        return {"results": []}

    def broken(event, context):
        if not event_keys(event):
            return {"results": []}
        calls.append(("broken", time.monotonic()))
        raise RuntimeError("a plugin broke its contract")

    with LocalStack(functions={"resize": flaky, "backup": broken}, retry_delays=(0.2, 0.4)) as running:
        running.client("s3").put_object(Bucket=running.buckets["uploads"], Key=keys.original_key("x.jpg"), Body=b"x")
        assert running.wait_idle(10)
        letters = list(running.runner.dead_letters)
    flaky_times = [t for name, t in calls if name == "flaky"]
    broken_times = [t for name, t in calls if name == "broken"]
    assert len(flaky_times) == 3 and len(broken_times) == 3
    gaps = [b - a for a, b in zip(broken_times, broken_times[1:])]
    assert 0.2 <= gaps[0] < 0.4 + 0.5 and 0.4 <= gaps[1] < 0.8 + 0.5, gaps  # the back-off
    (letter,) = letters
    assert letter.function == "backup" and letter.attempts == 3 and "a plugin broke its contract" in letter.error
    assert letter.event["Records"][0]["EventSource"] == "aws:sns"
    assert letter.to_dict()["keys"] == ["uploads/images/original/x.jpg"]


def test_an_upload_whose_resize_went_to_the_dead_letters_is_reported_without_waiting(tmp_path, capsys, monkeypatch):
    from pipeline.local import command
    from pipeline.local.topology import _lambda_functions

    handlers = _lambda_functions()
    photo, broken = tmp_path / "a photo é.jpg", tmp_path / "broken+1.jpg"
    photo.write_bytes(samples.jpeg_bytes(samples.photo(90, 60, grain=0)))
    broken.write_bytes(samples.jpeg_bytes(samples.photo(60, 40, grain=0)))

    def resize(event, context):
        if any(key.endswith("broken+1.jpg") for key in event_keys(event)):
            raise RuntimeError("the disk is full")
        return handlers["resize"](event, context)

    def backup(event, context):  # its dead letters name the same keys, but no manifest waits on them
        if event_keys(event):
            raise RuntimeError("the backup bucket is gone")
        return {"results": []}

    # Without the dead letters looked at, this would wait out the whole timeout, then raise.
    monkeypatch.setattr(command, "MANIFEST_TIMEOUT", 30.0)
    with LocalStack(functions={"resize": resize, "backup": backup}, retry_delays=(0.05,)) as running:
        status = command.upload_and_report(running, [str(photo), str(broken)])
    out, err = capsys.readouterr()
    assert status == 1
    assert (f"{broken}: dead letter: the resize function failed 2 times; the last error: RuntimeError: the disk is full"
            in err)
    assert str(photo) not in err and "a photo é.jpg" in out and "(original)" in out  # the other one's table


def test_a_dead_letter_of_an_earlier_version_is_not_the_uploads(tmp_path, capsys, monkeypatch):
    from pipeline.local import command
    from pipeline.local.topology import _lambda_functions

    handlers = _lambda_functions()
    earlier = samples.jpeg_bytes(samples.photo(90, 60, grain=0))
    photo = tmp_path / "x.jpg"
    photo.write_bytes(samples.jpeg_bytes(samples.photo(120, 80, grain=0)))

    def resize(event, context):
        sizes = [record["s3"]["object"].get("size") for message in event["Records"]
                 for record in json.loads(message["Sns"]["Message"]).get("Records", [])]
        if len(earlier) in sizes:
            raise RuntimeError("the earlier version fails")
        time.sleep(1.0)  # the upload's own resize ends after the earlier version's retries
        return handlers["resize"](event, context)

    monkeypatch.setattr(command, "MANIFEST_TIMEOUT", 30.0)
    with LocalStack(functions={"resize": resize, "backup": handlers["backup"]}, retry_delays=(0.3,)) as running:
        running.client("s3").put_object(Bucket=running.buckets["uploads"], Key=keys.original_key("x.jpg"), Body=earlier)
        status = command.upload_and_report(running, [str(photo)])
        letters = list(running.runner.dead_letters)
    out, err = capsys.readouterr()
    assert [letter.function for letter in letters] == ["resize"]  # the earlier version's, during the wait
    assert status == 0, err
    assert "x.jpg" in out and "120x80" in out


def test_an_upload_that_fails_without_a_manifest_or_gets_none_is_reported_beside_the_others(tmp_path, capsys,
                                                                                           monkeypatch):
    from pipeline.local import command
    from pipeline.local.topology import _lambda_functions

    handlers = _lambda_functions()
    good, lost = tmp_path / "good.jpg", tmp_path / "lost.jpg"
    # A path whose original key fits S3's 1024 bytes but whose manifest key would not: the resize
    # fails it without writing anything.
    deep = tmp_path.joinpath(*["d" * 240] * 4) / ("x" * (998 - 4 * 241 - len(".jpg")) + ".jpg")
    deep.parent.mkdir(parents=True)
    for file in (good, lost, deep):
        file.write_bytes(samples.jpeg_bytes(samples.photo(90, 60, grain=0)))

    def resize(event, context):  # lost.jpg's event is taken and nothing is done: no manifest ever
        if any(key.endswith("/lost.jpg") for key in event_keys(event)):
            return {"results": []}
        return handlers["resize"](event, context)

    monkeypatch.setattr(command, "MANIFEST_TIMEOUT", 2.0)
    with LocalStack(functions={"resize": resize, "backup": handlers["backup"]}, retry_delays=(0.05,)) as running:
        status = command.upload_and_report(running, [str(good), str(lost), str(deep)])
    out, err = capsys.readouterr()
    assert status == 1
    assert f"{deep}: failed: the key uploads/images/" in err and "over S3's limit of 1024" in err
    assert f"{lost}: no manifest: none after 2.05 s" in err
    assert "good.jpg" in out and "(original)" in out


def test_a_failed_resize_counts_for_the_version_its_event_names_even_if_it_began_before_the_put_returned():
    """The notification can start the resize before PutObject's response reaches the command; what
    counts is the version the event names, not when the resize began."""
    from types import SimpleNamespace

    from pipeline.local.command import _ended_without_manifest
    from pipeline.local.runner import Attempt

    key = keys.original_key("x.jpg")
    failed = [{"key": key, "outcome": "failed", "reason": "too long"}]
    put_at = 100.0
    this_version = Attempt("resize", "r1", 1, put_at - 0.01, put_at + 0.2, failed, objects=[(key, "v2")])
    earlier_version = Attempt("resize", "r0", 1, put_at - 0.5, put_at - 0.3, failed, objects=[(key, "v1")])
    earlier_retried = Attempt("resize", "r0", 2, put_at + 0.05, put_at + 0.1, failed, objects=[(key, "v1")])
    runner = SimpleNamespace(dead_letters=[], attempts=[earlier_version, earlier_retried])
    expected = {"x.jpg": ("v2", put_at)}
    assert _ended_without_manifest(runner, {key: "x.jpg"}, expected) == {}
    runner.attempts.append(this_version)
    assert _ended_without_manifest(runner, {key: "x.jpg"}, expected) == {
        "x.jpg": ({"status": "failed", "reason": "too long"}, put_at + 0.2)}


def test_the_command_run_in_a_process_gives_back_its_signal_handlers(tmp_path):
    from pipeline.cli import main

    photo = tmp_path / "p.jpg"
    photo.write_bytes(samples.jpeg_bytes(samples.photo(90, 60, grain=0)))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["local", "--upload", str(photo), "--once"]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def local_command(*arguments: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "local", *arguments], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_local_upload_once_prints_the_table_and_exits(tmp_path):
    (tmp_path / "a photo.jpg").write_bytes(samples.jpeg_bytes(samples.photo(900, 600, grain=0)))
    process = local_command("--upload", str(tmp_path / "a photo.jpg"), "--once")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith("  export AWS_ENDPOINT_URL=http://127.0.0.1:") for line in lines)
    assert "  export UPLOADS_BUCKET=image-pipeline-local-uploads" in lines
    header = next(index for index, line in enumerate(lines) if line.startswith("photo "))
    rows = lines[header + 1:header + 8]
    assert rows[0].startswith("a photo.jpg  ") and re.search(r"  \d+\.\d\d s  ", rows[0])
    assert {name for name in VARIATIONS for row in rows[:6] if f" {name} " in row} == VARIATIONS
    assert all("/uploads/images/" in row and "?v=" in row for row in rows[:6])
    assert "(original)" in rows[6] and "900x600" in rows[6]
    assert "local stack stopped" in err


def local_with_slow_resize(seconds: float, *arguments: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "slow_resize_local.py"), str(seconds), *arguments],
                            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def signalled_while_resizing(tmp_path, *signals: signal.Signals) -> tuple[subprocess.Popen, str, str]:
    """`local --upload --once` given `signals` a second apart once its resize has started (and sleeps 6 s)."""
    photo = tmp_path / "p.jpg"
    photo.write_bytes(samples.jpeg_bytes(samples.photo(90, 60, grain=0)))
    process = local_with_slow_resize(6, "--upload", str(photo), "--once")
    watchdog = threading.Timer(120, process.kill)  # a child that never prints must not hang the suite
    watchdog.start()
    try:
        for line in process.stdout:
            if line.startswith("resize started"):
                break
        for number in signals:
            process.send_signal(number)
            time.sleep(1)
        out, err = process.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    return process, out, err


def test_sigterm_while_it_waits_for_the_table_stops_it_once_the_running_resize_ends(tmp_path):
    process, out, err = signalled_while_resizing(tmp_path, signal.SIGTERM)
    assert process.returncode == 130, err
    assert "local stack stopped" in err and "Traceback" not in err
    assert "resize finished" in out and "photo " not in out  # the invocation ended; no table: interrupted


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_while_it_stops_ends_it_at_once(tmp_path, interruptible_children, second):
    process, out, err = signalled_while_resizing(tmp_path, signal.SIGTERM, second)
    assert process.returncode == 130, err
    assert "stop cut short" in err and "Traceback" not in err
    assert "resize finished" not in out and "local stack stopped" not in err


def test_a_file_that_is_a_pipe_is_refused_before_anything_starts(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    process = local_command("--upload", str(tmp_path / "pipe.jpg"), "--once")
    out, err = process.communicate(timeout=60)  # neither opened nor waited on
    assert process.returncode == 2
    assert err.strip() == f"error: {tmp_path / 'pipe.jpg'}: cannot read: not a regular file" and out == ""


def test_a_failed_upload_is_the_exit_code_after_serving(tmp_path):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_bytes(b"this is not a JPEG")
    process = local_command("--upload", str(bad))
    try:
        for line in process.stdout:
            if line.startswith("Serving "):
                break
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert f"{bad}: failed: " in err
    assert process.returncode == 1, err
    assert "local stack stopped" in err and "Traceback" not in err


@pytest.mark.parametrize("name, reason", [("missing.jpg", "No such file or directory"), ("folder", "Is a directory")])
def test_a_file_to_upload_that_cannot_be_read_is_named_before_anything_starts(tmp_path, name, reason):
    (tmp_path / "folder").mkdir()
    process = local_command("--upload", str(tmp_path / name), "--once")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip() == f"error: {tmp_path / name}: cannot read: {reason}" and out == ""


def test_ctrl_c_stops_everything_cleanly(interruptible_children):
    process = local_command()
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Serving "):
                break
        page = next(line.split()[-1] for line in lines if line.strip().startswith("page"))
        assert requests.get(page, timeout=10).status_code == 200
        # What it prints is all a boto3 script in another process needs.
        exports = dict(shlex.split(line.strip().removeprefix("export "))[0].split("=", 1) for line in lines
                       if line.strip().startswith("export "))
        assert json.loads(exports["PIPELINE_CONFIG"])["max_bytes"] == 50 * 1024 * 1024
        script = ("import boto3, os; print(sorted(b['Name'] for b in boto3.client('s3').list_buckets()['Buckets'])"
                  " == sorted([os.environ['UPLOADS_BUCKET'], os.environ['PROCESSED_BUCKET'], os.environ['BACKUP_BUCKET']]))")
        environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        listed = subprocess.run([sys.executable, "-c", script], env={**environment, **exports},
                                capture_output=True, text=True, timeout=60)
        assert listed.stdout.strip() == "True", listed.stderr
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "local stack stopped" in err and "Traceback" not in err
    with pytest.raises(requests.ConnectionError):
        requests.get(page, timeout=5)
