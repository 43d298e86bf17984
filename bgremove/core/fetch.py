"""Guarded URL fetching: image URLs and job callbacks without server-side request forgery.

Why this shape:
- The host name is resolved exactly once (``socket.getaddrinfo``), every answer is vetted, and the socket is
  connected to a vetted address by us. http.client never sees a name it could resolve again, so a DNS answer
  that changes between the check and the connection (DNS rebinding) cannot steer the request.
- Host header and TLS SNI/certificate checks still use the original name, so virtual hosting and HTTPS work.
- Every redirect is a new URL and goes through the same check from scratch.
- One wall-clock deadline covers resolution, connect, TLS, headers, body and all redirects: each socket read
  and write gets only the time that is left, so a server trickling one byte at a time cannot hold a worker.
- Environment proxies are ignored on purpose: a proxy would connect to the name itself, bypassing the pin.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bgremove import __version__
from bgremove.core.errors import BgRemoveError, ImageTooLarge, UrlFetchFailed, UrlRefused

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from bgremove.core.settings import Settings

__all__ = [
    "FetchPolicy",
    "ResolvedAddress",
    "UrlFetchFailed",
    "UrlRefused",
    "check_url",
    "fetch_url",
    "post_json",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PRIVATE_HINT = "Set URL_ALLOW_PRIVATE_NETWORKS=true on a LAN deployment, or upload the file instead."
USER_AGENT = f"bgremove/{__version__}"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_URL_CHARS = 8192
_CHUNK = 64 * 1024
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: DNS64 puts every IPv4-only site here
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch; built by the door from settings (max_bytes is the upload size limit)."""

    max_bytes: int
    timeout_seconds: float = 20.0  # total wall time for the whole fetch, redirects included
    max_redirects: int = 5
    allow_private_networks: bool = False  # URL_ALLOW_PRIVATE_NETWORKS
    # Extra networks allowed even though they are not public, e.g. one LAN image server; tests use 127.0.0.1/32.
    allowed_networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings, *, max_bytes: int, max_redirects: int = 5) -> FetchPolicy:
        """The URL rules every fetch shares (URL_ALLOW_PRIVATE_NETWORKS, URL_FETCH_TIMEOUT_SECONDS), with its own limits."""
        return cls(
            max_bytes=max_bytes,
            timeout_seconds=settings.url_fetch_timeout_seconds,
            max_redirects=max_redirects,
            allow_private_networks=settings.url_allow_private_networks,
        )

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.max_redirects < 0 or not self.timeout_seconds > 0:
            raise ValueError("FetchPolicy needs max_bytes >= 0, max_redirects >= 0 and timeout_seconds > 0")


@dataclass(frozen=True)
class ResolvedAddress:
    """One vetted address of a URL's host: where the socket goes, and the name Host/SNI carry."""

    host: str  # ASCII host name or IP literal (no brackets, no trailing dot)
    port: int
    ip: IPAddress
    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]


@dataclass(frozen=True)
class _Target:
    """A parsed, vetted URL ready to connect to."""

    tls: bool
    host: str
    port: int
    request_path: str
    addresses: list[ResolvedAddress]


# ---------------------------------------------------------------- public API


def check_url(url: str, policy: FetchPolicy) -> list[ResolvedAddress]:
    """Parse, resolve and vet `url` without connecting; raises UrlRefused (or UrlFetchFailed if unresolvable)."""
    return _vet(url, policy, time.monotonic() + policy.timeout_seconds).addresses


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """GET `url` and return the body, following vetted redirects; at most policy.max_bytes are accepted."""
    deadline = time.monotonic() + policy.timeout_seconds
    current = url
    for _hop in range(policy.max_redirects + 1):
        target = _vet(current, policy, deadline)
        conn = _PinnedConnection(target, deadline)
        try:
            response = _send(conn, target, "GET", None, {"Accept": "image/*, */*;q=0.5"})
            if response.status in REDIRECT_STATUSES:
                location = response.getheader("Location")
                if not location:
                    raise UrlFetchFailed(f"the server answered {response.status} without a Location header")
                current = urllib.parse.urljoin(current, location.strip())
                continue
            if not 200 <= response.status < 300:
                raise UrlFetchFailed(f"the server answered {response.status} {response.reason}".strip())
            return _read_body(response, target, policy)
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc, target, policy, deadline) from exc
        finally:
            conn.close()
    raise UrlFetchFailed(
        f"the URL redirected more than {policy.max_redirects} times",
        hint="Send the final address of the image, or upload the file instead.",
    )


def post_json(url: str, payload: dict[str, Any], policy: FetchPolicy) -> int:
    """POST `payload` as JSON once (job callbacks) and return the status; redirects are not followed.

    A callback is a notification, so a non-2xx answer is the caller's to log, not an error here.
    """
    deadline = time.monotonic() + policy.timeout_seconds
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    target = _vet(url, policy, deadline)
    conn = _PinnedConnection(target, deadline)
    try:
        response = _send(conn, target, "POST", body, {"Content-Type": "application/json"})
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        raise _transport_error(exc, target, policy, deadline) from exc
    finally:
        conn.close()


