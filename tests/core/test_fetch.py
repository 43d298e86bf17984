"""Guarded URL fetching against real sockets on loopback only.

Network rule: every connection in this file goes to 127.0.0.0/8 or [::1]. Non-loopback private addresses
appear only in tests whose socket connect is replaced by a recorder that raises, and name lookups never leave
the machine (an autouse fake resolver answers test names and refuses everything but numeric hosts and localhost).
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bgremove.core import fetch
from bgremove.core.errors import BgRemoveError, ImageTooLarge, InvalidOption
from bgremove.core.fetch import FetchPolicy, UrlFetchFailed, UrlRefused, check_url, fetch_url, post_json

MB = 1024 * 1024
LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.1/32"),)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()

Handler = Callable[[socket.socket, bytes, threading.Event], None]


def respond(status: int = 200, body: bytes = PNG, headers: dict[str, str] | None = None) -> Handler:
    """A handler answering one fixed response with an honest Content-Length."""

    def handle(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        head = {"Content-Type": "image/png", "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        conn.sendall(f"HTTP/1.1 {status} X\r\n{lines}\r\n".encode() + body)

    return handle


def raw(data: bytes) -> Handler:
    """A handler sending exactly these bytes, then closing."""

    def handle(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(data)

    return handle


def silent(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
    """Accept, read the request, never answer."""
    stop.wait(10)


class Listener:
    """A loopback TCP server that records every accepted connection and each request, answering with `handler`."""

    def __init__(self, host: str, handler: Handler, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.handler = handler
        self.tls = tls
        self.accepted: list[Any] = []
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:  # close() shut the socket down
                return
            self.accepted.append(peer)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                request += chunk
            length = re.search(rb"(?i)content-length: *(\d+)", request)
            if length:
                while len(request.split(b"\r\n\r\n", 1)[1]) < int(length.group(1)):
                    request += conn.recv(65536)
            self.requests.append(request)
            self.handler(conn, request, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(host: str, handler: Handler = respond(), port: int = 0, tls: ssl.SSLContext | None = None) -> Listener:
        made.append(Listener(host, handler, port, tls))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


class Trap:
    """Listeners on 127.0.0.1 and [::1] sharing one port: whatever spelling leaks through lands here."""

    def __init__(self, make: Callable[..., Listener]) -> None:
        for _attempt in range(20):
            self.v4 = make("127.0.0.1")
            try:
                self.v6 = make("::1", port=self.v4.port)
            except OSError:
                continue
            self.port = self.v4.port
            return
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")

    @property
    def connections(self) -> int:
        return len(self.v4.accepted) + len(self.v6.accepted)


@pytest.fixture
def trap(listen: Callable[..., Listener]) -> Trap:
    return Trap(listen)


class FakeDns:
    """Answers for test names (a list per lookup; the last repeats); numeric hosts and localhost resolve for real."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.calls.append(name)
        if name in self.answers:
            sequence = self.answers[name]
            ips = sequence[min(self.calls.count(name), len(sequence)) - 1]
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port, 0, 0))
                if ":" in ip
                else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
                for ip in ips
            ]
        if name == "localhost":  # /etc/hosts, never the network
            return self.real(host, port, family, type, proto, flags)
        try:
            return self.real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test resolver)") from None


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


class ConnectionAttempted(Exception):
    """Raised by the connect recorder: a refused address must never reach connect()."""


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    attempts: list[Any] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise ConnectionAttempted(repr(args))

    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(socket.socket, "connect_ex", record)
    monkeypatch.setattr(socket, "create_connection", record)
    return attempts


def policy(**overrides: Any) -> FetchPolicy:
    return FetchPolicy(**{"max_bytes": MB, "timeout_seconds": 5.0, **overrides})


# ---------------------------------------------------------------- refusals that never connect


