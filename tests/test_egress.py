"""The egress policy (contracts/egress.py) on real loopback sockets: which addresses it refuses,
that it checks the address it connects to (DNS rebinding), no redirects, the total deadline, the
decompressed-byte cap, and one indistinguishable error for every failure."""

from __future__ import annotations

import gzip
import time

import pytest

from contracts import egress
from contracts.egress import LOOPBACK, EgressPolicy, PeerUnusable, check_url, peer_request
from devstack.procs import free_port
from tests.peers import gzip_bomb, http_response, ocpi_answer, peer

ASYNC = pytest.mark.asyncio(loop_scope="session")
SECURE = EgressPolicy.from_entries([])
DEV = EgressPolicy.from_entries(LOOPBACK)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # cloud metadata (link-local)
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",  # RFC 1918
        "127.0.0.1",
        "127.8.9.10",
        "::1",  # loopback
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "0.0.0.0",
        "::",  # unspecified
        "224.0.0.1",
        "239.255.255.250",
        "ff02::1",  # multicast
        "240.0.0.1",
        "255.255.255.255",  # reserved, broadcast
        "100.64.0.1",
        "100.127.255.254",  # shared (CGNAT)
        "fd12:3456::1",
        "fc00::1",  # ULA
        "fe80::1",  # link-local
        "2002:7f00:1::1",
        "64:ff9b::7f00:1",  # 6to4 / NAT64 of 127.0.0.1
        "192.0.2.1",
        "2001:db8::1",  # documentation
    ],
)
def test_inside_addresses_are_refused_by_default(address: str) -> None:
    assert not SECURE.address_allowed(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert SECURE.address_allowed(address)


def test_the_setting_allows_named_networks_and_hosts() -> None:
    policy = EgressPolicy.from_entries(["10.20.0.0/16", "partner.internal.", " ", "fd00::/8"])
    assert policy.address_allowed("10.20.3.4") and policy.address_allowed("::ffff:10.20.3.4")
    assert policy.address_allowed("fd00::5")
    assert not policy.address_allowed("10.21.0.1") and not policy.address_allowed("169.254.169.254")
    assert policy.host_allowed("Partner.Internal") and not policy.host_allowed("other.internal")
    assert DEV.address_allowed("127.0.0.1") and DEV.address_allowed("::1")
    assert not DEV.address_allowed("10.0.0.1") and not DEV.address_allowed("169.254.169.254")
    assert not SECURE.address_allowed("not-an-address")


@ASYNC
async def test_a_named_host_may_resolve_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["192.168.7.7"]

    monkeypatch.setattr(egress, "resolve", resolve)
    assert (
        await egress.checked_address("partner.internal", 443, EgressPolicy.from_entries(["partner.internal"]))
        == "192.168.7.7"
    )
    with pytest.raises(egress._Refused):
        await egress.checked_address("elsewhere.example", 443, SECURE)


@ASYNC
async def test_every_address_of_a_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]  # one public, one inside: refused

    monkeypatch.setattr(egress, "resolve", resolve)
    with pytest.raises(PeerUnusable):
        await check_url("http://mixed.example/ocpi/versions", SECURE)


@ASYNC
async def test_the_connect_time_check_defeats_dns_rebinding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-check sees a public address; at connect time the name points to 127.0.0.1: the
    call is refused and the loopback server never sees a connection."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    monkeypatch.setattr(egress, "resolve", rebinding)
    async with peer("answer", http_response(ocpi_answer([]))) as inside:
        url = f"http://rebind.example:{inside.port}/ocpi/versions"
        await check_url(url, SECURE)  # the public answer passes
        with pytest.raises(PeerUnusable) as refused:
            await peer_request("GET", url, policy=SECURE)
        assert str(refused.value) == PeerUnusable.MESSAGE
        assert inside.connections == 0
        assert asked == ["rebind.example", "rebind.example"]  # resolved again when connecting


