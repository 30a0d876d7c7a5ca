"""Outbound HTTP to addresses a user typed (calendar feeds, webhooks), guarded against SSRF.

A user-supplied URL must not make the cloud talk to itself or its private network (loopback, RFC 1918, link-local
and the cloud metadata address 169.254.169.254, unique-local IPv6, CGNAT, multicast, unspecified, and the IPv6
forms that carry such an IPv4: NAT64, 6to4, Teredo, IPv4-compatible...). The check
is made on the address the socket actually connects to, resolved once at connect time: a name that resolves to a
public address when the URL is saved and to 127.0.0.1 later (DNS rebinding) is refused at the connection, and a
redirect is followed only through the same guard. `allow_private=True` lifts the address check (tests, dev stack:
CALENDAR_ALLOW_PRIVATE_HOSTS=1); the scheme check always holds.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 3
USER_AGENT = "KeyDrop/1.0 (+calendar and webhook client)"


class FetchError(Exception):
    """Why a request could not be made or answered; the message is fit to show the agency."""


class Refused(FetchError):
    """The URL or the address it resolves to is not allowed."""


# IPv6 forms that carry an IPv4 address a gateway may reach on the cloud's behalf: judged as that IPv4.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")           # RFC 6052: the IPv4 is the last 32 bits
# Refused outright: the local-use NAT64 prefix (what it reaches is the site's choice), the deprecated
# IPv4-compatible form (::a.b.c.d, RFC 4291) and site-local addresses (fec0::/10, deprecated but routed by some).
_REFUSED_V6 = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("::/96"),
               ipaddress.ip_network("fec0::/10"))


def _carried_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for: IPv4-mapped, NAT64, 6to4 (2002::/16), Teredo (2001::/32:
    its server and its client)."""
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    if addr in _NAT64:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr.teredo is not None:
        return list(addr.teredo)
    return []


def _global(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return addr.is_global and not addr.is_multicast


def address_allowed(ip: str) -> bool:
    """Only globally routable unicast addresses. An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64,
    6to4, Teredo) is judged as the IPv4 it carries; IPv4-compatible, local NAT64 and site-local are refused."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        if any(addr in net for net in _REFUSED_V6):
            return False
        carried = _carried_ipv4(addr)
        if carried:
            return all(_global(v4) for v4 in carried)
    return _global(addr)


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL with a host; Refused otherwise."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        raise Refused("This is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("Only http:// and https:// addresses are accepted.")
    if not parts.hostname:
        raise Refused("The URL has no host name.")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _getaddrinfo(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo() within `timeout` s: the system resolver has no timeout of its own that a caller can set, so
    a name is resolved in a helper thread (left to finish on its own if it is late); an address is not."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except ValueError:
        pass
    box: dict = {}

    def run():
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as exc:  # handed to the caller
            box["error"] = exc
    worker = threading.Thread(target=run, name="netguard-dns", daemon=True)
    worker.start()
    worker.join(max(timeout, 0))
    if worker.is_alive():
        raise FetchError(f"Cannot resolve {host}: no answer within {timeout:.3g} s.")
    if "error" in box:
        raise box["error"]
    return box["infos"]


def resolve(host: str, port: int, *, allow_private: bool, timeout: float = 10.0) -> list[tuple]:
    """getaddrinfo() results the guard lets through; Refused if none (or if the name does not resolve)."""
    try:
        infos = _getaddrinfo(host, port, timeout)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"Cannot resolve {host}: {exc}") from None
    allowed = [i for i in infos if allow_private or address_allowed(i[4][0])]
    if not allowed:
        raise Refused(f"{host} resolves to a private, loopback or link-local address, which is not allowed.")
    return allowed


def check_destination(url: str, *, allow_private: bool) -> None:
    """Early check when a URL is saved: scheme, host, and where it resolves now. The fetch checks again."""
    _, host, port = check_url(url)
    resolve(host, port, allow_private=allow_private)


class _Deadline:
    """One request's deadline (resolution, connection, TLS, headers, body, redirects included). A socket timeout
    bounds each operation, not their sum: a server sending a byte every few seconds would never be cut. So the
    connection is also shut from a timer when the deadline passes, which ends whatever read is blocked."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._fd: int | None = None

    @property
    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.at

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            self.expired = True
            raise socket.timeout("deadline")
        return left

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` when the deadline passes (its file descriptor: TLS wraps the same one)."""
        with self._lock:
            self._fd = sock.fileno()
            self._timer = threading.Timer(self.remaining(), self._cut)
            self._timer.daemon = True
            self._timer.start()

    def _cut(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            self.expired = True
            view = socket.socket(fileno=self._fd)
            try:
                view.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                view.detach()  # the connection's own object closes the descriptor

    def unwatch(self) -> None:
        """Before the connection is closed: its descriptor must not be shut once it may belong to another."""
        with self._lock:
            self._fd = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def _guarded_connector(allow_private: bool, deadline: _Deadline):
    def connect(address, timeout=None, source_address=None):
        host, port = address
        last: OSError | None = None
        for family, socktype, proto, _, sockaddr in resolve(host, port, allow_private=allow_private,
                                                            timeout=deadline.remaining()):
            sock = socket.socket(family, socktype, proto)
            try:
                sock.settimeout(deadline.remaining())
                sock.connect(sockaddr)  # the very address that was checked: nothing is resolved again
                deadline.watch(sock)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
                if deadline.passed:
                    break
        raise last or OSError(f"cannot connect to {host}")
    return connect


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    url: str = ""


def request(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 10.0, max_bytes: int = 1024 * 1024, allow_private: bool = False,
            follow_redirects: bool = True, truncate: bool = False) -> Response:
    """One HTTP request through the guard, all of it (redirects included) within `timeout` s. Raises FetchError
    (Refused for a forbidden destination) on a network failure, on the deadline, or on a body over max_bytes
    (with `truncate`, for a caller that wants only the status, the body is cut there instead); any HTTP status
    is returned as a Response."""
    headers = {"User-Agent": USER_AGENT, **(headers or {})}
    deadline = _Deadline(timeout)
    late = f"did not answer within {timeout:g} s."
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port = check_url(url)
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            left = deadline.remaining()
        except socket.timeout:
            raise FetchError(f"{host} {late}") from None
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=left, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=left)
        conn._create_connection = _guarded_connector(allow_private, deadline)  # type: ignore[attr-defined]
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(max_bytes + 1)
            got = {k.lower(): v for k, v in resp.getheaders()}
        except Refused:
            raise
        except FetchError as exc:
            raise FetchError(f"{host} {late}" if deadline.passed else str(exc)) from None
        except socket.timeout:
            raise FetchError(f"{host} {late}") from None
        except ssl.SSLError as exc:
            if deadline.passed:
                raise FetchError(f"{host} {late}") from None
            raise FetchError(f"TLS failed with {host}: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            if deadline.passed:
                raise FetchError(f"{host} {late}") from None
            raise FetchError(f"Cannot reach {host}: {exc}") from None
        finally:
            deadline.unwatch()
            conn.close()
        if deadline.expired:  # the connection was cut: what was read is not the whole answer
            raise FetchError(f"{host} {late}")
        if len(data) > max_bytes:
            if not truncate:
                raise FetchError(f"The answer is larger than {max_bytes // 1024} KiB.")
            data = data[:max_bytes]
        if follow_redirects and resp.status in (301, 302, 303, 307, 308) and got.get("location"):
            url = urljoin(url, got["location"])
            if resp.status == 303:
                method, body = "GET", None
            continue
        return Response(resp.status, got, data, url)
    raise FetchError(f"More than {MAX_REDIRECTS} redirects.")
