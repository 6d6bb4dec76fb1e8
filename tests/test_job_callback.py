"""The completion callback: a signed POST of the job's final state to a receiver on a real
socket, delivered at least once while the receiver is down for a while, checked with the
documented verification function (docs/api.md)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.worker import Worker

from activities.job_callback import CallbackFailed, CallbackRefused, post_callback
from contracts import egress
from devstack.procs import free_port
from settings import ROOT
from tests.helpers import create_cpo, location, submit, wait_for_job
from tests.peers import http_response, peer


def readme_verifier() -> Callable[[str, bytes, str], bool]:
    """The receiver's check exactly as the docs show it (docs/api.md)."""
    text = (ROOT / "docs" / "api.md").read_text()
    found = re.search(r"```python\n(.*?def verify_ocpplab_signature.*?)```", text, re.S)
    assert found, "docs/api.md shows no verify_ocpplab_signature"
    namespace: dict[str, Any] = {}
    exec(found.group(1), namespace)
    verify: Callable[[str, bytes, str], bool] = namespace["verify_ocpplab_signature"]
    return verify


class Receiver:
    """An ASGI receiver that answers 503 to its first `failures` requests, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = 503 if len(self.requests) < self.failures else 200
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, body, status))
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"receiver's own internal words"})


async def _poll_callback(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 90.0,
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await client.get(url, headers=headers)).json()
        if body.get("callback") and done(body["callback"]):
            return dict(body)
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.2)


async def test_callback_reaches_a_receiver_that_was_down_with_a_valid_signature(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/hooks/ocpplab"
    put = await app_client.put(f"/ocpi/cpos/{cpo_id}/webhook", headers=token, json={"url": hook_url})
    assert put.status_code == 200, put.text
    secret = put.json()["secret"]
    assert secret.startswith("whsec_") and put.json()["url"] == hook_url

    accepted = await submit(app_client, cpo_id, token, [location("Called back")])
    job = await wait_for_job(app_client, accepted["status_url"], token)
    assert job["status"] == "READY"
    # the receiver is down: the first attempt finds nobody listening
    first = await _poll_callback(app_client, accepted["status_url"], token, lambda c: c["attempts"] >= 1)
    assert first["callback"]["delivered_at"] is None
    assert first["callback"]["last_status"].startswith("failed:")

    receiver = Receiver(failures=1)  # then up, answering 503 once
    server = uvicorn.Server(
        uvicorn.Config(receiver, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        done = await _poll_callback(
            app_client, accepted["status_url"], token, lambda c: c["delivered_at"] is not None
        )
    finally:
        server.should_exit = True
        await serving

    callback = done["callback"]
    assert callback["url"] == hook_url and callback["last_status"] == "200"
    assert callback["attempts"] == len(receiver.requests) + 1  # + the one that found nobody
    assert [status for _h, _b, status in receiver.requests] == [503, 200]
    headers, body, _status = receiver.requests[-1]
    event = json.loads(body)
    assert event == {
        "event_id": callback["event_id"],
        "type": "job.completed",
        "job_id": accepted["job_id"],
        "cpo_id": cpo_id,
        "status": "READY",
        "progress": {"total": 1, "succeeded": 1, "failed": 0, "in_progress": 0},
        "ended_at": event["ended_at"],
    }
    assert event["ended_at"].endswith("Z")
    assert event["ended_at"][:19] == job["provisioned_at"][:19]
    # the same event on every delivery: same id, same bytes
    assert {h["ocpplab-event-id"] for h, _b, _s in receiver.requests} == {callback["event_id"]}
    assert {b for _h, b, _s in receiver.requests} == {body}
    assert headers["content-type"] == "application/json"
    verify = readme_verifier()
    assert verify(secret, body, headers["ocpplab-signature"])
    tampered = body.replace(b'"READY"', b'"FAILED"')
    assert tampered != body and not verify(secret, tampered, headers["ocpplab-signature"])
    assert not verify("whsec_other", body, headers["ocpplab-signature"])
    assert "internal words" not in json.dumps(done)  # the receiver's answer is never echoed

    # the webhook: shown without its secret, rotated by a new PUT, removed by DELETE
    hook = (await app_client.get(f"/ocpi/cpos/{cpo_id}/webhook", headers=admin)).json()
    assert hook["url"] == hook_url and "secret" not in hook
    rotated = await app_client.put(f"/ocpi/cpos/{cpo_id}/webhook", headers=admin, json={"url": hook_url})
    assert rotated.json()["secret"] != secret
    _other_id, other = await create_cpo(app_client, admin)
    assert (await app_client.get(f"/ocpi/cpos/{cpo_id}/webhook", headers=other)).status_code == 403
    bad = await app_client.put(f"/ocpi/cpos/{cpo_id}/webhook", headers=token, json={"url": "ftp://x.example"})
    assert bad.status_code == 422
    assert (await app_client.delete(f"/ocpi/cpos/{cpo_id}/webhook", headers=token)).status_code == 204
    assert (await app_client.get(f"/ocpi/cpos/{cpo_id}/webhook", headers=token)).status_code == 404
    unsigned = await app_client.post(
        f"/ocpi/cpos/{cpo_id}/locations",
        headers=token,
        json={"locations": [location("X")], "callback_url": "https://cpo.example.com/hook"},
    )
    assert unsigned.status_code == 422 and unsigned.json()["errors"][0]["type"] == "webhook_not_configured"


async def test_callback_url_reaches_nothing_inside() -> None:
    for url in (
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest",
        "http://[::1]:8000/x",
        "http://localhost/x",
    ):
        with pytest.raises(CallbackRefused):
            await post_callback(url, b"{}", {}, deadline=2, max_bytes=10)
    with pytest.raises(CallbackRefused):
        await post_callback("file:///etc/passwd", b"{}", {}, deadline=2, max_bytes=10, allow_private=True)


async def test_a_callback_url_cannot_be_rebound_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """The callback goes through the OCPI egress policy: a name that resolves to a public
    address when checked and to 127.0.0.1 when connecting reaches nothing."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    monkeypatch.setattr(egress, "resolve", rebinding)
    async with peer("answer", http_response(b"{}")) as inside:
        with pytest.raises(CallbackFailed):
            await post_callback(
                f"http://rebind.example:{inside.port}/hook", b"{}", {}, deadline=5, max_bytes=1024
            )
        assert inside.connections == 0
