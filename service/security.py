"""API keys, and outbound HTTP that cannot be pointed at the inside of our network (SSRF).

Outbound requests (``video_url`` downloads, callbacks) go through ``UrlPolicy``:

* only ``http``/``https``, no credentials in the URL;
* the host is resolved once and EVERY address it resolves to must be public: loopback, private,
  link-local, multicast, reserved, unspecified, shared (CGNAT) and cloud metadata addresses are refused,
  including their IPv6 forms (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64 ``64:ff9b::/96``);
* the connection goes to the address that was checked (the URL is rewritten to the IP, ``Host`` and TLS
  SNI keep the name and the certificate is verified against it), so a DNS answer that changes between
  check and connect (DNS rebinding) cannot reach anything else;
* redirects are followed by hand, at most ``max_redirects``, each hop checked the same way;
* the size cap is enforced on ``Content-Length`` and again on the bytes actually received;
* connect/read timeouts per step and a wall-clock deadline for the whole download.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Cloud metadata / host-agent endpoints (most are non-global anyway; listed so the reason is explicit).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "168.63.129.16",  # Azure wireserver (a public address!)
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IPv6 metadata
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class SecurityError(Exception):
    """A refused or failed outbound request; ``status``/``code``/``message`` become the API's 4xx answer."""

    status = 400
    code = "url_refused"

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class UrlRefused(SecurityError):
    status = 400
    code = "url_refused"


class FetchError(SecurityError):
    status = 422
    code = "download_failed"
    http_status: int | None = None  # the remote server's error status, when it answered one
    body: bytes = b""


class TooLarge(FetchError):
    status = 413
    code = "file_too_large"
    size: int | None = None  # the declared size, when the server declared one


# ----------------------------------------------------------------------------------------------
# Addresses
# ----------------------------------------------------------------------------------------------
def address_problem(ip: IPAddress | str) -> str | None:
    """Why ``ip`` must not be reached from the server, or None for an ordinary public address."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            return f"{inner} (embedded in {ip})" if inner else None
        if ip.teredo is not None:
            server, client = ip.teredo
            inner = address_problem(server) or address_problem(client)
            if inner:
                return f"{inner} (Teredo {ip})"
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    for attr, label in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{ip} is a {label} address"
    if not ip.is_global:
        return f"{ip} is not a public internet address"
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA), in resolver order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[str] = []
    for info in infos:
        addr = info[4][0].split("%", 1)[0]  # drop an IPv6 zone id
        if addr not in out:
            out.append(addr)
    return out


@dataclass(frozen=True)
class Target:
    """A checked URL, pinned to the address that was checked."""

    url: str
    scheme: str
    host: str
    port: int
    ip: str
    path: str  # path + query, at least "/"

    @property
    def pinned_url(self) -> str:
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.scheme}://{ip}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def extensions(self) -> dict:
        return {"sni_hostname": self.host} if self.scheme == "https" else {}


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs the server may fetch or call.

    ``allow_private`` lifts the address checks (Settings ``allow_private_urls`` /
    ``allow_private_callbacks``; never in production). ``allowed_endpoints`` lists exact
    ``(ip, port)`` pairs treated as public although they are not (a test's loopback server, an on-prem
    media mirror); every other address, including the targets of redirects, is still checked.
    ``resolver`` is injectable for tests.
    """

    allow_private: bool = False
    allowed_endpoints: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    resolver: Resolver = resolve_host

    def check(self, url: str) -> Target:
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(f"not a valid URL: {exc}", "invalid_url") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UrlRefused(
                f"only http and https URLs can be fetched, not {scheme or 'a URL without scheme'}://",
                "unsupported_scheme",
            )
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("URLs with credentials (user:password@) are not accepted", "invalid_url")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise UrlRefused("the URL has no host", "invalid_url")
        port = port or (443 if scheme == "https" else 80)
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            addresses = []
        if not addresses:
            try:
                addresses = self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise UrlRefused(f"cannot resolve host {host!r}: {exc}", "unresolvable_host") from exc
            if not addresses:
                raise UrlRefused(f"host {host!r} has no address", "unresolvable_host")
        if not self.allow_private:
            for addr in addresses:
                if (addr, port) in self.allowed_endpoints:
                    continue
                problem = address_problem(addr)
                if problem:
                    raise UrlRefused(
                        f"refusing to connect to {host}: {problem}. Only public internet addresses are allowed.",
                        "forbidden_address",
                    )
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return Target(url=url, scheme=scheme, host=host, port=port, ip=addresses[0], path=path)


def _client(timeout_s: float) -> httpx.Client:
    # trust_env=False: a proxy from the environment would defeat the address pinning
    return httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False)


# ----------------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    sha256: str
    content_type: str | None
    final_url: str
    filename: str | None


