"""Drop-ins for ``torch.hub``: the same parameters, defaults and cache files, downloaded over
parallel ranged connections (and mirrors), resumable and verified.

``import torch`` happens inside these functions, so ``import asyncfetch`` stays light, and
torch is an extra (``pip install 'asyncfetch[torch]'``): without it the loading drop-ins raise an
ImportError that names the extra, before anything is downloaded, and ``download_url_to_file``,
which only moves bytes, works all the same.

    state_dict = asyncfetch.load_state_dict_from_url(url)           # as torch.hub
    report = asyncfetch.load_pretrained(model, "resnet18")          # a registry name
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ._cache import lookup as _cache
from ._cache.lookup import cached_path
from ._config import RetryPolicy, Timeouts
from ._engine.request import mirror_urls
from ._errors import InvalidRequest
from ._hub import adapt as _adapt
from ._hub import files as _hubfile
from ._hub.adapt import LoadReport
from ._hub.distributed import NodeRole, role_from_env
from ._hub.urlerrors import as_urllib_errors, default_timeout
from ._options import Options, make_options
from ._userinfo import redact

if TYPE_CHECKING:
    import torch

    MapLocation: TypeAlias = (
        Callable[[torch.types.Storage, str], torch.types.Storage]
        | torch.device
        | str
        | dict[str, str]
        | None
    )
else:
    MapLocation: TypeAlias = Any

log = logging.getLogger("asyncfetch")

SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_DEVICES = ("cpu", "cuda")  # the rest load on the CPU, then move
_TORCH_EXTRA = "pip install 'asyncfetch[torch]'"
_EXTRA_MODULES = frozenset({"torch", "safetensors"})


def load_state_dict_from_url(
    url: str,
    model_dir: str | None = None,
    map_location: MapLocation = None,
    progress: bool = True,
    check_hash: bool = False,
    file_name: str | None = None,
    weights_only: bool = False,
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    connections: int = 16,
    registry: str | PathLike[str] | None = None,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    mirror_headers: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Load the torch-serialized object at ``url``, downloading it into the cache first.

    The same parameters, defaults, cache file and result as ``torch.hub``'s function of this
    name (including legacy zip checkpoints and ``map_location`` as a string, ``torch.device``,
    dict or callable); ``.safetensors`` files load through safetensors. The download runs over
    ``connections`` parallel ranged requests spread over ``url`` and ``mirrors``, resumes
    after an interruption, and under torchrun happens once per node.

    Args:
        url: the file's URL, or the name of a registry entry.
        model_dir: the cache directory (default ``<torch.hub.get_dir()>/checkpoints``).
        map_location: where to put the tensors, as for ``torch.load``.
        progress: draw a progress bar on stderr.
        check_hash: verify the SHA-256 prefix in the file name (``NAME-<hex>.EXT``); a name
            without a usable prefix (8+ hex digits) is an error, not a skipped check.
        file_name: the cache file name (default: the URL's).
        weights_only: passed to ``torch.load``.
        mirrors: more URLs serving the same file.
        sha256: the file's full SHA-256; a cached file is verified against it too.
        connections: parallel connections in all.
        registry: the registry file to look names up in (default: see the README).
        retry: a RetryPolicy or a number of retries.
        timeout: a Timeouts, or seconds for connect and read-idle (default:
            ``socket.getdefaulttimeout()`` when set, as for torch.hub).
        headers: extra request headers (``Authorization`` and ``Cookie`` only to ``url``'s
            origin).
        mirror_headers: headers for mirrors, ``{mirror URL: {name: value}}``, each only to
            that URL's origin.

    Raises:
        FetchError: the download failed or did not verify (a subclass says how). As for
            torch.hub, a failed connection is also a ``urllib.error.URLError``, an error
            status also a ``urllib.error.HTTPError`` (with ``code``), a timeout also a
            ``TimeoutError``.
        ImportError: torch (or, for a ``.safetensors`` file, safetensors) is not installed;
            the message names the ``torch`` extra.
    """
    _require_torch()
    source = _hubfile.resolve(
        url, mirrors=mirrors, sha256=sha256, file_name=file_name, check_hash=check_hash,
        registry=registry,
    )  # fmt: skip
    options = make_options(
        connections=connections, retry=retry, timeout=_timeout(timeout), headers=headers,
        mirror_headers=mirror_headers, progress=progress,
    )  # fmt: skip
    path = _fetch_checkpoint(source, model_dir, options)
    loaded: dict[str, Any] = load_file(path, map_location, weights_only)
    return loaded