# ---------------------------------------------------------------- parsing and vetting


def _vet(url: str, policy: FetchPolicy, deadline: float) -> _Target:
    """Everything that decides whether a URL may be fetched; no connection is made here."""
    tls, host, port, request_path = _parse(url)
    infos = _resolve(host, port, deadline)
    addresses: list[ResolvedAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        subject = str(ip) if _same_address(host, ip) else f"{ip} (the address of {host})"
        never = _never_a_server(ip)
        if never is not None:
            raise UrlRefused(
                f"{subject} is {never}; it is never a server's address",
                hint="Use the image server's own name or address, or upload the file instead.",
            )
        problem = _address_problem(ip, policy)
        if problem is not None:
            raise UrlRefused(f"{subject} {problem}; fetching from private networks is disabled", hint=PRIVATE_HINT)
        resolved = ResolvedAddress(host, port, ip, socket.AddressFamily(family), tuple(sockaddr))
        if resolved not in addresses:
            addresses.append(resolved)
    if not addresses:
        raise UrlFetchFailed(f"{host} has no address to connect to")
    return _Target(tls, host, port, request_path, addresses)


def _parse(url: str) -> tuple[bool, str, int, str]:
    """(tls, ascii host, port, request path) of an http(s) URL, or UrlRefused saying what is wrong with it."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    if _CONTROL.search(url):
        raise UrlRefused("the URL contains control characters (tab, newline, ...)")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:  # bad [IPv6] brackets, non-numeric or out-of-range port
        raise UrlRefused(f"the URL cannot be parsed ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused(f"only http and https URLs can be fetched, not {scheme or 'a URL without a scheme'}")
    if "@" in parts.netloc:
        raise UrlRefused(
            "the URL contains a user name or password (user:pass@host); credentials are not sent",
            hint="Remove the user:password@ part, or upload the file instead.",
        )
    if port == 0:
        raise UrlRefused("the URL has port 0")
    host = _normalise_host(parts.hostname or "", bracketed=parts.netloc.startswith("["))
    path = urllib.parse.quote(parts.path or "/", safe="/%!$&'()*+,;=:@-._~")
    if parts.query:
        path += "?" + urllib.parse.quote(parts.query, safe="/?%!$&'()*+,;=:@-._~")
    tls = scheme == "https"
    return tls, host, port if port is not None else (443 if tls else 80), path


def _normalise_host(raw: str, *, bracketed: bool) -> str:
    """Percent-decoded, IDNA-encoded, lower-case host without a trailing dot: the one name we resolve and send."""
    host = urllib.parse.unquote(raw)
    if not host:
        raise UrlRefused("the URL has no host")
    if bracketed:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError as exc:
            raise UrlRefused(f"[{host}] is not an IPv6 address") from exc
    if not host.isascii():
        try:  # IDNA 2003 as browsers map it: fullwidth digits, circled letters and 。 become ASCII here
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UrlRefused(f"{host!r} is not a valid international host name") from exc
    host = host.lower().removesuffix(".")
    if not _HOST_NAME.fullmatch(host):
        raise UrlRefused(f"{host!r} is not a valid host name")
    return host


_dns_pool_lock = threading.Lock()
_dns_pool: ThreadPoolExecutor | None = None


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """getaddrinfo under the deadline: it runs in a small pool because the C call itself cannot time out."""
    global _dns_pool
    with _dns_pool_lock:
        if _dns_pool is None:
            _dns_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bgremove-dns")
    future = _dns_pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        return list(future.result(timeout=max(0.0, deadline - time.monotonic())))
    except TimeoutError as exc:
        future.cancel()
        raise UrlFetchFailed(f"resolving {host} timed out", hint="Try again later, or upload the file instead.") from exc
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlFetchFailed(
            f"the host name {host} could not be resolved", hint="Check the spelling of the URL, or upload the file instead."
        ) from exc


def _never_a_server(ip: IPAddress) -> str | None:
    """Addresses refused even on a LAN: 0.0.0.0 / :: would mean "this machine", multicast is not TCP."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    return None


def _address_problem(ip: IPAddress, policy: FetchPolicy) -> str | None:
    """Why `ip` may not be connected to ("is a loopback address"), or None when the policy allows it."""
    if policy.allow_private_networks or _allowed(ip, policy):
        return None
    inner = _embedded_ipv4(ip)
    if inner is not None:
        if _allowed(inner, policy):
            return None
        label = _non_public(inner)
        if label is not None:
            return f"embeds {inner}, {label}"
        if ip in _IPV4_MAPPED or ip in _IPV4_COMPATIBLE or ip in _NAT64:
            return None  # a pure wrapper of a public IPv4 address (DNS64 answers look like this)
    label = _non_public(ip)
    return None if label is None else f"is {label}"


def _allowed(ip: IPAddress, policy: FetchPolicy) -> bool:
    return any(ip in network for network in policy.allowed_networks)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _non_public(ip: IPAddress) -> str | None:
    """A short description of a non-public address, or None for a public one."""
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in _SHARED_ADDRESS_SPACE:
        return "a shared (carrier-grade NAT) address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:  # fec0::/10: Python calls it global
        return "a site-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def _same_address(host: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(host) == ip
    except ValueError:
        return False


# ---------------------------------------------------------------- the pinned connection


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every read and write gets only the time left before the fetch's deadline."""

    deadline: float | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            self.settimeout(_remaining(self.deadline))

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self._arm()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        self._arm()
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self._arm()
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS twin of _DeadlineSocket (installed through SSLContext.sslsocket_class)."""

    deadline: float | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            self.settimeout(_remaining(self.deadline))

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._arm()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self._arm()
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._arm()
        super().sendall(data, flags)


def _tls_context() -> ssl.SSLContext:
    """The system trust store with hostname checks; a function so tests can trust their own certificate."""
    return ssl.create_default_context()


class _PinnedConnection(http.client.HTTPConnection):
    """http.client speaking to the vetted addresses only; the name is used for Host and SNI, never resolved."""

    def __init__(self, target: _Target, deadline: float) -> None:
        super().__init__(target.host, target.port)
        self.default_port = 443 if target.tls else 80  # Host carries ":port" only when it is not the scheme's default
        self._target = target
        self._deadline = deadline

    def connect(self) -> None:
        last_error: OSError = OSError(f"no address for {self._target.host}")
        for address in self._target.addresses:
            sock = _DeadlineSocket(address.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            try:
                sock.settimeout(_remaining(self._deadline))
                sock.connect(address.sockaddr)
            except OSError as exc:
                sock.close()
                if isinstance(exc, TimeoutError):
                    raise
                last_error = exc
                continue
            sock.deadline = self._deadline
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self._wrap_tls(sock) if self._target.tls else sock
            return
        raise last_error

    def _wrap_tls(self, sock: _DeadlineSocket) -> ssl.SSLSocket:
        context = _tls_context()
        context.sslsocket_class = _DeadlineSSLSocket
        try:
            sock.settimeout(_remaining(self._deadline))  # the handshake gets what is left
            tls_sock = context.wrap_socket(sock, server_hostname=self._target.host)
        except BaseException:
            sock.close()
            raise
        if isinstance(tls_sock, _DeadlineSSLSocket):
            tls_sock.deadline = self._deadline
        return tls_sock


def _send(
    conn: _PinnedConnection, target: _Target, method: str, body: bytes | None, headers: dict[str, str]
) -> http.client.HTTPResponse:
    """One request on a fresh pinned connection; the answer's headers are read, its body is not."""
    conn.request(method, target.request_path, body=body, headers={"User-Agent": USER_AGENT, "Connection": "close", **headers})
    return conn.getresponse()


def _read_body(response: http.client.HTTPResponse, target: _Target, policy: FetchPolicy) -> bytes:
    """The body, refusing early on a Content-Length above the limit and stopping at max_bytes + 1 otherwise."""
    too_large = ImageTooLarge(f"the file at {target.host} is larger than the {policy.max_bytes / 1048576:g} MB limit")
    declared = response.length
    if declared is not None and declared > policy.max_bytes:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = response.read(min(_CHUNK, policy.max_bytes + 1 - total))
        if not chunk:
            if declared is not None and total < declared:  # read(amt) returns b"" at a premature close, no IncompleteRead
                raise http.client.IncompleteRead(b"", declared - total)
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > policy.max_bytes:  # the header lied or was absent (chunked): stop reading right here
            raise too_large


def _transport_error(exc: Exception, target: _Target, policy: FetchPolicy, deadline: float) -> BgRemoveError:
    """Turn socket/TLS/HTTP failures into UrlFetchFailed with a message a person can act on."""
    where = f"{target.host}:{target.port}"
    if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
        return UrlFetchFailed(
            f"fetching from {where} timed out after {policy.timeout_seconds:g} s",
            hint="The server is slow or not answering; try again later, or upload the file instead.",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UrlFetchFailed(
            f"the TLS certificate of {target.host} could not be verified ({exc.verify_message})",
            hint="Use a URL whose certificate is valid, or upload the file instead.",
        )
    if isinstance(exc, ssl.SSLError):
        return UrlFetchFailed(f"the TLS handshake with {where} failed ({exc.reason or exc})")
    if isinstance(exc, ConnectionRefusedError):
        return UrlFetchFailed(f"{where} refused the connection")
    if isinstance(exc, http.client.IncompleteRead):
        return UrlFetchFailed(f"{where} closed the connection before the whole file arrived")
    if isinstance(exc, http.client.HTTPException):
        return UrlFetchFailed(f"{where} did not answer with valid HTTP ({type(exc).__name__})")
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return UrlFetchFailed(f"fetching from {where} failed ({detail})")
