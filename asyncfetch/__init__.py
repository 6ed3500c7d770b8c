"""asyncfetch: fast, verified, resumable downloads of large model checkpoints.

Users import from here; everything in underscore modules is private.
"""

from . import cache
from ._api import download
from ._batch.many import BatchItem, Source, fetch_many
from ._config import RetryPolicy, Timeouts
from ._engine.fetch import fetch
from ._engine.progress import BatchProgress, ProgressStream
from ._engine.rank import MirrorReport, rank_mirrors
from ._errors import (
    AddressBlocked,
    CertificateError,
    CheckpointMismatch,
    ConnectionFailed,
    DestinationError,
    FetchError,
    FetchTimeout,
    HashPrefixMismatch,
    HTTPStatusError,
    InsecureWarning,
    IntegrityError,
    InvalidRequest,
    OfflineError,
    ProtocolError,
    RetriesExhausted,
    TooManyRedirects,
    TransportError,
    TruncatedBody,
)
from ._hub.adapt import LoadReport
from ._models import ByteRange, FetchResult, ProgressEvent, RemoteInfo
from ._service.client import Job, ServiceClient, ServiceError, SyncServiceClient
from ._version import __version__
from .hub import download_url_to_file, load_pretrained, load_state_dict_from_url

__all__ = [
    "AddressBlocked",
    "BatchItem",
    "BatchProgress",
    "ByteRange",
    "CertificateError",
    "CheckpointMismatch",
    "ConnectionFailed",
    "DestinationError",
    "FetchError",
    "FetchResult",
    "FetchTimeout",
    "HTTPStatusError",
    "HashPrefixMismatch",
    "InsecureWarning",
    "IntegrityError",
    "InvalidRequest",
    "Job",
    "LoadReport",
    "MirrorReport",
    "OfflineError",
    "ProgressEvent",
    "ProgressStream",
    "ProtocolError",
    "RemoteInfo",
    "RetriesExhausted",
    "RetryPolicy",
    "ServiceClient",
    "ServiceError",
    "Source",
    "SyncServiceClient",
    "Timeouts",
    "TooManyRedirects",
    "TransportError",
    "TruncatedBody",
    "__version__",
    "cache",
    "download",
    "download_url_to_file",
    "fetch",
    "fetch_many",
    "load_pretrained",
    "load_state_dict_from_url",
    "rank_mirrors",
]