def download_url_to_file(
    url: str,
    dst: str | PathLike[str],
    hash_prefix: str | None = None,
    progress: bool = True,
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    connections: int = 16,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    mirror_headers: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Download ``url`` to the path ``dst``, as ``torch.hub.download_url_to_file``.

    ``dst`` appears only once the file is complete and its SHA-256 starts with
    ``hash_prefix`` (and equals ``sha256``, when given); an empty ``hash_prefix``, as for
    torch.hub, checks nothing. An existing ``dst`` is replaced by a
    fresh download, as torch.hub does, unless it is the file asked for: with ``sha256``, when
    its digest matches; with neither ``sha256`` nor ``hash_prefix``, when asyncfetch downloaded
    it (its marker beside it vouches for it) and a probe shows the same size and validators.

    Raises:
        IntegrityError: the digest does not match ``sha256`` (a ValueError); for
            ``hash_prefix``, a HashPrefixMismatch, also a RuntimeError, as torch.hub raises.
        FetchError: the download failed (also a ``URLError``, ``HTTPError`` or
            ``TimeoutError``, as for :func:`load_state_dict_from_url`).
    """
    prefix = _hubfile.check_prefix(hash_prefix, url) if hash_prefix else None  # "": no check
    source = _hubfile.Checkpoint(url, mirror_urls(mirrors), sha256)
    options = make_options(
        connections=connections, retry=retry, timeout=_timeout(timeout), headers=headers,
        mirror_headers=mirror_headers, progress=progress, trust_unvouched=False,
    )  # fmt: skip
    with as_urllib_errors():
        _hubfile.get_file(source, Path(dst).expanduser(), prefix, options)


def load_pretrained(
    model: torch.nn.Module,
    source: str | PathLike[str],
    *,
    strict: bool = False,
    ignore_keys: Iterable[str] = (),
    strip_prefixes: Iterable[str] = _adapt.DEFAULT_PREFIXES,
    map_location: MapLocation = "cpu",
    weights_only: bool = True,
    checkpoint_key: str | None = None,
    model_dir: str | None = None,
    file_name: str | None = None,
    check_hash: bool = False,
    progress: bool = True,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    connections: int = 16,
    registry: str | PathLike[str] | None = None,
) -> LoadReport:
    """Load pretrained weights into ``model`` from a URL, a registry name or a local path.

    The weights are picked out of common checkpoint wrappers (``state_dict``, ``model``,
    ``model_ema``, ``state_dict_ema``; or ``checkpoint_key``), ``strip_prefixes`` come off
    their names (``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``), keys matching
    an ``ignore_keys`` pattern (``fnmatch``, e.g. ``"fc.*"``) are dropped, and so are keys
    whose shapes differ from the model's; the rest are loaded.

    Args:
        model: the module to load into.
        source: a URL, a registry name, or a ``pathlib.Path`` to a local file.
        strict: raise CheckpointMismatch unless every key matches (ignored ones aside).
        weights_only: passed to ``torch.load`` (safe by default).
        checkpoint_key: take the weights from this key of the checkpoint dict.
        (the rest as for :func:`load_state_dict_from_url`)

    Returns:
        A LoadReport of loaded, missing, unexpected, shape-mismatched and ignored keys; its
        summary is also logged (a warning when anything did not load).

    Raises:
        CheckpointMismatch: nothing matches (the message hints at a prefix to strip), or
            ``strict`` and something does not.
        ImportError: torch or safetensors is missing (see :func:`load_state_dict_from_url`).
    """
    _require_torch()
    if isinstance(source, PathLike):
        path, label = Path(source), os.fspath(source)
    else:
        found = _hubfile.resolve(
            source, mirrors=mirrors, sha256=sha256, file_name=file_name,
            check_hash=check_hash, registry=registry,
        )  # fmt: skip
        options = make_options(connections=connections, timeout=_timeout(None), progress=progress)
        path, label = _fetch_checkpoint(found, model_dir, options), redact(found.url)
    checkpoint = load_file(path, map_location, weights_only)
    state = _adapt.unwrap(checkpoint, checkpoint_key, source=label)
    report, selected = _adapt.plan(
        state, _adapt.shapes_of(model.state_dict()), strip_prefixes=strip_prefixes,
        ignore_keys=ignore_keys, strict=strict, source=label,
    )  # fmt: skip
    model.load_state_dict(selected, strict=False)
    _adapt.log_report(report, log)
    return report


# --------------------------------------------------------------------------------------------


def _fetch_checkpoint(source: _hubfile.Checkpoint, model_dir: str | None, options: Options) -> Path:
    directory = model_dir if model_dir is not None else _hub_checkpoints()
    path = cached_path(source.url, directory, source.file_name)
    if path.suffix == SAFETENSORS_SUFFIX:
        _require_torch("safetensors")  # before a download it could not load
    with as_urllib_errors():
        _hubfile.ensure_cached(source, path, options, _node_role())
    return path


def _timeout(timeout: Timeouts | float | None) -> Timeouts | float | None:
    """``timeout``, else ``socket.setdefaulttimeout``'s, which torch.hub's callers set."""
    return timeout if timeout is not None else default_timeout()


def _hub_checkpoints() -> Path:
    """torch.hub's default: ``<torch.hub.get_dir()>/checkpoints`` (honours ``set_dir``)."""
    with _torch_extra():
        import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _loaded_hub_checkpoints() -> Path | None:
    """:func:`_hub_checkpoints` if torch is loaded already (only then can ``set_dir`` have
    moved it), else None: the cache functions and the command line never import torch."""
    return _hub_checkpoints() if "torch.hub" in sys.modules else None


# asyncfetch.cache and the rest of the package see the directory set_dir chose, as downloads do
_cache.use_hub_dir_source(_loaded_hub_checkpoints)


def _node_role() -> NodeRole:
    """torchrun's environment, else what an initialized process group says."""
    role = role_from_env()
    dist = sys.modules.get("torch.distributed")  # not initialized if never imported
    if role.distributed or dist is None or not dist.is_available() or not dist.is_initialized():
        return role
    world_size = dist.get_world_size()
    return NodeRole(rank=dist.get_rank(), local_rank=None, world_size=world_size)


def load_file(path: Path, map_location: MapLocation, weights_only: bool) -> Any:
    """Load a checkpoint file: safetensors, a legacy zip, or anything ``torch.load`` reads."""
    if path.suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(path, map_location)
    with _torch_extra():
        import torch

    member = _legacy_zip_member(path)
    if member is not None:
        warnings.warn(
            f"{path} is a legacy zip checkpoint (torch < 1.6); re-save it with torch.save() "
            "in the current format. Falling back to the old format.",
            FutureWarning,
            stacklevel=3,
        )
        path = _extract(path, member)
    return torch.load(path, map_location=map_location, weights_only=weights_only)


def _legacy_zip_member(path: Path) -> str | None:
    """The single member of a legacy zip checkpoint, or None for any other file."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    if len(members) == 1 and not members[0].is_dir():
        return members[0].filename
    return None


def _extract(path: Path, member: str) -> Path:
    """Extract ``member`` beside ``path`` (as torch.hub), atomically and never outside it."""
    directory = path.parent.resolve()
    target = (directory / member).resolve()
    if target.parent != directory:
        raise InvalidRequest(
            f"{path}: zip member {member!r} would land outside {directory}; refusing to extract"
        )
    temporary = target.with_name(f"{target.name}.{secrets.token_hex(4)}.extracting")
    try:
        with zipfile.ZipFile(path) as archive, archive.open(member) as src:
            temporary.write_bytes(src.read())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _load_safetensors(path: Path, map_location: MapLocation) -> dict[str, Any]:
    """A safetensors file as a state dict of tensors placed as ``map_location`` says."""
    with _torch_extra():
        from safetensors.torch import load_file as load_safetensors

    if map_location is None or isinstance(map_location, str) or _is_device(map_location):
        device = "cpu" if map_location is None else str(map_location)
        if device.split(":")[0] in SAFETENSORS_DEVICES:
            loaded: dict[str, Any] = load_safetensors(str(path), device=device)
            return loaded
        return {k: t.to(device) for k, t in load_safetensors(str(path), device="cpu").items()}
    tensors: dict[str, Any] = load_safetensors(str(path), device="cpu")
    if isinstance(map_location, Mapping):
        device = map_location.get("cpu", "cpu")
        return {name: tensor.to(device) for name, tensor in tensors.items()}
    if callable(map_location):
        return {name: _relocate(tensor, map_location) for name, tensor in tensors.items()}
    raise InvalidRequest(f"{path}: map_location {map_location!r} is not a device, dict or callable")


def _is_device(value: object) -> bool:
    import torch

    return isinstance(value, torch.device)


def _relocate(tensor: torch.Tensor, map_location: Callable[..., Any]) -> torch.Tensor:
    """Apply a ``torch.load``-style callable (storage, location) → storage to one tensor."""
    import torch

    storage = map_location(tensor.untyped_storage(), "cpu")
    if storage is None:
        return tensor
    moved = torch.empty(0, dtype=tensor.dtype, device=storage.device)
    return moved.set_(storage, tensor.storage_offset(), tensor.size(), tensor.stride())


def _require_torch(module: str = "torch") -> None:
    """Raise the ImportError of :func:`_torch_extra` unless ``module`` (torch, or safetensors)
    can be imported; the drop-ins call it before they download a file they could not load."""
    with _torch_extra():
        __import__(module)


@contextlib.contextmanager
def _torch_extra() -> Iterator[None]:
    """Turn a missing torch or safetensors, within the block, into an ImportError that says
    which extra brings it; any other import error passes through as it is."""
    try:
        yield
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _EXTRA_MODULES:
            raise
        raise ModuleNotFoundError(
            f"asyncfetch's torch.hub drop-ins need {missing}, which is not installed ({exc}); "
            f"install the torch extra: {_TORCH_EXTRA} (from a clone: pip install '.[torch]')",
            name=missing,
        ) from exc
