"""Outbound HTTP, the one way this process calls others: bounded answers, no redirects, timeouts, address policy.

Every call to a partner's access point, an SMP, FaR, a webhook goes through :func:`fetch` (the answer read into
memory up to a limit) or :func:`open_request` (the answer streamed, read with :func:`iter_bounded`), on a
session from :func:`new_session`. What they guarantee:

- **Bounded answers.** A Content-Length past the limit is refused before anything is read; a chunked answer is
  read until the limit and dropped there (:class:`AnswerTooLarge`, with the URL and the limit). The limit counts
  the bytes after Content-Encoding is undone, so a gzip bomb stops at the limit too.
- **No redirects.** ``allow_redirects=False`` always; a 301/302/303/307/308 raises :class:`RedirectRefused`
  (naming the Location, which is never fetched). An AS4 partner, an SMP (its Redirect is a signed document, not
  an HTTP status) and FaR have no reason to send one, and following it would let a partner point this process
  at an internal URL.
- **Timeouts** on the whole call (``total``) and on connecting; a caller's ``timeout`` replaces the session's.
- **Address policy at connect time.** The session's socket factory sees the very address each connection goes
  to, after DNS, and refuses what the :class:`AddressPolicy` in force refuses (loopback, private, link-local ...
  unless allowed). Checking there, rather than resolving the name beforehand, leaves no window for DNS
  rebinding: what was checked is what is connected to. A session has a default policy; ``fetch`` and
  ``open_request`` may narrow it for one request (an endpoint found through discovery, on the session that
  also serves the P-Modes' fixed partners), through a context variable the socket factory reads.

Every failure is an ``aiohttp.ClientError`` (a refused address arrives as ``ClientConnectorError`` naming it),
so a caller's one ``except (aiohttp.ClientError, TimeoutError)`` covers them all.

- **Trace context.** The current trace goes along as W3C ``traceparent`` (``tracing.inject``) unless the caller
  says ``trace=False``: the access point passes its ``tracing.partners`` setting when it posts to an AS4 partner.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from accesspoint.servicekit.tracing import TRACE_HEADERS, inject

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REDIRECTS = frozenset({301, 302, 303, 307, 308})
READ_CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0  # seconds; a partner that does not even accept the connection in that time is down


class AnswerTooLarge(aiohttp.ClientPayloadError):
    """The answer is larger than the caller's limit; what was read is dropped, the connection closed."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(f"the answer from {url} is larger than {limit} bytes")
        self.url = url
        self.limit = limit


class RedirectRefused(aiohttp.ClientResponseError):
    """The answer is an HTTP redirect, which is not followed (its Location is never fetched)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        location = response.headers.get("Location", "")[:200]
        super().__init__(
            response.request_info,
            response.history,
            status=response.status,
            message=f"HTTP {response.status} redirect to {location!r} not followed",
            headers=response.headers,
        )
        self.location = location


class AddressRefused(OSError):
    """A connection to an address the policy refuses (raised in the socket factory, before connecting)."""

    def __init__(self, reason: str) -> None:
        # As (errno, strerror): aiohttp's ClientConnectorError shows the strerror.
        super().__init__(errno.EACCES, reason)


class UrlRefused(ValueError):
    """A URL the policy refuses before any connection: its scheme, or an address written in it."""


# ------------------------------------------------------------------------------------------ address policy


def _ip(value: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel
    return address


def _kind(address: IpAddress) -> str | None:
    """Why an address is not a public unicast one (loopback, private, ...), or None when it is."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"  # shared address space (100.64/10), documentation ranges, 6to4 relays ...
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses and URL schemes outbound calls may use.

    Public unicast addresses are always allowed; the others (loopback, RFC 1918 / ULA private, link-local,
    shared, reserved, multicast) only inside ``allowed_networks``. ``allow_http`` admits plain-http URLs
    (checked by :meth:`check_url`, not at connect time).
    """

    allowed_networks: tuple[IpNetwork, ...] = ()
    allow_http: bool = False

    def refusal(self, address: IpAddress) -> str | None:
        """Why ``address`` is refused, or None when it may be connected to."""
        kind = _kind(address)
        if kind is None or any(address in network for network in self.allowed_networks):
            return None
        return f"{address} is a {kind} address, which this policy refuses"

    def check_url(self, url: str, what: str = "URL") -> None:
        """UrlRefused unless ``url`` is https (or http where allowed) with a host not refused as written."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise UrlRefused(f"{what} {url[:200]!r} is not a URL") from None
        scheme = parts.scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            wanted = "http(s)" if self.allow_http else "https"
            raise UrlRefused(f"{what} {url[:200]!r} is not {wanted}")
        if not host:
            raise UrlRefused(f"{what} {url[:200]!r} has no host")
        address = _ip(host)
        refusal = None if address is None else self.refusal(address)
        if refusal is not None:
            raise UrlRefused(f"{what} {url[:200]!r}: {refusal}")


ALLOW_ALL = AddressPolicy(
    allowed_networks=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")), allow_http=True
)

# The policy of the request being made, where the caller narrowed the session's (see the module docstring).
_request_policy: contextvars.ContextVar[AddressPolicy | None] = contextvars.ContextVar("request_policy", default=None)


