"""The errors asyncfetch raises: one tree rooted at :class:`FetchError`.

::

    FetchError
    ├── InvalidRequest (ValueError)        bad URL, option or digest given by the caller
    ├── DestinationError (OSError)         output path unusable: no dir, read-only, disk full,
    │                                      a device or FIFO
    ├── OfflineError                       offline mode and the file is not in the cache
    ├── IntegrityError (ValueError)        size or SHA-256 of the finished file does not match
    │   └── HashPrefixMismatch (RuntimeError)  torch.hub drop-ins: the SHA-256 prefix does not
    │                                      match (RuntimeError as torch.hub raises)
    ├── TransportError                     one request failed (``retryable`` says if worth retrying)
    │   ├── HTTPStatusError                the server answered with an error status
    │   ├── ConnectionFailed (ConnectionError)  refused, reset, DNS, TLS
    │   ├── CertificateError (ssl.SSLCertVerificationError)  the server's TLS certificate is
    │   │                                  not trusted (never retried)
    │   ├── FetchTimeout (TimeoutError)    connect or read-idle timeout
    │   ├── TruncatedBody                  the body ended before the promised length
    │   ├── ProtocolError                  the answer does not fit the request (wrong range, ...)
    │   ├── TooManyRedirects               a redirect loop or too long a chain
    │   └── AddressBlocked                 the address policy refused where a URL leads (a
    │                                      local-network address, for ``asyncfetch serve``)
    ├── RetriesExhausted                   a byte range failed on every attempt and every source
    └── CheckpointMismatch (ValueError)    a checkpoint's weights do not fit the model

With ``insecure=True`` (``--insecure``) an :class:`InsecureWarning` (a UserWarning) says that no
certificate is checked.

Every error carries its context as attributes (``url``, ``path``, ``byte_range``, ``attempts``,
...), says in its message what happened and what to do next, and survives pickling. A password
in a URL is masked (``user:***@``) in the message and the attributes.
"""

from __future__ import annotations

import ssl
from typing import Any

from ._userinfo import redact


def _restore(cls: type[FetchError], args: tuple[Any, ...], state: dict[str, Any]) -> FetchError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class FetchError(Exception):
    """Base of every error asyncfetch raises.

    Attributes:
        url: the URL concerned, when there is one.
    """

    url: str | None

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(redact(message))
        self.url = redact(url) if url is not None else None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class InvalidRequest(FetchError, ValueError):
    """The caller asked for something that cannot work (bad URL, option or digest)."""


