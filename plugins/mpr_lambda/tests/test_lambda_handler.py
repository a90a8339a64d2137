"""The Lambda handlers on their own: chunk sizing, /tmp limits, the single-pass path, idempotent
retries, the callback secret from SSM, signed callbacks, error messages."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import av
import pytest
from mpr_lambda import handler
from mpr_lambda.settings import LambdaSettings

from mpr import callbacks


def test_chunk_length_keeps_each_chunk_well_within_the_timeout() -> None:
    s = LambdaSettings()  # 900 s timeout, planned for 0.5x realtime
    assert handler.chunk_seconds_for(10, 3600, s) == 10
    assert handler.chunk_seconds_for(600, 3600, s) == 225  # half the timeout at the slowest speed
    few = LambdaSettings(max_chunks=50)
    assert handler.chunk_seconds_for(10, 1000, few) == 20  # longer chunks to stay under max_chunks
    with pytest.raises(handler.TooBig, match="within 20 chunks"):
        handler.chunk_seconds_for(10, 10_800, LambdaSettings(max_chunks=20))


def test_error_message_reads_lambda_and_states_errors() -> None:
    cause = json.dumps({"errorMessage": "encode chunk 2 failed: boom", "errorType": "StepFailed"})
    assert handler.error_message({"Error": "StepFailed", "Cause": cause}) == "encode chunk 2 failed: boom"
    assert (
        handler.error_message({"Error": "States.Timeout", "Cause": "took too long"}) == "States.Timeout: took too long"
    )
    assert handler.error_message({"Error": "Lambda.Unknown"}) == "Lambda.Unknown"
    assert "failed" in handler.error_message(None)


@pytest.fixture
def job_env(moto_server, s3_bucket, tmp_path, monkeypatch) -> dict:
    tmp = tmp_path / "lambda-tmp"
    monkeypatch.setenv("MPR_LAMBDA_TMP_DIR", str(tmp))
    job_id = str(uuid.uuid4())
    return {
        "tmp": tmp,
        "job": {
            "job_id": job_id,
            "source_url": f"s3://{s3_bucket}/in/tone.mp3",
            "output_url": f"s3://{s3_bucket}/out/tone-aac.m4a",
            "output_key": "tone-aac.m4a",
            "work_url": f"s3://{s3_bucket}/mpr-work/{job_id}/0/",
            "preset": {
                "name": "aac",
                "container": "m4a",
                "video_codec": None,
                "audio_codec": "aac",
                "audio_bitrate": "96k",
            },
            "trim_start": 0.5,
            "trim_end": 1.5,
            "chunk_seconds": 10.0,
            "callback_url": "http://127.0.0.1:9/api/jobs/x/callback",
        },
    }


def test_single_pass_path_for_audio_and_trims_cleans_tmp_and_is_idempotent(
    job_env, clips, moto_server, s3_bucket, tmp_path
) -> None:
    s3 = moto_server.client("s3")
    s3.upload_file(str(clips["audio"]), s3_bucket, "in/tone.mp3")
    job = job_env["job"]
    planned = handler.plan(job)
    assert planned["items"] == [{"kind": "whole"}] and planned["info"]["mode"] == "whole"
    first = handler.encode_chunk({"job": job, "item": planned["items"][0]})
    again = handler.encode_chunk({"job": job, "item": planned["items"][0]})  # a Map retry
    assert first["reused"] is False and again["reused"] is True and again["url"] == first["url"]
    done = handler.concat({"job": job, "plan": planned, "encoded": [first]})
    assert done["output_key"] == "tone-aac.m4a" and done["size"] > 0
    local = tmp_path / "out.m4a"
    s3.download_file(s3_bucket, "out/tone-aac.m4a", str(local))
    with av.open(str(local)) as c:
        assert not c.streams.video and c.streams.audio[0].codec_context.name == "aac"
        assert abs(c.duration / 1e6 - 1.0) < 0.1  # the 0.5-1.5 s trim
    assert s3.list_objects_v2(Bucket=s3_bucket, Prefix="mpr-work/").get("KeyCount") == 0
    assert list(job_env["tmp"].iterdir()) == []  # /tmp is emptied after every call


def test_source_too_big_for_tmp_is_refused_before_download(job_env, moto_server, s3_bucket, monkeypatch) -> None:
    from mpr_storage_s3.storage import S3Storage

    monkeypatch.setenv("MPR_LAMBDA_TMP_MB", "64")
    moto_server.client("s3").put_object(Bucket=s3_bucket, Key="in/tone.mp3", Body=b"\0" * (30 * 1024 * 1024))
    # read through its presigned URL, /tmp does not bound it (these zeros are no media: the scan says so)
    with pytest.raises(handler.StepFailed, match=r"cannot read .*tone.mp3\?<redacted>") as caught:
        handler.plan(job_env["job"])
    assert not isinstance(caught.value, handler.TooBig) and "Signature" not in str(caught.value)
    with monkeypatch.context() as m:  # no URL: the download would not fit
        m.setattr(S3Storage, "url", lambda self, key, expires=3600: None)
        with pytest.raises(handler.TooBig, match="Lambda /tmp holds 67 MB"):
            handler.plan(job_env["job"])


def test_missing_source_is_reported_by_url(job_env) -> None:
    with pytest.raises(handler.SourceMissing, match=r"s3://.*/in/tone.mp3 does not exist"):
        handler.plan(job_env["job"])


def test_callback_secret_comes_from_ssm_when_not_in_the_environment(moto_server, monkeypatch) -> None:
    name = f"/mpr/test-{uuid.uuid4().hex[:8]}"
    moto_server.client("ssm").put_parameter(Name=name, Value="from-ssm", Type="SecureString")
    monkeypatch.delenv("MPR_CALLBACK_SECRET", raising=False)
    monkeypatch.setenv("MPR_LAMBDA_CALLBACK_SECRET_PARAM", name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.url)
    assert handler.callback_secret() == "from-ssm"
    monkeypatch.delenv("MPR_LAMBDA_CALLBACK_SECRET_PARAM")
    with pytest.raises(handler.StepFailed, match="no callback secret"):
        handler.callback_secret()


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            callbacks.verify(dict(self.headers), body, "hook-secret")
        except Exception as exc:  # noqa: BLE001
            self.send_response(401)
            self.end_headers()
            self.wfile.write(str(exc).encode())
            return
        self.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args) -> None:
        pass


def test_callbacks_are_signed_and_carry_status_output_and_error(monkeypatch) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/api/jobs/j1/callback"
    job = {"job_id": "j1", "callback_url": url, "output_key": "a.mp4"}
    try:
        monkeypatch.setenv("MPR_CALLBACK_SECRET", "hook-secret")
        ok = handler.callback({"job": job, "result": {"output_key": "a.mp4", "size": 5, "chunks": 3}, "execution": "e"})
        assert ok == {"status_code": 200, "response": {"ok": True}}
        cause = json.dumps({"errorMessage": "encode chunk 1 failed: bad", "errorType": "StepFailed"})
        handler.failure({"job": job, "error": {"Error": "StepFailed", "Cause": cause}, "execution": "e"})
        done, failed = _Receiver.received[-2:]
        assert done["status"] == "completed" and done["output_key"] == "a.mp4" and done["metrics"]["chunks"] == 3
        assert len(failed.pop("nonce")) == 32 and done["nonce"] != failed.get("nonce")  # each delivery signed anew
        assert failed == {
            "job_id": "j1",
            "status": "failed",
            "error": "encode chunk 1 failed: bad",
            "metrics": {"execution": "e", "error_type": "StepFailed"},
        }
        monkeypatch.setenv("MPR_CALLBACK_SECRET", "wrong")
        with pytest.raises(handler.CallbackRejected, match="HTTP 401"):
            handler.callback({"job": job, "result": {}, "execution": "e"})
    finally:
        server.shutdown()
    with pytest.raises(handler.CallbackRejected, match="could not reach MPR"):
        handler.post_callback(url, {"status": "completed"}, LambdaSettings(callback_secret="x", callback_timeout=2))
    with pytest.raises(handler.CallbackRejected, match="http"):
        handler.post_callback("file:///etc/passwd", {}, LambdaSettings(callback_secret="x"))


def test_largest_plan_fits_the_step_functions_payload_limit() -> None:
    # Concat's input carries the execution input, the plan and every Map result: it must stay
    # under Step Functions' 256 KB limit even at MPR_LAMBDA_MAX_CHUNKS chunks.
    n = LambdaSettings().max_chunks
    bucket = "s3://" + "b" * 63
    job = {"job_id": str(uuid.uuid4()), "source_url": f"{bucket}/" + "s" * 900, "preset": {"extra": {"x": "y" * 200}}}
    items = [
        {"kind": "video", "index": i, "start": i * 225.04, "end": (i + 1) * 225.04, "frames": 13502} for i in range(n)
    ]
    results = [
        {
            "kind": "video",
            "index": i,
            "url": f"{bucket}/mpr-work/{job['job_id']}/12/chunk_{i:05d}.webm",
            "duration": 225.04,
            "size": 123_456_789,
            "seconds": 431.125,
            "reused": False,
        }
        for i in range(n)
    ]
    payload = {"job": job, "plan": {"items": [*items, {"kind": "audio"}], "info": {"ext": "webm"}}, "encoded": results}
    assert len(json.dumps(payload).encode()) < 256 * 1024