class _GuardedSockets:
    """An aiohttp socket factory: a plain socket, unless the policy in force refuses the address."""

    def __init__(self, default: AddressPolicy) -> None:
        self.default = default

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _name, sockaddr = addr_info
        policy = _request_policy.get() or self.default
        address = _ip(str(sockaddr[0]))
        refusal = "an address that is not IP" if address is None else policy.refusal(address)
        if refusal is not None:
            raise AddressRefused(f"not connecting to {sockaddr[0]}: {refusal}")
        return socket.socket(family=family, type=kind, proto=proto)


# ------------------------------------------------------------------------------------------------ sessions


def client_timeout(total: float) -> aiohttp.ClientTimeout:
    """A whole-call timeout of ``total`` seconds, connecting within min(total, CONNECT_TIMEOUT)."""
    return aiohttp.ClientTimeout(total=total, connect=min(total, CONNECT_TIMEOUT))


def stall_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """For answers of unknown size (a pulled message may be gigabytes): no whole-call limit, but the call fails once
    ``seconds`` pass without a byte, and connecting must succeed within min(seconds, CONNECT_TIMEOUT)."""
    return aiohttp.ClientTimeout(total=None, connect=min(seconds, CONNECT_TIMEOUT), sock_read=seconds)


def _request_timeout(
    session: aiohttp.ClientSession, timeout: float | aiohttp.ClientTimeout | None
) -> aiohttp.ClientTimeout:
    # The session's own when None, given explicitly: aiohttp takes ``timeout=None`` as "no timeout at all".
    if timeout is None:
        return session.timeout
    return timeout if isinstance(timeout, aiohttp.ClientTimeout) else client_timeout(timeout)


def new_session(
    *,
    timeout: float,
    addresses: AddressPolicy = ALLOW_ALL,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    limit: int = 100,
) -> aiohttp.ClientSession:
    """A session whose connections go only where ``addresses`` allows (narrowed per request where asked).

    ``ssl_context`` is the TLS client context (trust, client certificate); None means the system's defaults.
    """
    connector = aiohttp.TCPConnector(
        limit=limit,
        ssl=ssl_context if ssl_context is not None else True,
        socket_factory=_GuardedSockets(addresses),
    )
    return aiohttp.ClientSession(
        timeout=client_timeout(timeout),
        connector=connector,
        headers=headers,
        auto_decompress=True,
        trust_env=False,  # no proxy from the environment: the policy must see the partner's own address
    )


# ------------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete, bounded answer."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        """The Content-Type header as sent ('' when absent)."""
        return self.headers.get("Content-Type", "")


@contextlib.asynccontextmanager
async def open_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    data: Any = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | aiohttp.ClientTimeout | None = None,
    addresses: AddressPolicy | None = None,
    trace: bool = True,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The response, its body unread (read it with :func:`iter_bounded`); RedirectRefused for a redirect.

    ``timeout``: seconds for the whole call, or an aiohttp timeout (:func:`stall_timeout`); None keeps the session's.
    ``addresses`` narrows the session's address policy for this request. Leaving the block releases the
    connection; an answer not read to its end closes it rather than reading the rest. ``trace``: send the current
    trace's ``traceparent`` (a caller's own trace headers are dropped when False, so none leaks either way).
    """
    sent = {k: v for k, v in (headers or {}).items() if trace or k.lower() not in TRACE_HEADERS}
    if trace:
        inject(sent)
    token = _request_policy.set(addresses)
    try:
        request = session.request(
            method,
            url,
            data=data,
            json=json,
            headers=sent,
            allow_redirects=False,
            timeout=_request_timeout(session, timeout),
        )
        async with request as response:
            if response.status in REDIRECTS:
                raise RedirectRefused(response)
            yield response
    finally:
        _request_policy.reset(token)


async def iter_bounded(
    response: aiohttp.ClientResponse, max_bytes: int, chunk_size: int = READ_CHUNK
) -> AsyncIterator[bytes]:
    """The body in chunks; AnswerTooLarge as soon as it passes ``max_bytes`` (the rest is never read)."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        response.close()
        raise AnswerTooLarge(str(response.url), max_bytes)
    size = 0
    async for chunk in response.content.iter_chunked(chunk_size):
        size += len(chunk)
        if size > max_bytes:
            response.close()  # the connection goes, with whatever the partner still sends
            raise AnswerTooLarge(str(response.url), max_bytes)
        yield chunk


async def read_bounded(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole body; AnswerTooLarge past ``max_bytes``."""
    return b"".join([chunk async for chunk in iter_bounded(response, max_bytes)])


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    max_bytes: int,
    data: Any = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | aiohttp.ClientTimeout | None = None,
    addresses: AddressPolicy | None = None,
    trace: bool = True,
) -> Answer:
    """Send the request and read the whole answer, at most ``max_bytes`` of it (see :func:`open_request`)."""
    async with open_request(
        session,
        method,
        url,
        data=data,
        json=json,
        headers=headers,
        timeout=timeout,
        addresses=addresses,
        trace=trace,
    ) as response:
        body = await read_bounded(response, max_bytes)
        return Answer(str(response.url), response.status, response.headers, body)


def networks(values: Iterable[object], where: str) -> tuple[IpNetwork, ...]:
    """CIDR ranges from settings (``127.0.0.0/8``, ``::1``, ...); ValueError naming ``where`` and the value."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an address range like 127.0.0.0/8 or ::1") from None
    return tuple(found)