class DestinationError(FetchError, OSError):
    """The output path cannot be used: missing or read-only directory, disk full, a directory,
    a device or a FIFO.

    Attributes:
        path: the path concerned.
    """

    def __init__(self, message: str, *, path: str, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.path = path


class OfflineError(FetchError):
    """Offline mode is on and the file is not in the cache.

    Attributes:
        path: where the file was looked for.
    """

    def __init__(self, message: str, *, path: str, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.path = path


class IntegrityError(FetchError, ValueError):
    """The finished file's size or SHA-256 is not what was expected.

    Attributes:
        expected: the expected digest (or size, as text).
        actual: what was computed.
    """

    def __init__(self, message: str, *, url: str | None, expected: str, actual: str) -> None:
        super().__init__(message, url=url)
        self.expected = expected
        self.actual = actual


class HashPrefixMismatch(IntegrityError, RuntimeError):
    """The torch.hub drop-ins' check of a SHA-256 prefix (``hash_prefix``, ``check_hash``)
    failed. Also a RuntimeError, which torch.hub raises there, so ``except RuntimeError`` written
    for torch.hub still catches it.
    """


class TransportError(FetchError):
    """One HTTP exchange failed.

    Attributes:
        retryable: whether trying again (later, or elsewhere) may succeed.
        retry_after: seconds the server asked us to wait, if it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.retryable = retryable
        self.retry_after = retry_after


class HTTPStatusError(TransportError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
    """

    def __init__(
        self, message: str, *, url: str | None, status: int, retry_after: float | None = None
    ) -> None:
        retryable = status in RETRYABLE_STATUSES or status >= 500
        super().__init__(message, url=url, retryable=retryable, retry_after=retry_after)
        self.status = status


RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class ConnectionFailed(TransportError, ConnectionError):
    """The connection could not be made, or broke (refused, reset, DNS, TLS)."""


class CertificateError(TransportError, ssl.SSLCertVerificationError):
    """The server's TLS certificate could not be verified: signed by a CA that is not
    trusted (a private CA, a TLS-inspecting proxy's), expired, or for another host.

    Never retried: another try meets the same certificate. Also an
    ``ssl.SSLCertVerificationError`` (so an ``ssl.SSLError``), so ``except ssl.SSLError``
    written for other clients still catches it.

    Attributes:
        verify_message: OpenSSL's words for what failed (``unable to get local issuer
            certificate``, ``Hostname mismatch, ...``), as in ``ssl.SSLCertVerificationError``.
        verify_code: OpenSSL's code for it (1, unspecified, when not known).
    """

    def __init__(
        self, message: str, *, url: str | None, verify_message: str, verify_code: int
    ) -> None:
        super().__init__(message, url=url, retryable=False)
        self.verify_message = verify_message
        self.verify_code = verify_code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # ssl.SSLError's shows the args tuple


class FetchTimeout(TransportError, TimeoutError):
    """No connection within the connect timeout, or no bytes within the read timeout."""


class TruncatedBody(TransportError):
    """The body ended before the length the server promised."""


class ProtocolError(TransportError):
    """The server's answer does not fit the request (a wrong range, a size that changed)."""


class TooManyRedirects(TransportError):
    """The server redirected in a loop or through too long a chain."""

    def __init__(self, message: str, *, url: str | None) -> None:
        super().__init__(message, url=url, retryable=False)


class AddressBlocked(TransportError):
    """The address policy (:class:`asyncfetch._netpolicy.NetPolicy`, which ``asyncfetch
    serve`` sets) refused the address a URL, or a redirect, leads to: nothing was sent there.
    Never retried.

    Attributes:
        address: the address refused (``127.0.0.1``, ``169.254.169.254``, ...).
    """

    def __init__(self, message: str, *, url: str | None, address: str) -> None:
        super().__init__(message, url=url, retryable=False)
        self.address = address


class RetriesExhausted(FetchError):
    """A byte range could not be fetched: every attempt on every source failed.

    Attributes:
        byte_range: ``(start, end)``, end exclusive, of the part that was still missing.
        attempts: how many attempts were made.
        failures: the last failure of each source, as ``{url: message}``.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None,
        byte_range: tuple[int, int] | None,
        attempts: int,
        failures: dict[str, str],
    ) -> None:
        super().__init__(message, url=url)
        self.byte_range = byte_range
        self.attempts = attempts
        self.failures = {redact(source): redact(why) for source, why in failures.items()}


class CheckpointMismatch(FetchError, ValueError):
    """A checkpoint's weights do not fit the model (nothing matches, or ``strict`` loading
    found missing, unexpected or differently shaped keys).

    Attributes:
        report: the LoadReport of what did and did not match, when there is one.
    """

    def __init__(self, message: str, *, url: str | None = None, report: Any = None) -> None:
        super().__init__(message, url=url)
        self.report = report


class InsecureWarning(UserWarning):
    """A download runs with ``insecure=True`` (``--insecure``): no TLS certificate is checked,
    so anyone on the way can read and change what is downloaded."""


# carrying an error to another process --------------------------------------------------------

_PLAIN = (str, int, float, bool, type(None))


def error_note(error: BaseException) -> dict[str, Any]:
    """``error`` as JSON-ready data: its class name, message and plain attributes.

    An attribute that is not plain data (a LoadReport) is carried as ``None``.
    :func:`error_from_note` makes the error again in another process.
    """
    attributes = {
        name: value if _is_plain(value) else None
        for name, value in vars(error).items()
        if not name.startswith("_")
    }
    return {"error": type(error).__name__, "message": str(error), "attributes": attributes}


def _is_plain(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, _PLAIN) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and isinstance(v, _PLAIN) for k, v in value.items())
    return isinstance(value, _PLAIN)


def error_from_note(note: dict[str, Any], message: str) -> FetchError:
    """The error :func:`error_note` described, with ``message``: the same class if it is one
    of asyncfetch's own (looked up by name, nothing is unpickled), else a FetchError.

    Attributes come back as noted (a list as a tuple); the URL stays masked.
    """
    cls = _own_classes().get(str(note.get("error")), FetchError)
    error = cls.__new__(cls)
    Exception.__init__(error, redact(message))
    error.url = None
    attributes = note.get("attributes")
    if cls is not FetchError and isinstance(attributes, dict):
        for name, value in attributes.items():
            if isinstance(name, str) and name.isidentifier() and not name.startswith("_"):
                setattr(error, name, tuple(value) if isinstance(value, list) else value)
    error.url = redact(error.url) if isinstance(error.url, str) else None
    return error


def _own_classes() -> dict[str, type[FetchError]]:
    """asyncfetch's error classes by name: FetchError and its subclasses in this module."""
    found: dict[str, type[FetchError]] = {}
    todo: list[type[FetchError]] = [FetchError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == __name__:
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
