"""Who ``asyncfetch serve`` answers: programs that name it in ``Host``, not web pages, and with
a token, only those that hold it.

Every request but ``GET /health`` must:

- name the service in ``Host``: ``localhost``, an IP address, or a name given with
  ``--allowed-host``. DNS rebinding, the way a web page reaches a service on loopback and reads
  its answers, always sends the page's own name, so it is refused; an address cannot be
  rebound, and the port is not compared (a port forward changes it, rebinding cannot);
- carry no ``Origin`` but the service's own (``http://`` + its ``Host``): browsers send one
  with every cross-site POST and script request, programs (curl, ``asyncfetch get``) none;
- with a token, carry ``Authorization: Bearer TOKEN`` (compared in constant time), except
  ``GET /`` (the status page: static HTML whose script asks for the token and sends it), and
  ``GET``/``HEAD /files/NAME`` and ``/v1/files/NAME`` with ``public_files`` (a LAN mirror);
- send a ``POST`` body as ``application/json``, a type no web page can send without the
  preflight the service never grants.

Listening on anything but a loopback address needs a token (:func:`check_exposure`).
Pure logic, but for reading the token file (:func:`load_token`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import InvalidRequest

MIN_TOKEN_LENGTH = 16
MAKE_TOKEN = "(umask 077; python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE)"
HOW_TO_GIVE = (
    f"give a token with --token-file FILE or ASYNCFETCH_SERVICE_TOKEN (make one with: {MAKE_TOKEN})"
)
OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class Refusal:
    """Why a request is not answered: its status, a short kind, a message, extra headers."""

    status: int
    kind: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


def host_name(value: str | None) -> str | None:
    """The name in a ``Host`` value (``[::1]:8765`` → ``::1``, ``Node1.:80`` → ``node1``), or
    None when it is missing or malformed."""
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or not _is_address(name) or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    if not name or (port and not port.isdigit()) or any(c in name for c in " /\\@?#"):
        return None
    return name if _is_address(name) else name.removesuffix(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only."""
    if host.lower().removesuffix(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


@dataclass(frozen=True, kw_only=True)
class Guard:
    """The service's rules for requests (see the module docstring).

    Args:
        token: the bearer token routes need, or None (only on a loopback address).
        public_files: ``GET``/``HEAD /files/NAME`` without the token (a LAN mirror).
        public_metrics: ``GET /metrics`` without the token (a Prometheus scraper).
        hosts: names clients may reach the service by, besides localhost and IP addresses.
    """

    token: str | None = field(default=None, repr=False)
    public_files: bool = False
    public_metrics: bool = False
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token, "the token")
        object.__setattr__(self, "hosts", allowed_hosts(self.hosts))

    def refusal(self, method: str, path: str, headers: Mapping[str, str]) -> Refusal | None:
        """Why the request is refused, or None when it may be answered."""
        if path in OPEN_PATHS:
            return None
        return (
            self._check_host(headers.get("Host"))
            or self._check_origin(headers.get("Origin"), headers.get("Host", ""))
            or self._check_token(method, path, headers.get("Authorization"))
            or _check_body(method, headers.get("Content-Type"))
        )

    def _check_host(self, value: str | None) -> Refusal | None:
        name = host_name(value)
        if name is not None and (name == "localhost" or _is_address(name) or name in self.hosts):
            return None
        known = ", ".join(["localhost", "an IP address", *self.hosts])
        return Refusal(
            403,
            "HostNotAllowed",
            f"{'the Host header ' + repr(value) if value is not None else 'no Host header'} "
            "does not name this service (a web page rebinding its "
            f"DNS name would send its own); use {known}, or start the service with "
            "--allowed-host NAME for a name clients use",
        )

    @staticmethod
    def _check_origin(origin: str | None, host: str) -> Refusal | None:
        if origin is None:
            return None
        if origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower()):
            return None
        return Refusal(
            403,
            "OriginNotAllowed",
            f"requests from web pages (Origin {origin!r}) are refused; the service answers "
            "programs such as curl and asyncfetch get",
        )

    def _check_token(self, method: str, path: str, authorization: str | None) -> Refusal | None:
        if self.token is None:
            return None
        public = path.startswith(("/files/", "/v1/files/"))
        if self.public_files and method in ("GET", "HEAD") and public:
            return None
        if self.public_metrics and method in ("GET", "HEAD") and path == "/metrics":
            return None
        if path == "/" and method in ("GET", "HEAD"):
            return None  # the status page: static, no data; its script sends the token
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.token.encode()
        ):
            return None
        wrong = authorization is not None
        challenge = 'Bearer realm="asyncfetch"' + (', error="invalid_token"' if wrong else "")
        why = "the token is wrong" if wrong else f"{method} {path} needs the service's token"
        return Refusal(
            401,
            "Unauthorized",
            f"{why}; send 'Authorization: Bearer TOKEN' with the token the service was started "
            "with",
            {"WWW-Authenticate": challenge},
        )