@ASYNC
async def test_refusals_are_indistinguishable() -> None:
    """Policy refusal, closed port, a port that hangs up, a non-HTTP and a non-JSON answer, a
    redirect, a bad scheme: the same exception with the same text, nothing of the answer."""
    messages: list[str] = []

    async def failure(url: str, policy: EgressPolicy = DEV, as_json: bool = False) -> None:
        with pytest.raises(PeerUnusable) as err:
            answer = await peer_request("GET", url, policy=policy, deadline_seconds=5)
            if as_json:
                answer.json()
        messages.append(str(err.value))
        assert err.value.__cause__ is None  # nothing of the failure travels with it

    async with peer("answer", http_response(b'{"postgres": "ok"}')) as inside:
        await failure(f"{inside.base}/readyz", SECURE)  # loopback not allowed: refused
        assert inside.connections == 0
    await failure(f"http://127.0.0.1:{free_port()}/")  # closed port
    async with peer("close") as closer:
        await failure(f"{closer.base}/")  # accepted then closed (PostgreSQL-like)
    async with peer("answer", b"\x00\x01garbage not http\r\n\r\n") as garbage:
        await failure(f"{garbage.base}/")
    async with peer("answer", http_response(b"<html>secret internal page</html>")) as html:
        await failure(f"{html.base}/", as_json=True)
    async with peer("redirect", location="http://127.0.0.1:1/") as redirect:
        await failure(f"{redirect.base}/")
    for url in (
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1:9/",
        "not a url",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:9/",
    ):
        await failure(url, SECURE)
    assert set(messages) == {PeerUnusable.MESSAGE} and len(messages) == 12


@ASYNC
async def test_redirects_are_not_followed() -> None:
    async with peer("answer", http_response(ocpi_answer([]))) as target:
        async with peer("redirect", location=f"{target.base}/ocpi/versions") as redirect:
            with pytest.raises(PeerUnusable):
                await peer_request("GET", f"{redirect.base}/ocpi/versions", policy=DEV)
            assert redirect.connections == 1 and target.connections == 0


@ASYNC
async def test_an_allowed_peer_answers_and_gzip_is_inflated() -> None:
    body = ocpi_answer([{"version": "2.2.1", "url": "http://127.0.0.1/x"}])
    packed = http_response(gzip.compress(body), headers={"Content-Encoding": "gzip"})
    async with peer("answer", packed) as ok:
        answer = await peer_request(
            "GET", f"{ok.base}/ocpi/versions", policy=DEV, headers={"Authorization": "Token abc"}
        )
    assert answer.status == 200 and answer.body == body and answer.json()["status_code"] == 1000
    assert b"authorization: Token abc" in ok.requests[0].lower().replace(b"token", b"Token")


@ASYNC
async def test_a_gzip_bomb_is_cut_off_at_the_cap() -> None:
    bomb = gzip_bomb(256 * 1024 * 1024)
    async with peer("answer", http_response(bomb, headers={"Content-Encoding": "gzip"})) as bomber:
        with pytest.raises(PeerUnusable):
            await peer_request("GET", f"{bomber.base}/", policy=DEV, max_bytes=256 * 1024)
    plain = http_response(b"x" * (300 * 1024))  # over the cap without compression
    async with peer("answer", plain) as big:
        with pytest.raises(PeerUnusable):
            await peer_request("GET", f"{big.base}/", policy=DEV, max_bytes=256 * 1024)


@ASYNC
async def test_the_deadline_is_total_not_per_read() -> None:
    """A peer that sends a byte every 0.5 s never trips a per-read timeout; the total does."""
    async with peer("drip", drip_seconds=0.5) as dripping:
        started = time.monotonic()
        with pytest.raises(PeerUnusable):
            await peer_request("GET", f"{dripping.base}/", policy=DEV, deadline_seconds=2)
        assert time.monotonic() - started < 15  # generous: the call ends near 2 s


@ASYNC
async def test_deep_json_is_unusable_not_a_crash() -> None:
    async with peer("answer", http_response(b"[" * 100_000)) as deep:
        answer = await peer_request("GET", f"{deep.base}/", policy=DEV)
        with pytest.raises(PeerUnusable):
            answer.json()
