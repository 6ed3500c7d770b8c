"""``POST /fetch`` orders for ``asyncfetch serve``, checked: the JSON body's shape, and the
names a file in the cache dir may have to be fetched into or served from (never a part file,
journal, marker, lock or temporary file, nothing with a path or a control character in it);
and whether a download's result, maybe fetched for another order, answers an order's own
``sha256``.

Pure logic, no I/O: :mod:`asyncfetch._service.app` parses each body with :func:`parse_order`,
checks each ``/files/NAME`` with :func:`is_servable_name`, and judges each result with
:func:`check_digest`.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from .._cache.lookup import file_name_for
from .._errors import IntegrityError, InvalidRequest
from .._expectation import is_sha256
from .._models import FetchResult

#: Endings of files that are not complete downloads: part files and their journals (_sink,
#: _journal), verified markers (_marker) and locks (_lock), hash-prefix staging, torchrun locks and
#: failure notes (_hubfile, _distributed), extraction and temporary files (hub, torch.hub).
PRIVATE_SUFFIXES = (
    ".part",
    ".part.json",
    ".asyncfetch.json",
    ".lock",
    ".unverified",
    ".hub-failed.json",
    ".extracting",
    ".partial",
    ".tmp",
)
_ORDER_KEYS = frozenset({"url", "mirrors", "sha256", "name", "replace"})
#: Unicode categories no name may hold: control and format characters (a newline, an escape,
#: a bidi override), line and paragraph separators, lone surrogates
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: what a ``POST /fetch`` body looks like, for error messages
#: NAME_MAX (255 bytes) less the longest name made from it, a part journal's temporary file
MAX_NAME_BYTES = 200
#: mirrors one order may name: each is probed at once, on a connection of its own, so a list
#: as long as the body allows (~1,000) would have one request open that many; 16 is a
#: download's default number of connections, more than it can use
MAX_MIRRORS = 16
ORDER_SHAPE = (
    '{"url": URL, "mirrors": [URL, ...], "sha256": HEX, "name": FILE_NAME, "replace": BOOL}'
)


def is_servable_name(name: str) -> bool:
    """Whether ``name`` may name a complete file directly in the cache dir."""
    return (
        bool(name)
        and not name.startswith(".")
        and ".." not in name
        and not any(c in name for c in "/\\\x00")
        and not any(unicodedata.category(c) in _UNPRINTABLE for c in name)
        and not name.endswith(PRIVATE_SUFFIXES)
    )


@dataclass(frozen=True)
class Order:
    """One ``POST /fetch`` request, checked. ``replace``: the request may replace a
    different file the name holds."""

    url: str
    mirrors: tuple[str, ...]
    sha256: str | None
    name: str
    replace: bool = False


def parse_order(body: bytes) -> Order:
    """Check a ``POST /fetch`` body; raises InvalidRequest saying what is wrong."""
    data = _json_value(body)
    if not isinstance(data, dict):
        raise InvalidRequest(f"the body is not a JSON object; send {ORDER_SHAPE}")
    return _order_of(data)


def parse_orders(body: bytes) -> tuple[list[Order], bool]:
    """Check a ``POST /v1/jobs`` body, one order or a list of them; returns the orders and
    whether it was a list. Raises InvalidRequest saying what is wrong (with which item)."""
    data = _json_value(body)
    if isinstance(data, dict):
        return [_order_of(data)], False
    if not isinstance(data, list) or not data:
        raise InvalidRequest(f"the body is neither an order nor a list of them; send {ORDER_SHAPE}"
                             " or a non-empty list of such objects")  # fmt: skip
    orders = []
    for number, item in enumerate(data):
        if not isinstance(item, dict):
            raise InvalidRequest(
                f"item {number} of the list is not a JSON object; send {ORDER_SHAPE}"
            )
        try:
            orders.append(_order_of(item))
        except InvalidRequest as exc:
            raise InvalidRequest(f"item {number} of the list: {exc}", url=exc.url) from None
    return orders, True


def _order_of(data: dict[str, Any]) -> Order:
    unknown = sorted(set(data) - _ORDER_KEYS)
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; send {ORDER_SHAPE}")
    url = data.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"'url' is missing or not a string; send {ORDER_SHAPE}")
    mirrors = data.get("mirrors")
    if mirrors is None:
        mirrors = []
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise InvalidRequest("'mirrors' must be a list of URLs", url=url)
    if len(mirrors) > MAX_MIRRORS:
        raise InvalidRequest(
            f"'mirrors' names {len(mirrors)} URLs; at most {MAX_MIRRORS} per file", url=url
        )
    sha256 = data.get("sha256")
    if sha256 is not None and not is_sha256(sha256):
        raise InvalidRequest(f"'sha256' must be 64 hex digits, got {sha256!r}", url=url)
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise InvalidRequest(f"'replace' must be true or false, got {replace!r}", url=url)
    name = _name_of(data, url)
    return Order(url, tuple(mirrors), sha256.lower() if sha256 else None, name, replace)


def _json_value(body: bytes) -> Any:
    """The JSON value in ``body``, all of its strings text (no lone surrogate escapes)."""
    try:
        data: Any = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode()  # a lone "\ud800" is no character
    except RecursionError:
        raise InvalidRequest(f"the body nests too deeply; send {ORDER_SHAPE}") from None
    except UnicodeEncodeError:  # before ValueError, its base class
        raise InvalidRequest(
            "the body has a lone surrogate escape (\\ud800-\\udfff) in a string, which is no "
            f"character; send {ORDER_SHAPE} with text strings"
        ) from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise InvalidRequest(f"the body is not JSON ({exc}); send {ORDER_SHAPE}") from None
    return data


def _name_of(data: dict[str, Any], url: str) -> str:
    name = data.get("name")
    if name is None:
        name = file_name_for(url)
    if isinstance(name, str) and len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidRequest(
            f"the name {name[:40]!r}... is {len(name.encode())} bytes long; give one of at most "
            f"{MAX_NAME_BYTES} (the file system's limit, less room for part and marker files)",
            url=url,
        )
    if not isinstance(name, str) or not is_servable_name(name):
        raise InvalidRequest(
            f"{name!r} cannot be a cache file name; give a plain name without '/', '..', "
            f"control characters or a leading dot, not ending in {', '.join(PRIVATE_SUFFIXES)}",
            url=url,
        )
    return name


def check_digest(order: Order, result: FetchResult) -> None:
    """Raise IntegrityError unless ``result``, maybe fetched for another request, has the
    SHA-256 ``order`` asks for."""
    if order.sha256 is not None and result.sha256 not in (None, order.sha256):
        raise IntegrityError(
            f"{order.name} was fetched for another request and its SHA-256 is "
            f"{result.sha256}, not {order.sha256}; check the digest, or use another name",
            url=order.url,
            expected=order.sha256,
            actual=str(result.sha256),
        )


def hit_for_another_digest(order: Order, result: FetchResult) -> bool:
    """Whether ``result``, a download joined, was a cache hit without the SHA-256 ``order``
    asks for: the cached file answered another digest, and ``order`` alone would download."""
    return result.cached and order.sha256 not in (None, result.sha256)