def _check_body(method: str, content_type: str | None) -> Refusal | None:
    if method != "POST":
        return None
    media = (content_type or "").partition(";")[0].strip().lower()
    if media == "application/json":
        return None
    return Refusal(
        415,
        "UnsupportedMediaType",
        f"send the body as JSON with 'Content-Type: application/json' (got {media or 'none'!r})",
    )


def allowed_hosts(names: Iterable[str]) -> tuple[str, ...]:
    """``--allowed-host`` values as the names :class:`Guard` compares (lower case, no port).

    Raises:
        InvalidRequest: one is not a host name.
    """
    hosts = []
    for value in names:
        name = host_name(value)
        if name is None or ".." in name:
            raise InvalidRequest(
                f"--allowed-host {value!r} is not a host name; give one like node1 or "
                "mirror.example.org"
            )
        hosts.append(name)
    return tuple(dict.fromkeys(hosts))


def check_token(token: str, where: str) -> str:
    """``token`` if it can be a bearer token: at least MIN_TOKEN_LENGTH visible ASCII
    characters, else InvalidRequest saying how to make one."""
    if len(token) < MIN_TOKEN_LENGTH or not all("!" <= c <= "~" for c in token):
        raise InvalidRequest(
            f"{where} must be at least {MIN_TOKEN_LENGTH} visible ASCII characters (no spaces); "
            f"make one with: {MAKE_TOKEN}"
        )
    return token


def load_token(path: Path | None, from_env: str | None) -> str | None:
    """The token in the file at ``path`` (else ``from_env``, ASYNCFETCH_SERVICE_TOKEN's value),
    stripped of surrounding white space, or None when neither gives one (blocking).

    Raises:
        InvalidRequest: the file cannot be read, others may read or write it, or the token
            is too short.
    """
    if path is None:
        token = (from_env or "").strip()
        return check_token(token, "ASYNCFETCH_SERVICE_TOKEN") if token else None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read the token file {path}: {exc.strerror or exc}; give a regular file, "
            "not a link"
        ) from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        data = file.read(4096)
    if not stat.S_ISREG(mode) or mode & 0o007:
        raise InvalidRequest(
            f"the token file {path} can be read or written by every user (mode "
            f"{stat.filemode(mode)}) or is not a regular file; run chmod 600 {path}"
        )
    return check_token(data.decode("utf-8", "replace").strip(), f"the token in {path}")


def check_exposure(host: str, guard: Guard) -> None:
    """Raise InvalidRequest when listening on ``host`` would let others in without a token."""
    if guard.token is None and not is_loopback(host):
        raise InvalidRequest(
            f"refusing to listen on {host or 'every address'} without a token: anyone who can "
            f"reach it could download through it and read its files; {HOW_TO_GIVE}, or "
            "listen on 127.0.0.1"
        )
