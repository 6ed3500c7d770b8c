"""asyncfetch: fast, verified, resumable downloads of large model checkpoints.

Users import from here; everything in underscore modules is private. The public names load on
first use (PEP 562), so ``import asyncfetch`` and ``asyncfetch --version`` import next to
nothing; type checkers see them through the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

import importlib
import typing as _typing

from ._version import __version__

if _typing.TYPE_CHECKING:
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
    from .hub import download_url_to_file, load_pretrained, load_state_dict_from_url

_WHERE: dict[str, str] = {  # public name -> the module that defines it (a submodule: itself)
    "AddressBlocked": "._errors",
    "BatchItem": "._batch.many",
    "BatchProgress": "._engine.progress",
    "ByteRange": "._models",
    "CertificateError": "._errors",
    "CheckpointMismatch": "._errors",
    "ConnectionFailed": "._errors",
    "DestinationError": "._errors",
    "FetchError": "._errors",
    "FetchResult": "._models",
    "FetchTimeout": "._errors",
    "HTTPStatusError": "._errors",
    "HashPrefixMismatch": "._errors",
    "InsecureWarning": "._errors",
    "IntegrityError": "._errors",
    "InvalidRequest": "._errors",
    "Job": "._service.client",
    "LoadReport": "._hub.adapt",
    "MirrorReport": "._engine.rank",
    "OfflineError": "._errors",
    "ProgressEvent": "._models",
    "ProgressStream": "._engine.progress",
    "ProtocolError": "._errors",
    "RemoteInfo": "._models",
    "RetriesExhausted": "._errors",
    "RetryPolicy": "._config",
    "ServiceClient": "._service.client",
    "ServiceError": "._service.client",
    "Source": "._batch.many",
    "SyncServiceClient": "._service.client",
    "Timeouts": "._config",
    "TooManyRedirects": "._errors",
    "TransportError": "._errors",
    "TruncatedBody": "._errors",
    "cache": ".cache",
    "download": "._api",
    "download_url_to_file": ".hub",
    "fetch": "._engine.fetch",
    "fetch_many": "._batch.many",
    "hub": ".hub",
    "load_pretrained": ".hub",
    "load_state_dict_from_url": ".hub",
    "rank_mirrors": "._engine.rank",
}

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


def __getattr__(name: str) -> _typing.Any:
    """Load a public name on first use, and keep it (PEP 562)."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'asyncfetch' has no attribute {name!r}")
    importlib.import_module(".hub", __name__)  # first: it points the cache at torch.hub's dir
    module = importlib.import_module(where, __name__)
    value = module if where == f".{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
