"""The OCPI boundary against hostile or broken peers (issue 18's probes), on real sockets: the
gateway under uvicorn, each peer a raw TCP server on 127.0.0.1 (tests/peers.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from api.ocpi.client import UNUSABLE
from devstack.procs import free_port
from settings import Settings
from tests.ocpi_emsp import FakeEmsp, token_header
from tests.peers import Peer, gzip_bomb, http_response, ocpi_answer, peer
from tests.test_ocpi import new_cpo, serve_gateway

pytestmark = pytest.mark.asyncio(loop_scope="session")
FAILED_DETAIL = f"{UNUSABLE} (OCPI 3001)"


def credentials(url: str, party: str = "EVL") -> dict[str, Any]:
    return {
        "token": "emsp-token-for-the-cpo",
        "url": url,
        "roles": [
            {"role": "EMSP", "party_id": party, "country_code": "NL", "business_details": {"name": "eMSP"}}
        ],
    }


def creds_url(cpo: dict[str, Any]) -> str:
    return str(cpo["ocpi_peer_url"]).replace("/versions", "/2.2.1/credentials")


async def partner_rows(engine: AsyncEngine, cpo_id: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text("SELECT id, status, token_hash FROM ocpp.ocpi_partners WHERE cpo_id = :c"),
                    {"c": int(cpo_id)},
                )
            ).all()
        )


async def register(
    http: httpx.AsyncClient, cpo: dict[str, Any], versions_url: str, token_a: str = "their-token-a"
) -> httpx.Response:
    return await http.post(
        f"/ocpi/cpos/{cpo['cpo_id']}/emsps",
        headers=cpo["bearer"],
        json={"versions_url": versions_url, "token_a": token_a},
        timeout=60,
    )


async def connected(target: Peer, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while target.connections < count:
        assert time.monotonic() < deadline, f"{target.connections} of {count} connections"
        await asyncio.sleep(0.05)


def without_timestamp(response: httpx.Response) -> dict[str, Any]:
    return {k: v for k, v in response.json().items() if k != "timestamp"}


async def test_readyz_as_versions_url_answers_nothing_of_it(
    settings: Settings,
    temporal: WorkflowEnvironment,
    engine: AsyncEngine,
) -> None:
    async with serve_gateway(settings, temporal.client) as gateway:  # loopback allowed (dev)
        readyz = f"{str(gateway.base_url).rstrip('/')}/readyz"
        assert (await gateway.get("/readyz")).json() == {"postgres": "ok", "temporal": "ok"}
        cpo = await new_cpo(gateway)
        answer = await register(gateway, cpo, readyz)
        assert answer.status_code == 422 and answer.json()["code"] == "EMSP_REGISTRATION_FAILED"
        assert answer.json()["detail"] == FAILED_DETAIL
        assert "postgres" not in answer.text and "temporal" not in answer.text
        # an eMSP's token A handshake naming it: the same generic 3001, the token A unspent
        by_emsp = await gateway.post(
            creds_url(cpo), json=credentials(readyz), headers={"Authorization": token_header(cpo["token_a"])}
        )
        assert by_emsp.status_code == 200 and by_emsp.json()["status_code"] == 3001
        assert by_emsp.json()["status_message"] == UNUSABLE and "postgres" not in by_emsp.text
        assert (
            await gateway.get(cpo["ocpi_peer_url"], headers={"Authorization": token_header(cpo["token_a"])})
        ).status_code == 200
        assert await partner_rows(engine, cpo["cpo_id"]) == []

    secure = settings.model_copy(update={"egress_allow": []})
    async with (
        serve_gateway(secure, temporal.client) as gateway,
        peer("answer", http_response(b'{"postgres": "ok", "temporal": "ok"}')) as inside,
    ):
        cpo = await new_cpo(gateway)
        for url in (
            f"{str(gateway.base_url).rstrip('/')}/readyz",
            f"{inside.base}/readyz",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/ocpi/versions",
        ):
            answer = await register(gateway, cpo, url)
            assert answer.status_code == 422 and answer.json()["detail"] == FAILED_DETAIL, url
        assert inside.connections == 0  # refused before connecting
        assert await partner_rows(engine, cpo["cpo_id"]) == []


async def test_a_port_that_answers_and_a_closed_port_are_indistinguishable(
    settings: Settings,
    temporal: WorkflowEnvironment,
) -> None:
    postgres_port = urlsplit(settings.database_url.replace("+psycopg", "")).port
    async with serve_gateway(settings, temporal.client) as gateway, peer("close") as hangs_up:
        cpo = await new_cpo(gateway)
        targets = [
            f"http://127.0.0.1:{postgres_port}/",
            f"http://127.0.0.1:{free_port()}/",
            f"{hangs_up.base}/",
        ]
        answers = [await register(gateway, cpo, url) for url in targets]
        assert {a.status_code for a in answers} == {422}
        assert len({a.text for a in answers}) == 1, [a.text for a in answers]
        ocpi = [
            await gateway.post(
                creds_url(cpo), json=credentials(url), headers={"Authorization": token_header(cpo["token_a"])}
            )
            for url in targets
        ]
        assert {a.status_code for a in ocpi} == {200}
        assert len({str(without_timestamp(a)) for a in ocpi}) == 1


async def test_dripping_handshakes_leave_another_tenants_reads_alone(
    settings: Settings,
    temporal: WorkflowEnvironment,
) -> None:
    """40 handshakes against a peer that sends a byte every 2 s, with a pool of 2 (+2): another
    CPO's reads still answer at once, because no handshake holds a connection while it calls
    out (before: the pool was exhausted and the read answered 503 after the pool timeout)."""
    small = settings.model_copy(
        update={
            "db_pool_size": 2,
            "db_pool_timeout_seconds": 3.0,
            "ocpi_http_timeout_seconds": 8.0,
            "ocpi_handshakes_per_cpo": 64,
            "ocpi_handshakes_per_process": 64,
        }
    )
    async with serve_gateway(small, temporal.client) as gateway, peer("drip", drip_seconds=2) as slow:
        victim, other = await new_cpo(gateway), await new_cpo(gateway)
        body = credentials(f"{slow.base}/ocpi/versions")
        token_a = {"Authorization": token_header(victim["token_a"])}
        handshakes = [
            asyncio.create_task(gateway.post(creds_url(victim), json=body, headers=token_a, timeout=60))
            for _ in range(40)
        ]
        await connected(slow, 35)
        for _ in range(5):
            started = time.monotonic()
            read = await gateway.get(f"/ocpi/cpos/{other['cpo_id']}/locations", headers=other["bearer"])
            assert read.status_code == 200, read.text
            assert time.monotonic() - started < 2.5  # the pool timeout is 3 s: never waited on
        done = await asyncio.wait_for(asyncio.gather(*handshakes), timeout=60)
        assert {r.status_code for r in done} == {200}
        assert {r.json()["status_code"] for r in done} == {3001}
        # the deadline is total: the peer dripped, yet every handshake ended; token A unspent
        assert (await gateway.get(victim["ocpi_peer_url"], headers=token_a)).status_code == 200


async def test_handshakes_are_capped_per_cpo_and_per_process(
    settings: Settings,
    temporal: WorkflowEnvironment,
) -> None:
    capped = settings.model_copy(
        update={
            "ocpi_http_timeout_seconds": 4.0,
            "ocpi_handshakes_per_cpo": 2,
            "ocpi_handshakes_per_process": 3,
        }
    )
    async with serve_gateway(capped, temporal.client) as gateway, peer("drip", drip_seconds=1) as slow:
        first, second, third = await new_cpo(gateway), await new_cpo(gateway), await new_cpo(gateway)
        url = f"{slow.base}/ocpi/versions"
        token_a = {"Authorization": token_header(first["token_a"])}
        running = [
            asyncio.create_task(gateway.post(creds_url(first), json=credentials(url), headers=token_a))
            for _ in range(2)
        ]
        running.append(asyncio.create_task(register(gateway, second, url)))
        await connected(slow, 3)
        over_cpo = await gateway.post(creds_url(first), json=credentials(url), headers=token_a)
        assert over_cpo.status_code == 429 and over_cpo.json()["status_code"] == 2000
        over_process = await register(gateway, third, url)
        assert over_process.status_code == 429 and over_process.json()["code"] == "TOO_MANY_HANDSHAKES"
        assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200, 422]
        assert slow.connections == 3  # the refused ones never called out


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """[baseline, peak] RSS of this process (the gateway runs in it), sampled every 2 ms."""
    me = psutil.Process()
    found = [me.memory_info().rss, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            found[1] = max(found[1], me.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join()


async def test_a_gzip_bomb_leaves_memory_flat(settings: Settings, temporal: WorkflowEnvironment) -> None:
    """Three peers answer 256 MB of zeros gzipped (~250 KB on the wire): inflated by us with a
    bound, the API's memory grows by far less than tens of MB (before: +256 MB a call)."""
    bomb = http_response(gzip_bomb(256 * 1024 * 1024), headers={"Content-Encoding": "gzip"})
    async with serve_gateway(settings, temporal.client) as gateway, peer("answer", bomb) as bomber:
        cpo = await new_cpo(gateway)
        await register(gateway, cpo, f"http://127.0.0.1:{free_port()}/")  # warm the code path
        with peak_rss() as rss:
            answers = await asyncio.gather(
                *(register(gateway, cpo, f"{bomber.base}/ocpi/versions") for _ in range(2))
            )
        assert [a.status_code for a in answers] == [422, 422]
        assert {a.json()["detail"] for a in answers} == {FAILED_DETAIL}
        assert bomber.connections == 2
        grown = (rss[1] - rss[0]) / 1e6
        assert grown < 40, f"RSS grew {grown:.0f} MB"