NON_LOOPBACK_REFUSED = [
    ("http://10.0.0.1/a.png", "10.0.0.1 is a private address"),
    ("https://10.0.0.1:8443/a.png", "10.0.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://172.31.255.254/", "172.31.255.254 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://100.64.0.1/", "100.64.0.1 is a shared (carrier-grade NAT) address"),
    ("http://198.18.0.1/", "198.18.0.1 is a private address"),  # benchmark range
    ("http://240.0.0.1/", "240.0.0.1 is a private address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fc00::1]/", "fc00::1 is a private address"),
    ("http://[fd12:3456::1]/", "fd12:3456::1 is a private address"),
    ("http://[fec0::1]/", "fec0::1 is a site-local address"),
    ("http://[2001:db8::1]/", "2001:db8::1 is a private address"),
    ("http://167772161/", "10.0.0.1 (the address of 167772161) is a private address"),
    ("http://0xa9fea9fe/", "169.254.169.254 (the address of 0xa9fea9fe) is a link-local address"),
    ("http://0251.0376.0251.0376/", "169.254.169.254 (the address of 0251.0376.0251.0376) is a link-local"),
    ("http://10.1/", "10.0.0.1 (the address of 10.1) is a private address"),
    ("http://%31%30.0.0.1/", "10.0.0.1 is a private address"),
    ("http://１０.０.０.１/", "10.0.0.1 is a private address"),
    ("http://169.254.169.254./", "169.254.169.254 is a link-local address"),
    ("http://[::ffff:10.0.0.1]/", "::ffff:a00:1 embeds 10.0.0.1, a private address"),
    ("http://[::ffff:a9fe:a9fe]/", "embeds 169.254.169.254, a link-local address"),
    ("http://[::10.0.0.1]/", "embeds 10.0.0.1, a private address"),
    ("http://[64:ff9b::a00:1]/", "embeds 10.0.0.1, a private address"),
    ("http://[2002:a00:1::1]/", "2002:a00:1::1 embeds 10.0.0.1, a private address"),
    ("http://[2002:a9fe:a9fe::]/", "embeds 169.254.169.254, a link-local address"),
    ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "embeds 10.0.0.1, a private address"),  # Teredo client
    ("http://intranet.test/", "10.0.0.5 (the address of intranet.test) is a private address"),
    ("http://mixed.test/", "10.0.0.6 (the address of mixed.test) is a private address"),
]


@pytest.mark.parametrize(("url", "why"), NON_LOOPBACK_REFUSED)
def test_private_addresses_are_refused_without_connecting(url: str, why: str, dns: FakeDns, no_connect: list[Any]) -> None:
    dns.answers["intranet.test"] = [["10.0.0.5"]]
    dns.answers["mixed.test"] = [["127.0.0.1", "10.0.0.6"]]  # one allowed answer does not excuse the other
    vetting = policy(allowed_networks=LOOPBACK_ONLY)
    with pytest.raises(UrlRefused) as refused:
        check_url(url, vetting)
    assert why in refused.value.message
    assert refused.value.message.endswith("; fetching from private networks is disabled")
    assert refused.value.hint == "Set URL_ALLOW_PRIVATE_NETWORKS=true on a LAN deployment, or upload the file instead."
    with pytest.raises(UrlRefused):
        fetch_url(url, vetting)
    with pytest.raises(UrlRefused):
        post_json(url, {"status": "done"}, vetting)
    assert no_connect == []


@pytest.mark.parametrize(
    "url", ["http://224.0.0.1/", "http://[ff02::1]/", "http://[ff0e::1]/", "http://0.0.0.0/", "http://[::]/"]
)
@pytest.mark.parametrize("allow", [False, True])
def test_multicast_and_unspecified_are_refused_even_on_a_lan(url: str, allow: bool, no_connect: list[Any]) -> None:
    with pytest.raises(UrlRefused, match="never a server's address"):
        fetch_url(url, policy(allow_private_networks=allow))
    assert no_connect == []


# ---------------------------------------------------------------- loopback spellings against a live trap