def _filename_from(url: str) -> str | None:
    name = os.path.basename(urlsplit(url).path)
    return name or None


@dataclass(frozen=True)
class Written:
    path: Path
    size: int
    sha256: str


def write_stream(chunks: Iterable[bytes], dest_dir: Path, prefix: str, max_bytes: int,
                 deadline: float | None = None) -> Written:
    """THE streaming writer (uploads, video_url downloads, WhatsApp media): a new ``<prefix>-<uuid>.part`` file
    under ``dest_dir``, hashed while written, refused past ``max_bytes`` (``TooLarge``) or ``deadline``
    (``FetchError``), fsynced; on any failure the partial file is removed."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{prefix}-{uuid.uuid4().hex}.part"
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:  # a declared size may be absent or wrong: count what arrives
                    raise TooLarge(f"the file is larger than the limit of {max_bytes / 1e6:.0f} MB")
                if deadline is not None and time.monotonic() > deadline:
                    raise FetchError("the download took too long", "download_timeout")
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Written(path, size, h.hexdigest())


def download(
    url: str,
    dest_dir: Path,
    policy: UrlPolicy,
    max_bytes: int,
    timeout_s: float = 30.0,
    total_timeout_s: float = 120.0,
    max_redirects: int = 5,
    headers: Callable[[Target], dict[str, str]] | None = None,
    prefix: str = "dl",
) -> Download:
    """THE guarded fetch (``video_url`` and WhatsApp media): every hop is SSRF-checked and address-pinned,
    redirects are followed by hand up to ``max_redirects``, the size is capped by the declared length and by
    counting, the whole download has a deadline. ``headers(target)`` adds per-hop headers (e.g. a token only
    for the first host). Raises ``SecurityError`` subclasses: ``UrlRefused``, ``FetchError`` (with the HTTP
    status in ``http_status`` when the server answered an error), ``TooLarge``."""
    deadline = time.monotonic() + total_timeout_s
    current = url
    with _client(timeout_s) as client:
        for hop in range(max_redirects + 1):
            target = policy.check(current)
            extra = headers(target) if headers else {}
            hop_headers = {"User-Agent": "deepfake-detector/1.0", "Accept": "*/*", **extra, "Host": target.host_header}
            try:
                with client.stream("GET", target.pinned_url, headers=hop_headers,
                                   extensions=target.extensions) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise FetchError(f"{target.host} answered {resp.status_code} without a Location")
                        if hop >= max_redirects:
                            raise FetchError(f"more than {max_redirects} redirects", "too_many_redirects")
                        current = urljoin(current, location)
                        logger.info("download redirect %d: %s", hop + 1, current)
                        continue
                    if resp.status_code >= 400:
                        err = FetchError(f"the server of {target.host} answered HTTP {resp.status_code}")
                        err.http_status, err.body = resp.status_code, resp.read()[:2000]
                        raise err
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        mb = int(declared) / 1e6
                        err = TooLarge(f"the file is {mb:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
                        err.size = int(declared)
                        raise err
                    w = write_stream(resp.iter_bytes(1 << 16), dest_dir, prefix, max_bytes, deadline)
                    return Download(w.path, w.size, w.sha256, resp.headers.get("content-type"), current,
                                    _filename_from(current))
            except httpx.TimeoutException as exc:
                raise FetchError(f"downloading from {target.host} timed out", "download_timeout") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"downloading from {target.host} failed: {exc}") from exc
    raise FetchError(f"more than {max_redirects} redirects", "too_many_redirects")


def post_pinned(url: str, content: bytes, headers: dict[str, str], policy: UrlPolicy, timeout_s: float) -> int:
    """POST to a checked, address-pinned URL without following redirects. Returns the status code."""
    target = policy.check(url)
    with _client(timeout_s) as client:
        resp = client.post(
            target.pinned_url, content=content, headers={**headers, "Host": target.host_header},
            extensions=target.extensions,
        )
        return resp.status_code


# ----------------------------------------------------------------------------------------------
# API keys
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiKey:
    key_id: str  # sha256 prefix: what the database stores and counts
    user_id: str | None  # Supabase user the key belongs to (RLS: the user reads these rows)


class ApiKeys:
    """Bearer keys from Settings ``api_keys`` (``key`` or ``key:user-uuid``), compared in constant time."""

    def __init__(self, entries: list[str]):
        from db.repository import api_key_id

        self._keys: list[tuple[bytes, ApiKey]] = []
        for entry in entries:
            key, _, user = entry.partition(":")
            key = key.strip()
            if not key:
                continue
            user_id = str(uuid.UUID(user.strip())) if user.strip() else None
            self._keys.append((key.encode(), ApiKey(api_key_id(key), user_id)))

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = token.strip().encode()
        found = None
        for key, info in self._keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(key, given):
                found = info
        return found
