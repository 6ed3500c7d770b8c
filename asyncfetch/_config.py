"""Settings: timeouts, connection limits, retry policy, and the environment, read in one place."""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal

from ._errors import InvalidRequest

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0
# curl has no default low-speed limit; this one only cuts what no honest link does: under
# 100 bytes/s per connection for a whole minute (16 connections: under 13 kbit/s in all)
DEFAULT_LOW_SPEED = 100.0
DEFAULT_LOW_SPEED_TIME = 60.0
DEFAULT_CONNECTIONS = 16
DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_JITTER = 0.5
DEFAULT_MAX_REDIRECTS = 10
MAX_RETRY_AFTER = 300.0
MIN_CHUNK_SIZE = 64 << 10  # smaller ranged requests only add round trips (1 byte: a crawl)

Sleep = Callable[[float], Awaitable[None]]
#: where a trust record lives: an extended attribute on the file where it can be set, else the
#: user's state directory ("auto"); or always the state directory ("state")
TrustRecord = Literal["auto", "state"]


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Per-connection timeouts, in seconds, and the low-speed limit. There is no total timeout.

    Args:
        connect: to open a connection (TCP and TLS).
        read: the longest silence while reading a body; a slow but live download never trips it.
        head: the longest wait from sending a request to the end of the answer's head (status
            line and headers, redirects included), however it trickles; None: twice ``read``.
        low_speed: bytes per second a connection must receive, on average over
            ``low_speed_time`` seconds, or it is cut and the range retried from the byte it
            reached (curl's ``--speed-limit``); 0 switches the limit off. Time the download
            spends not reading (a slow disk) does not count.
        low_speed_time: the window of the low-speed limit (curl's ``--speed-time``).
    """

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    head: float | None = None
    low_speed: float = DEFAULT_LOW_SPEED
    low_speed_time: float = DEFAULT_LOW_SPEED_TIME

    def __post_init__(self) -> None:
        positive = [("connect", self.connect), ("read", self.read)]
        positive += [("head", self.head)] if self.head is not None else []
        for name, value in [*positive, ("low_speed_time", self.low_speed_time)]:
            if not _positive_seconds(value):
                raise InvalidRequest(
                    f"the {name} timeout must be a positive, finite number of seconds, "
                    f"got {value!r}"
                )
        if not (_positive_seconds(self.low_speed) or self.low_speed == 0):
            raise InvalidRequest(
                f"low_speed must be a finite number of bytes per second, 0 for no limit, "
                f"got {self.low_speed!r}"
            )

    @property
    def head_deadline(self) -> float:
        """Seconds an answer's head may take: ``head``, or twice ``read``."""
        return self.head if self.head is not None else 2 * self.read

    @classmethod
    def coerce(cls, value: Timeouts | float | None) -> Timeouts:
        """Accept a Timeouts, a bare number (used for both), or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(
                f"timeout must be a number of seconds (for both connect and read) or a "
                f"Timeouts(connect=..., read=...), got {value!r}"
            )
        return cls(connect=float(value), read=float(value))


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed request is tried again.

    Args:
        attempts: tries per byte range, the first included (1 means no retry).
        backoff_initial: first wait, doubled after each failure up to ``backoff_max``.
        backoff_max: the longest wait between two tries.
        jitter: up to this many seconds of random extra wait, so clients do not retry in step.
        sleep: the coroutine that waits; tests inject one that does not.
    """

    attempts: int = DEFAULT_ATTEMPTS
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    jitter: float = DEFAULT_JITTER
    sleep: Sleep = field(default=asyncio.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidRequest(f"retry attempts must be at least 1, got {self.attempts}")
        if self.backoff_initial < 0 or self.backoff_max < 0 or self.jitter < 0:
            raise InvalidRequest(f"retry waits must not be negative, got {self}")

    @classmethod
    def coerce(cls, value: RetryPolicy | int | None) -> RetryPolicy:
        """Accept a RetryPolicy, a bare number of retries (after the first try), or None."""
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidRequest(f"retries must be a whole number >= 0, got {value!r}")
        return cls(attempts=value + 1)


def check_connections(connections: int) -> int:
    """Return ``connections`` if it is a usable connection count, else raise InvalidRequest."""
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
        raise InvalidRequest(f"connections must be a whole number >= 1, got {connections!r}")
    return connections


@dataclass(frozen=True, kw_only=True)
class CABundle:
    """Certificates to trust instead of the system store, and who asked for them.

    Args:
        origin: how the user named it, for messages (``--cacert ca.pem``,
            ``REQUESTS_CA_BUNDLE=/etc/corp.pem``).
        cafile: a PEM file of one or more CA certificates.
        capath: a directory of them under OpenSSL's hashed names (``c_rehash``).
    """

    origin: str
    cafile: Path | None = None
    capath: Path | None = None


@dataclass(frozen=True, kw_only=True)
class TLSTrust:
    """Which servers' certificates to trust, as the caller asked (the environment is read
    later, see :func:`asyncfetch._transport.tls.ssl_context`).

    Args:
        cacert: a PEM file (or hashed directory) of CA certificates to trust instead of the
            system store and of any bundle the environment names.
        insecure: check no certificate at all (``--insecure``); never a default.
    """

    cacert: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.insecure, bool):
            raise InvalidRequest(f"insecure must be True or False, got {self.insecure!r}")
        if self.cacert is not None and self.insecure:
            raise InvalidRequest(
                "give cacert (--cacert) or insecure (--insecure), not both: insecure checks "
                "no certificate at all"
            )

    @classmethod
    def coerce(cls, cacert: str | PathLike[str] | None, insecure: bool = False) -> TLSTrust:
        """From the caller's ``cacert=`` (a path, or None) and ``insecure=``.

        Raises:
            InvalidRequest: for a ``cacert`` that is not a path, or both given.
        """
        if cacert is not None and (not isinstance(cacert, (str, PathLike)) or cacert == ""):
            raise InvalidRequest(f"cacert must be the path of a PEM file, got {cacert!r}")
        path = Path(cacert).expanduser() if cacert is not None else None
        return cls(cacert=path, insecure=insecure)

    @property
    def bundle(self) -> CABundle | None:
        """The caller's ``cacert`` as a bundle (a directory as a hashed one)."""
        if self.cacert is None:
            return None
        return ca_bundle(f"cacert={self.cacert}", self.cacert)


def ca_bundle(origin: str, path: Path) -> CABundle:
    """``path`` as a bundle: a directory is a hashed one, anything else a file (requests'
    rule; a missing path is reported when the bundle is loaded)."""
    if path.is_dir():
        return CABundle(origin=origin, capath=path)
    return CABundle(origin=origin, cafile=path)


@dataclass(frozen=True, kw_only=True)
class ProxyEnv:
    """The proxy variables, as read (lower case first, then upper case; empty is unset):
    ``http_proxy``, ``https_proxy``, ``all_proxy`` and ``no_proxy``. Which one a request uses
    is :func:`asyncfetch._transport.proxies.proxy_for`'s choice."""

    http: str = field(default="", repr=False)  # may hold a password
    https: str = field(default="", repr=False)
    all: str = field(default="", repr=False)
    no_proxy: str = ""

    @classmethod
    def read(cls, env: Mapping[str, str]) -> ProxyEnv:
        """The proxy variables of ``env``."""

        def get(name: str) -> str:
            return (env.get(name) or env.get(name.upper()) or "").strip()

        return cls(
            http=get("http_proxy"),
            https=get("https_proxy"),
            all=get("all_proxy"),
            no_proxy=get("no_proxy"),
        )


@dataclass(frozen=True, kw_only=True)
class EnvSettings:
    """What the environment says (``ASYNCFETCH_*``, ``TORCH_HOME``, ``XDG_CACHE_HOME``,
    ``XDG_CONFIG_HOME``, ``XDG_STATE_HOME``, ``NETRC``, the CA bundle variables, the proxy
    variables, and torchrun's ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""

    offline: bool = False
    fast_path: bool = True
    registry: Path | None = None
    torch_home: Path = field(default_factory=lambda: Path.home() / ".cache" / "torch")
    config_home: Path = field(default_factory=lambda: Path.home() / ".config")
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    netrc: Path | None = None  # $NETRC, else ~/.netrc: credentials per host, as aiohttp reads
    service_token: str | None = field(default=None, repr=False)  # asyncfetch serve's token
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local/state/asyncfetch")
    trust_record: TrustRecord = "auto"  # where trust records go: an xattr if possible, or "state"
    service_url: str = "http://127.0.0.1:8765"  # the service submit and jobs talk to
    ca_bundle: CABundle | None = None  # see _ca_bundle: None is the system store
    proxies: ProxyEnv = field(default_factory=ProxyEnv)


_TRUE = frozenset({"1", "true", "yes", "on"})


def env_settings(environ: Mapping[str, str] | None = None) -> EnvSettings:
    """Read the environment variables asyncfetch honours (the only place that does)."""
    env = os.environ if environ is None else environ
    offline = env.get("ASYNCFETCH_OFFLINE", "").strip().lower() in _TRUE
    fast_path = env.get("ASYNCFETCH_FAST_PATH", "1").strip().lower() in _TRUE
    registry = env.get("ASYNCFETCH_REGISTRY")
    return EnvSettings(
        offline=offline,
        fast_path=fast_path,
        registry=Path(registry).expanduser() if registry else None,
        torch_home=_torch_home(env),
        config_home=Path(env.get("XDG_CONFIG_HOME") or "~/.config").expanduser(),
        rank=_int_or_none(env.get("RANK")),
        local_rank=_int_or_none(env.get("LOCAL_RANK")),
        world_size=_int_or_none(env.get("WORLD_SIZE")),
        netrc=_netrc(env),
        service_token=env.get("ASYNCFETCH_SERVICE_TOKEN") or None,
        state_dir=_state_dir(env),
        trust_record="state" if env.get("ASYNCFETCH_TRUST_RECORD", "") == "state" else "auto",
        service_url=env.get("ASYNCFETCH_SERVICE") or "http://127.0.0.1:8765",
        proxies=ProxyEnv.read(env),
        ca_bundle=_ca_bundle(env),
    )


#: The variables naming a CA bundle file (or hashed directory), the first set one wins (an
#: empty one is skipped): requests' own, then curl's (which requests reads too); after them
#: OpenSSL's SSL_CERT_FILE and SSL_CERT_DIR, together.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _ca_bundle(env: Mapping[str, str]) -> CABundle | None:
    """The CA bundle the environment names, or None for the system store."""
    for name in CA_BUNDLE_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return ca_bundle(f"{name}={value}", Path(value).expanduser())
    named = {name: env.get(name, "").strip() for name in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    if not any(named.values()):
        return None
    cafile, capath = named["SSL_CERT_FILE"], named["SSL_CERT_DIR"]
    return CABundle(
        origin=" and ".join(f"{name}={value}" for name, value in named.items() if value),
        cafile=Path(cafile).expanduser() if cafile else None,
        capath=Path(capath).expanduser() if capath else None,
    )


def _state_dir(env: Mapping[str, str]) -> Path:
    """$ASYNCFETCH_STATE_DIR, else $XDG_STATE_HOME/asyncfetch, else ~/.local/state/asyncfetch."""
    if env.get("ASYNCFETCH_STATE_DIR"):
        return Path(env["ASYNCFETCH_STATE_DIR"]).expanduser()
    return Path(env.get("XDG_STATE_HOME") or "~/.local/state").expanduser() / "asyncfetch"


def _netrc(env: Mapping[str, str]) -> Path | None:
    """aiohttp's rule: $NETRC, else ~/.netrc (None when there is no home to find)."""
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    try:
        return Path.home() / ".netrc"
    except (RuntimeError, KeyError):
        return None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _torch_home(env: Mapping[str, str]) -> Path:
    """torch.hub's rule: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch."""
    if env.get("TORCH_HOME"):
        return Path(env["TORCH_HOME"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "torch"


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str) -> int:
    """Bytes from ``8M``, ``16MiB``, ``1G``, ``512k`` or a plain number (binary units).

    Raises:
        InvalidRequest: for anything else.
    """
    match = _SIZE.fullmatch(text)
    if not match:
        raise InvalidRequest(f"unknown size {text!r}; use a number with K, M, G or T (e.g. 8M)")
    number, unit = float(match[1]), match[2].lower()
    value = int(number * (1 << (10 * " kmgt".index(unit or " "))))
    if value < 1:
        raise InvalidRequest(f"size {text!r} must be at least one byte")
    return value


def check_chunk_size(chunk_size: int | str | None) -> int | None:
    """Bytes per ranged request from a whole number or a size such as ``"8M"``, at least
    ``MIN_CHUNK_SIZE`` (None stays None: the default ramp).

    Raises:
        InvalidRequest: for anything else.
    """
    if chunk_size is None:
        return None
    if isinstance(chunk_size, str):
        size = parse_size(chunk_size)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise InvalidRequest(
            f"chunk_size must be a whole number of bytes or a size such as '8M', got {chunk_size!r}"
        )
    else:
        size = chunk_size
    if size < MIN_CHUNK_SIZE:
        raise InvalidRequest(
            f"chunk_size must be at least 64K ({MIN_CHUNK_SIZE} bytes), got {chunk_size!r}; "
            "smaller requests only add round trips"
        )
    return size


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``30s``, ``15m``, ``12h``, ``7d`` or ``2w``.

    Raises:
        InvalidRequest: for anything else.
    """
    match = _DURATION.fullmatch(text)
    if not match:
        raise InvalidRequest(f"unknown duration {text!r}; use a number with s, m, h, d or w")
    return float(match[1]) * _DURATION_UNITS[match[2].lower()]