LOOPBACK_SPELLINGS = [
    "localhost",
    "LOCALHOST",
    "localhost.",
    "LOCALHOST.",
    "127.0.0.1",
    "127.0.0.1.",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.1",
    "127.1",
    "127.0.1",
    "017700000001",
    "127.000.000.001",
    "%6c%6f%63%61%6c%68%6f%73%74",
    "%31%32%37.0.0.1",
    "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ",
    "１２７．０．０．１",
    "localhost。",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "[::ffff:7f00:1]",
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_loopback_spellings_are_refused_and_never_connected(spelling: str, trap: Trap) -> None:
    url = f"http://{spelling}:{trap.port}/image.png"
    with pytest.raises(UrlRefused, match="loopback address; fetching from private networks is disabled") as refused:
        fetch_url(url, policy())
    assert refused.value.hint == fetch.PRIVATE_HINT
    with pytest.raises(UrlRefused):
        post_json(url, {"id": 1}, policy())
    with pytest.raises(UrlRefused):
        fetch_url(url.replace("http://", "https://"), policy())
    assert trap.connections == 0


def test_refusal_message_names_the_address_and_the_way_out(trap: Trap) -> None:
    with pytest.raises(UrlRefused) as refused:
        fetch_url(f"http://127.0.0.1:{trap.port}/", policy())
    assert refused.value.message == "127.0.0.1 is a loopback address; fetching from private networks is disabled"
    assert refused.value.hint == "Set URL_ALLOW_PRIVATE_NETWORKS=true on a LAN deployment, or upload the file instead."
    assert isinstance(refused.value, InvalidOption)
    with pytest.raises(UrlRefused) as named:
        check_url(f"http://2130706433:{trap.port}/", policy())
    assert named.value.message.startswith("127.0.0.1 (the address of 2130706433) is a loopback address")
    assert trap.connections == 0


@pytest.mark.parametrize(
    "spelling",
    [
        "localhost",
        "LOCALHOST.",
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "%6c%6f%63%61%6c%68%6f%73%74",
        "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ",
        "１２７．０．０．１",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[0:0:0:0:0:ffff:7f00:1]",
    ],
)
def test_the_same_spellings_work_when_private_networks_are_allowed(spelling: str, trap: Trap) -> None:
    """Proves the refusals above are about the address, not a parse failure: each spelling reaches the trap."""
    assert fetch_url(f"http://{spelling}:{trap.port}/image.png", policy(allow_private_networks=True)) == PNG
    assert trap.connections == 1


def test_allowed_networks_let_one_address_in_and_keep_the_rest_out(trap: Trap) -> None:
    assert fetch_url(f"http://127.0.0.1:{trap.port}/a.png", policy(allowed_networks=LOOPBACK_ONLY)) == PNG
    with pytest.raises(UrlRefused, match="::1 is a loopback address"):
        fetch_url(f"http://[::1]:{trap.port}/a.png", policy(allowed_networks=LOOPBACK_ONLY))
    assert (len(trap.v4.accepted), len(trap.v6.accepted)) == (1, 0)


def test_check_url_reports_the_vetted_addresses(trap: Trap) -> None:
    [address] = check_url(f"http://LocalHost.:{trap.port}/x", policy(allow_private_networks=True))
    assert (address.host, address.port, address.ip) == ("localhost", trap.port, ipaddress.ip_address("127.0.0.1"))
    assert trap.connections == 0


# ---------------------------------------------------------------- scheme, credentials, malformed URLs


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1:{port}/a.png",
        "gopher://127.0.0.1:{port}/_GET",
        "dict://127.0.0.1:{port}/",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "//127.0.0.1:{port}/a.png",
        "127.0.0.1:{port}/a.png",
    ],
)
def test_only_http_and_https_are_fetched(url: str, trap: Trap) -> None:
    for allow in (False, True):
        with pytest.raises(UrlRefused, match="only http and https URLs can be fetched"):
            fetch_url(url.format(port=trap.port), policy(allow_private_networks=allow))
    assert trap.connections == 0


@pytest.mark.parametrize(
    "netloc", ["user:pass@127.0.0.1:{port}", "user@127.0.0.1:{port}", ":@127.0.0.1:{port}", "a%40b:c@localhost:{port}"]
)
def test_credentials_in_the_url_are_refused(netloc: str, trap: Trap) -> None:
    with pytest.raises(UrlRefused, match="user name or password") as refused:
        fetch_url(f"http://{netloc.format(port=trap.port)}/a.png", policy(allow_private_networks=True))
    assert "user:password@" in refused.value.hint
    assert trap.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http:///a.png",
        "http://[::1/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:x/",
        "http://exa mple.test/",
        "http://a..b/",
        "http://127.0.0.1\n.test/",
        "http://local\thost/",
        "http://[not-v6]/",
        "http://127.0.0.1%2f@x/",
        "http://" + "a" * 9000 + "/",
    ],
)
def test_malformed_urls_are_refused(url: str, no_connect: list[Any]) -> None:
    with pytest.raises(UrlRefused):
        fetch_url(url, policy(allow_private_networks=True))
    assert no_connect == []


