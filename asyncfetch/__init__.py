"""asyncfetch: fast, verified, resumable downloads of large model checkpoints.

Users import from here; everything in underscore modules is private.
"""

from . import cache
from ._api import download
from ._config import RetryPolicy, Timeouts
from ._engine import fetch
from ._errors import (
    ConnectionFailed,
    DestinationError,
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    IntegrityError,
    InvalidRequest,
    OfflineError,
    ProtocolError,
    RetriesExhausted,
    TooManyRedirects,
    TransportError,
    TruncatedBody,
)
from ._models import ByteRange, FetchResult, ProgressEvent, RemoteInfo

__version__ = "0.1.0"

__all__ = [
    "ByteRange",
    "ConnectionFailed",
    "DestinationError",
    "FetchError",
    "FetchResult",
    "FetchTimeout",
    "HTTPStatusError",
    "IntegrityError",
    "InvalidRequest",
    "OfflineError",
    "ProgressEvent",
    "ProtocolError",
    "RemoteInfo",
    "RetriesExhausted",
    "RetryPolicy",
    "Timeouts",
    "TooManyRedirects",
    "TransportError",
    "TruncatedBody",
    "__version__",
    "cache",
    "download",
    "fetch",
]
