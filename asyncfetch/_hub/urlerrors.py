"""The torch.hub drop-ins' errors, as code written for torch.hub expects them.

torch.hub downloads with urllib: its callers catch ``urllib.error.URLError`` (a connection
that failed), ``urllib.error.HTTPError`` (an error status, with ``code``) and
``TimeoutError`` (nothing came in time), and set its only timeout with
``socket.setdefaulttimeout``. Here a download error keeps its own class (and message and
attributes) and also becomes those: a TransportError, or a RetriesExhausted whose last error
was one, is also a URLError; an HTTPStatusError (or a range that last failed with one) also an
HTTPError carrying ``code``; a FetchTimeout also a TimeoutError. The classes are made on
demand (one per combination) and survive pickling.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.error
from collections.abc import Iterator
from typing import Any, Literal

from .._errors import FetchError, FetchTimeout, HTTPStatusError, RetriesExhausted, TransportError

Kind = Literal["url", "http", "timeout"]


def default_timeout() -> float | None:
    """``socket.getdefaulttimeout()``: what torch.hub's callers set for its connect and read
    timeouts, used by the drop-ins when no ``timeout`` is given (None when unset)."""
    return socket.getdefaulttimeout()


@contextlib.contextmanager
def as_urllib_errors() -> Iterator[None]:
    """Within the block, a download error is raised as its :func:`urllib_error` twin."""
    try:
        yield
    except FetchError as exc:
        twin = urllib_error(exc)
        if twin is exc:
            raise
        raise twin.with_traceback(exc.__traceback__) from exc.__cause__


def urllib_error(error: FetchError) -> FetchError:
    """``error`` also as urllib's error for what went wrong, or ``error`` itself when no urllib
    error fits (a digest mismatch, a bad argument, a full disk)."""
    last = _last_transport_error(error)
    if last is None:
        return error
    kind: Kind = "url"
    code = 0
    if isinstance(last, FetchTimeout):
        kind = "timeout"
    elif isinstance(last, HTTPStatusError):
        kind, code = "http", last.status
    twin = _rebuild(type(error), kind, code, error.args, dict(vars(error)))
    twin.__context__ = error.__context__
    return twin


def _last_transport_error(error: FetchError) -> TransportError | None:
    if isinstance(error, TransportError):
        return error
    if isinstance(error, RetriesExhausted) and isinstance(error.__cause__, TransportError):
        return error.__cause__
    return None


def _rebuild(
    base: type[FetchError], kind: Kind, code: int, args: tuple[Any, ...], state: dict[str, Any]
) -> FetchError:
    """An instance of ``base``'s twin of ``kind`` with ``args`` and the FetchError's own
    attributes ``state`` (also how a pickled twin comes back)."""
    cls = _twin_class(base, kind)
    error: FetchError = cls.__new__(cls)
    Exception.__init__(error, *args)
    message = str(args[0]) if args else ""
    if kind == "http":  # code, msg, hdrs, fp and the file-like part, as urllib's own
        urllib.error.HTTPError.__init__(error, state.get("url"), code, message, None, None)  # type: ignore[arg-type]
    else:
        error.__dict__["reason"] = message  # as URLError's
    error.__dict__.update(state)
    error.__dict__["_twin"] = (base, kind, code, tuple(state))
    return error


_TWINS: dict[tuple[type[FetchError], Kind], type[FetchError]] = {}


def _twin_class(base: type[FetchError], kind: Kind) -> type[FetchError]:
    """``base`` that is also urllib's error for ``kind`` (one class per pair)."""
    if (base, kind) not in _TWINS:
        _TWINS[base, kind] = _make_twin_class(base, kind)
    return _TWINS[base, kind]


def _make_twin_class(base: type[FetchError], kind: Kind) -> type[FetchError]:
    extras: tuple[type[BaseException], ...] = {
        "url": (urllib.error.URLError,),
        "http": (urllib.error.HTTPError,),
        "timeout": (urllib.error.URLError, TimeoutError),
    }[kind]
    namespace = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "__str__": _message,
        "__repr__": _representation,
        "__reduce__": _reduce,
    }
    return type(base.__name__, (base, *extras), namespace)


def _message(self: BaseException) -> str:
    return str(self.args[0]) if self.args else ""


def _representation(self: BaseException) -> str:
    return f"{type(self).__name__}({_message(self)!r})"


def _reduce(self: BaseException) -> tuple[Any, ...]:
    base, kind, code, names = vars(self)["_twin"]
    state = {name: vars(self)[name] for name in names if name in vars(self)}
    return (_rebuild, (base, kind, code, self.args, state))