def test_an_unresolvable_name_fails_without_connecting(no_connect: list[Any]) -> None:
    with pytest.raises(UrlFetchFailed, match=r"nowhere\.test could not be resolved"):
        fetch_url("http://nowhere.test/a.png", policy())
    assert no_connect == []


# ---------------------------------------------------------------- DNS pinning and redirects


def test_the_connection_goes_to_the_address_that_was_vetted(dns: FakeDns, listen: Callable[..., Listener]) -> None:
    """DNS rebinding: a second lookup would say 127.0.0.2 (refused); there must be no second lookup."""
    allowed = listen("127.0.0.1")
    rebound = listen("127.0.0.2", port=allowed.port)
    dns.answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    assert fetch_url(f"http://rebind.test:{allowed.port}/x.png", policy(allowed_networks=LOOPBACK_ONLY)) == PNG
    assert dns.calls == ["rebind.test"]
    assert (len(allowed.accepted), len(rebound.accepted)) == (1, 0)
    assert f"Host: rebind.test:{allowed.port}\r\n".encode() in allowed.requests[0]
    assert allowed.requests[0].startswith(b"GET /x.png HTTP/1.1\r\n")


def test_each_redirect_hop_is_resolved_once_and_vetted_again(dns: FakeDns, listen: Callable[..., Listener]) -> None:
    first = listen("127.0.0.1")
    first.handler = respond(302, b"", {"Location": f"http://rebind.test:{first.port}/final.png"})
    rebound = listen("127.0.0.2", port=first.port)
    dns.answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    with pytest.raises(UrlRefused, match=r"127\.0\.0\.2 \(the address of rebind\.test\) is a loopback address"):
        fetch_url(f"http://rebind.test:{first.port}/start", policy(allowed_networks=LOOPBACK_ONLY))
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert (len(first.accepted), len(rebound.accepted)) == (1, 0)


def test_a_redirect_to_a_refused_address_is_refused(listen: Callable[..., Listener]) -> None:
    target = listen("127.0.0.2")
    start = listen("127.0.0.1", respond(301, b"", {"Location": f"http://127.0.0.2:{target.port}/a.png"}))
    with pytest.raises(UrlRefused, match=r"127\.0\.0\.2 is a loopback address"):
        fetch_url(f"http://127.0.0.1:{start.port}/", policy(allowed_networks=LOOPBACK_ONLY))
    assert (len(start.accepted), len(target.accepted)) == (1, 0)


def test_a_redirect_to_another_scheme_is_refused(listen: Callable[..., Listener]) -> None:
    start = listen("127.0.0.1", respond(302, b"", {"Location": "file:///etc/passwd"}))
    with pytest.raises(UrlRefused, match="not file"):
        fetch_url(f"http://127.0.0.1:{start.port}/", policy(allow_private_networks=True))