async def _streamed(counter: list[int], total: int) -> AsyncIterator[bytes]:
    chunk = b" " * 65536
    yield b'{"token": "'
    while counter[0] < total:
        counter[0] += len(chunk)
        yield chunk


@pytest.mark.parametrize("authorized", [False, True])
async def test_a_big_ocpi_body_is_refused_before_it_is_read(
    settings: Settings,
    temporal: WorkflowEnvironment,
    authorized: bool,
) -> None:
    """64 MB streamed (no Content-Length) to the credentials module: without a token 401, with a
    live token A 413, and either way the server took only what socket buffers hold (before: all
    of it was read and parsed before the 401)."""
    async with serve_gateway(settings, temporal.client) as gateway:
        cpo = await new_cpo(gateway)
        headers = {"Content-Type": "application/json"}
        if authorized:
            headers["Authorization"] = token_header(cpo["token_a"])
        counter = [0]
        try:
            response: httpx.Response | None = await gateway.put(
                creds_url(cpo), headers=headers, content=_streamed(counter, 64 * 1024 * 1024), timeout=60
            )
        except httpx.TransportError:  # answered and closed with the body unread: a reset may
            response = None  # reach the client before it reads the answer
        if response is not None:
            assert response.status_code == (413 if authorized else 401), response.text
            assert response.json()["status_code"] == (2000 if authorized else 2001)
        assert counter[0] < 16 * 1024 * 1024, counter[0]  # the server stopped taking it
        # 15 MB declared, nothing sent yet: answered at once from the headers alone
        target = httpx.URL(creds_url(cpo))
        reader, writer = await asyncio.open_connection(target.host, target.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"PUT {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}\r\n{head}"
            f"Content-Length: {15 * 2**20}\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), timeout=30)
        writer.close()
        assert status.split()[1] == (b"413" if authorized else b"401"), status


async def test_ids_that_are_not_ascii_digits_are_4xx(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
) -> None:
    ocpi = {"Authorization": token_header("some-token")}
    for cpo_id in ("%C2%B2", "%D9%A3", "%EF%BC%91", "1%C2%B2"):  # ², Arabic-Indic 3, fullwidth 1
        for method, path in (
            ("GET", f"/ocpi/cpo/{cpo_id}/versions"),
            ("GET", f"/ocpi/cpo/{cpo_id}/2.2.1/locations"),
            ("POST", f"/ocpi/cpo/{cpo_id}/2.2.1/credentials"),
        ):
            response = await app_client.request(method, path, headers=ocpi, json={})
            assert response.status_code == 401, (path, response.text)
            assert response.json()["status_code"] == 2001
        for method, path in (
            ("GET", f"/ocpi/cpos/{cpo_id}/locations"),
            ("GET", f"/ocpi/cpos/{cpo_id}/emsps"),
            ("POST", f"/ocpi/cpos/{cpo_id}/token_a"),
        ):
            response = await app_client.request(method, path, headers=admin)
            assert response.status_code == 422, (path, response.text)


async def test_a_failed_registration_leaves_no_row_and_spends_nothing(
    settings: Settings,
    temporal: WorkflowEnvironment,
    engine: AsyncEngine,
) -> None:
    """The eMSP's credentials answer is a list, or JSON nested 100,000 deep: 422, no row."""

    def routes(answer: bytes, port: int) -> dict[str, bytes]:
        base = f"http://127.0.0.1:{port}"
        versions = [{"version": "2.2.1", "url": f"{base}/ocpi/2.2.1"}]
        endpoints = [
            {"identifier": "credentials", "role": "RECEIVER", "url": f"{base}/ocpi/2.2.1/credentials"}
        ]
        return {
            "/ocpi/versions": http_response(ocpi_answer(versions)),
            "/ocpi/2.2.1": http_response(ocpi_answer({"version": "2.2.1", "endpoints": endpoints})),
            "/credentials": http_response(answer),
        }

    async with serve_gateway(settings, temporal.client) as gateway:
        cpo = await new_cpo(gateway)
        for answer in (ocpi_answer([1, 2, 3]), b'{"data": ' + b"[" * 100_000, ocpi_answer({"token": 5})):
            port = free_port()
            async with peer("routes", routes=routes(answer, port), port=port) as emsp:
                failed = await register(gateway, cpo, f"http://127.0.0.1:{port}/ocpi/versions")
                assert failed.status_code == 422 and failed.json()["detail"] == FAILED_DETAIL, failed.text
                assert emsp.connections == 3  # it got as far as our POST
            assert await partner_rows(engine, cpo["cpo_id"]) == []


async def test_a_party_collision_on_put_is_a_409_not_a_503(
    settings: Settings,
    temporal: WorkflowEnvironment,
) -> None:
    async with serve_gateway(settings, temporal.client) as gateway:
        cpo = await new_cpo(gateway)
        first, second = FakeEmsp("NL", "CO1"), FakeEmsp("NL", "CO2")
        for emsp in (first, second):
            await emsp.start()
        try:
            await first.register(gateway, cpo["token_a"], cpo["ocpi_peer_url"])
            fresh = (
                await gateway.post(
                    f"/ocpi/cpos/{cpo['cpo_id']}/token_a",
                    headers={"Authorization": "Bearer " + settings.admin_token},
                )
            ).json()
            await second.register(gateway, fresh["token_a"], cpo["ocpi_peer_url"])
            assert second.token_to_call_cpo is not None
            second.party_id = "CO1"  # now claims the first one's party
            clash = await gateway.put(
                creds_url(cpo), json=second.credentials(), headers=second.headers(second.token_to_call_cpo)
            )
            assert clash.status_code == 409 and clash.json()["status_code"] == 2001, clash.text
            assert "PostgreSQL" not in clash.text
            # nothing changed: its token still works
            assert (
                await gateway.get(cpo["ocpi_peer_url"], headers=second.headers(second.token_to_call_cpo))
            ).status_code == 200
        finally:
            for emsp in (first, second):
                await emsp.stop()


async def test_token_a_expires_is_listed_and_revoked(
    settings: Settings,
    temporal: WorkflowEnvironment,
) -> None:
    admin = {"Authorization": "Bearer " + settings.admin_token}
    short = settings.model_copy(update={"ocpi_token_a_ttl_seconds": 1.0})
    async with serve_gateway(short, temporal.client) as gateway:
        cpo = await new_cpo(gateway)
        issued = await gateway.post(f"/ocpi/cpos/{cpo['cpo_id']}/token_a", headers=admin)
        assert issued.status_code == 201 and issued.json()["expires_at"] > issued.json()["created_at"]
        listed = await gateway.get(f"/ocpi/cpos/{cpo['cpo_id']}/token_a", headers=admin)
        assert [t["state"] for t in listed.json()] == ["ACTIVE", "ACTIVE"]
        by_cpo = await gateway.get(f"/ocpi/cpos/{cpo['cpo_id']}/token_a", headers=cpo["bearer"])
        assert by_cpo.status_code == 403  # the admin's
        revoked = await gateway.delete(
            f"/ocpi/cpos/{cpo['cpo_id']}/token_a/{issued.json()['token_a_id']}", headers=admin
        )
        assert revoked.status_code == 204
        with_revoked = {"Authorization": token_header(issued.json()["token_a"])}
        assert (await gateway.get(cpo["ocpi_peer_url"], headers=with_revoked)).status_code == 401
        assert (
            await gateway.delete(f"/ocpi/cpos/{cpo['cpo_id']}/token_a/999999999", headers=admin)
        ).status_code == 404
        await asyncio.sleep(1.2)  # the first one's lifetime is over
        first = {"Authorization": token_header(cpo["token_a"])}
        assert (await gateway.get(cpo["ocpi_peer_url"], headers=first)).status_code == 401
        states = [
            t["state"]
            for t in (await gateway.get(f"/ocpi/cpos/{cpo['cpo_id']}/token_a", headers=admin)).json()
        ]
        assert states == ["REVOKED", "EXPIRED"]


async def test_emsps_are_rotated_suspended_unregistered_and_limited(
    settings: Settings,
    temporal: WorkflowEnvironment,
    engine: AsyncEngine,
) -> None:
    one = settings.model_copy(update={"ocpi_max_emsps_per_cpo": 1})
    emsp, other = FakeEmsp("NL", "LC1"), FakeEmsp("NL", "LC2")
    await emsp.start()
    await other.start()
    try:
        async with serve_gateway(one, temporal.client) as gateway:
            cpo = await new_cpo(gateway)
            made = await register(gateway, cpo, f"{emsp.base}/ocpi/versions", emsp.token_a)
            assert made.status_code == 201, made.text
            emsp_id = made.json()["id"]
            over = await register(gateway, cpo, f"{other.base}/ocpi/versions", other.token_a)
            assert over.status_code == 409 and over.json()["code"] == "TOO_MANY_EMSPS"
            # rotation: a credentials PUT to the eMSP; our old token dies, the new one works
            old = emsp.token_to_call_cpo
            assert old is not None
            rotated = await gateway.post(
                f"/ocpi/cpos/{cpo['cpo_id']}/emsps/{emsp_id}/rotate", headers=cpo["bearer"]
            )
            assert rotated.status_code == 200, rotated.text
            new = emsp.token_to_call_cpo
            assert new is not None and new != old and emsp.received[-1].method == "PUT"
            assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(old))).status_code == 401
            assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(new))).status_code == 200
            async with engine.connect() as conn:
                their = (
                    await conn.execute(
                        text("SELECT their_token FROM ocpp.ocpi_partners WHERE id = :i"), {"i": int(emsp_id)}
                    )
                ).scalar_one()
            assert their == emsp.token_for_cpo  # the token it gave back is the one we call it with
            # suspension: its token opens nothing until it is let in again
            path = f"/ocpi/cpos/{cpo['cpo_id']}/emsps/{emsp_id}"
            suspended = await gateway.patch(path, json={"status": "SUSPENDED"}, headers=cpo["bearer"])
            assert suspended.status_code == 200 and suspended.json()["status"] == "SUSPENDED"
            assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(new))).status_code == 401
            back = await gateway.patch(
                path,
                json={"status": "REGISTERED"},
                headers={"Authorization": "Bearer " + settings.admin_token},
            )
            assert back.status_code == 200 and back.json()["status"] == "REGISTERED"
            assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(new))).status_code == 200
            # unregistration: its token is void, and we told it (we had registered with it)
            gone = await gateway.delete(path, headers=cpo["bearer"])
            assert gone.status_code == 204
            assert emsp.received[-1].method == "DELETE"
            assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(new))).status_code == 401
            assert (await gateway.delete(path, headers=cpo["bearer"])).status_code == 204  # idempotent
            listed = (await gateway.get(f"/ocpi/cpos/{cpo['cpo_id']}/emsps", headers=cpo["bearer"])).json()
            assert [e["status"] for e in listed] == ["UNREGISTERED"]
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text("SELECT token_hash, their_token FROM ocpp.ocpi_partners WHERE id = :i"),
                        {"i": int(emsp_id)},
                    )
                ).one()
            assert row.token_hash is None and row.their_token is None
            # the place it held is free again
            again = await register(gateway, cpo, f"{other.base}/ocpi/versions", other.token_a)
            assert again.status_code == 201, again.text
    finally:
        await emsp.stop()
        await other.stop()