def hops(status: int) -> Handler:
    """/hop/N redirects to hop N+1 (alternating root-relative and path-relative Location) until /hop/6 serves the PNG."""

    def handle(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        match = re.match(rb"GET /hop/(\d+) ", request)
        number = int(match.group(1)) if match else -1
        if number >= 6:
            respond()(conn, request, stop)
        else:
            location = f"/hop/{number + 1}" if number % 2 else f"{number + 1}"
            respond(status, b"", {"Location": location})(conn, request, stop)

    return handle


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_relative_redirects_are_followed_up_to_the_limit(status: int, listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", hops(status))
    lan = policy(allow_private_networks=True)
    assert fetch_url(f"http://127.0.0.1:{server.port}/hop/1", lan) == PNG  # 5 redirects
    assert [r.split(b" ")[1] for r in server.requests] == [f"/hop/{n}".encode() for n in range(1, 7)]
    with pytest.raises(UrlFetchFailed, match="redirected more than 5 times"):
        fetch_url(f"http://127.0.0.1:{server.port}/hop/0", lan)  # 6 redirects
    with pytest.raises(UrlFetchFailed, match="redirected more than 0 times"):
        fetch_url(f"http://127.0.0.1:{server.port}/hop/5", policy(allow_private_networks=True, max_redirects=0))


def test_a_redirect_without_location_fails(listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", respond(302, b""))
    with pytest.raises(UrlFetchFailed, match="302 without a Location"):
        fetch_url(f"http://127.0.0.1:{server.port}/", policy(allow_private_networks=True))


# ---------------------------------------------------------------- answers: status, size, time


@pytest.mark.parametrize("status", [404, 403, 500, 502])
def test_non_2xx_answers_fail_with_the_status(status: int, listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", respond(status, b"nope"))
    with pytest.raises(UrlFetchFailed, match=f"the server answered {status}"):
        fetch_url(f"http://127.0.0.1:{server.port}/missing.png", policy(allow_private_networks=True))


def test_a_body_of_exactly_max_bytes_is_accepted(listen: Callable[..., Listener]) -> None:
    body = bytes(range(256)) * 40
    server = listen("127.0.0.1", respond(body=body))
    assert fetch_url(f"http://127.0.0.1:{server.port}/", policy(allow_private_networks=True, max_bytes=len(body))) == body


def test_a_declared_length_above_the_limit_is_refused_before_the_body(listen: Callable[..., Listener]) -> None:
    """Headers promise 1 GB then nothing comes: without the early check this would run into the timeout instead."""
    server = listen(
        "127.0.0.1", lambda c, r, stop: (c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n"), stop.wait(10))
    )
    with pytest.raises(ImageTooLarge, match="larger than the 1 MB limit"):
        fetch_url(f"http://127.0.0.1:{server.port}/", policy(allow_private_networks=True, timeout_seconds=5))


def endless(head: bytes, chunked: bool) -> Handler:
    """Send `head`, then body bytes until the client hangs up."""

    def handle(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(head)
        block = b"x" * 65536
        while not stop.is_set():
            conn.sendall(b"10000\r\n" + block + b"\r\n" if chunked else block)

    return handle


@pytest.mark.parametrize(
    ("head", "chunked"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", False),  # no length at all
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n", True),  # a lying length
    ],
)
def test_an_endless_body_stops_at_max_bytes(head: bytes, chunked: bool, listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", endless(head, chunked))
    with pytest.raises(ImageTooLarge):
        fetch_url(f"http://127.0.0.1:{server.port}/", policy(allow_private_networks=True, max_bytes=200_000))


def test_bytes_beyond_a_declared_length_are_not_read(listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", endless(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", chunked=False))
    assert fetch_url(f"http://127.0.0.1:{server.port}/", policy(allow_private_networks=True)) == b"x" * 100


def test_a_body_shorter_than_its_length_fails(listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + PNG))
    with pytest.raises(UrlFetchFailed, match="closed the connection before the whole file arrived"):
        fetch_url(f"http://127.0.0.1:{server.port}/", policy(allow_private_networks=True))


def trickle(head: bytes, drip: bytes) -> Handler:
    """Send `head`, then one byte of `drip` every 0.1 s for 5 s: each read is quick, the whole is too slow.

    (Bounded so that a fetch without a total deadline fails this test instead of hanging it.)
    """

    def handle(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(head)
        for _ in range(50):
            if stop.wait(0.1):
                return
            conn.sendall(drip)

    return handle


@pytest.mark.parametrize(
    ("handler", "seconds"),
    [
        (silent, 1.0),
        (trickle(b"HTTP/1.1 200 OK\r\n", b"X"), 0.5),  # headers that never end
        (trickle(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"x"), 0.5),  # a body that never ends
    ],
    ids=["silent", "header-trickle", "body-trickle"],
)
def test_the_whole_fetch_has_one_time_limit(handler: Handler, seconds: float, listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", handler)
    with pytest.raises(UrlFetchFailed, match=f"timed out after {seconds:g} s") as failed:
        fetch_url(f"http://127.0.0.1:{server.port}/", policy(allow_private_networks=True, timeout_seconds=seconds))
    assert "try again later" in failed.value.hint


def test_a_closed_port_fails_cleanly(listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1")
    port = server.port
    server.close()
    with pytest.raises(UrlFetchFailed, match="refused the connection"):
        fetch_url(f"http://127.0.0.1:{port}/", policy(allow_private_networks=True))


# ---------------------------------------------------------------- HTTPS: SNI and certificate checks use the name


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def https_server(
    tmp_path: Path, name: str, listen: Callable[..., Listener], monkeypatch: pytest.MonkeyPatch
) -> tuple[Listener, list[str | None]]:
    """A TLS listener on 127.0.0.1 serving a certificate for `name`, which the client is told to trust."""
    cert, key = self_signed(tmp_path, name)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    sni: list[str | None] = []

    def record_sni(sock: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        sni.append(server_name)

    server_context.sni_callback = record_sni
    monkeypatch.setattr(fetch, "_tls_context", lambda: ssl.create_default_context(cafile=str(cert)))
    return listen("127.0.0.1", tls=server_context), sni


def test_https_sends_the_name_and_connects_to_the_pinned_address(
    tmp_path: Path, dns: FakeDns, listen: Callable[..., Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, sni = https_server(tmp_path, "images.test", listen, monkeypatch)
    dns.answers["images.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    assert fetch_url(f"https://images.test:{server.port}/a.png", policy(allowed_networks=LOOPBACK_ONLY)) == PNG
    assert sni == ["images.test"]
    assert dns.calls == ["images.test"]
    assert f"Host: images.test:{server.port}\r\n".encode() in server.requests[0]


def test_https_with_a_certificate_for_another_name_fails(
    tmp_path: Path, dns: FakeDns, listen: Callable[..., Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _sni = https_server(tmp_path, "other.test", listen, monkeypatch)
    dns.answers["images.test"] = [["127.0.0.1"]]
    with pytest.raises(UrlFetchFailed, match=r"TLS certificate of images\.test could not be verified"):
        fetch_url(f"https://images.test:{server.port}/a.png", policy(allowed_networks=LOOPBACK_ONLY))
    assert server.requests == []


# ---------------------------------------------------------------- job callbacks


def test_post_json_sends_one_json_post_and_returns_the_status(listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", respond(201, b"{}"))
    payload = {"job": "abc", "status": "done", "items": 3}
    assert post_json(f"http://localhost:{server.port}/hook?k=1", payload, policy(allow_private_networks=True)) == 201
    [request] = server.requests
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /hook?k=1 HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head + b"\r\n"
    assert json.loads(body) == payload


def test_post_json_reports_errors_and_does_not_follow_redirects(listen: Callable[..., Listener]) -> None:
    elsewhere = listen("127.0.0.1")
    failing = listen("127.0.0.1", respond(500, b"boom"))
    moving = listen("127.0.0.1", respond(307, b"", {"Location": f"http://127.0.0.1:{elsewhere.port}/"}))
    lan = policy(allow_private_networks=True)
    assert post_json(f"http://127.0.0.1:{failing.port}/", {"a": 1}, lan) == 500
    assert post_json(f"http://127.0.0.1:{moving.port}/", {"a": 1}, lan) == 307
    assert elsewhere.accepted == []


def test_post_json_has_the_time_limit(listen: Callable[..., Listener]) -> None:
    server = listen("127.0.0.1", silent)
    with pytest.raises(UrlFetchFailed, match="timed out"):
        post_json(f"http://127.0.0.1:{server.port}/", {}, policy(allow_private_networks=True, timeout_seconds=0.5))


# ---------------------------------------------------------------- the policy itself


@pytest.mark.parametrize("bad", [{"max_bytes": -1}, {"timeout_seconds": 0}, {"max_redirects": -1}])
def test_a_nonsensical_policy_is_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="FetchPolicy needs"):
        policy(**bad)


def test_the_errors_are_core_errors() -> None:
    assert issubclass(UrlRefused, InvalidOption) and issubclass(UrlFetchFailed, BgRemoveError)
    assert not issubclass(UrlFetchFailed, InvalidOption)
