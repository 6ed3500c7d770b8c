"""The model registry: names → sources (URL, mirrors, SHA-256, file name), from a TOML file.

A registry file has one table per name::

    [resnet18]
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    mirrors = ["https://mirror.example.org/models/resnet18-f37072fd.pth"]   # optional
    sha256 = "<64 hex digits, measured>"                                    # optional
    file_name = "resnet18.pth"                                              # optional
    check_hash = true        # optional: verify the SHA-256 prefix in the file name
    description = "..."      # optional, for people

Which file is read: the one passed in (``--registry FILE``, ``registry=``), else
``$ASYNCFETCH_REGISTRY``, else the default ``$XDG_CONFIG_HOME/asyncfetch/registry.toml``
(``~/.config/asyncfetch/registry.toml``) when it exists.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from .._config import env_settings
from .._errors import InvalidRequest
from .._expectation import is_sha256
from .._urls import check_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_KEYS = frozenset({"url", "mirrors", "sha256", "file_name", "check_hash", "description"})


@dataclass(frozen=True)
class Entry:
    """One registry name and where its file comes from."""

    name: str
    url: str
    mirrors: tuple[str, ...] = ()
    sha256: str | None = None
    file_name: str | None = None
    check_hash: bool = False
    description: str = ""
    registry: Path | None = None  # the file it was read from

    @property
    def where(self) -> str:
        """``registry FILE, entry [NAME]``: where to fix this entry, for messages."""
        return f"registry {self.registry}, entry [{self.name}]"


def default_registry_path() -> Path:
    """The registry read when none is given: ``$XDG_CONFIG_HOME/asyncfetch/registry.toml``."""
    return env_settings().config_home / "asyncfetch" / "registry.toml"


def registry_path(registry: str | PathLike[str] | None = None) -> Path | None:
    """The registry file to use: ``registry``, else ``$ASYNCFETCH_REGISTRY``, else the
    default location if a file is there, else None.

    Raises:
        InvalidRequest: a registry named explicitly (argument or environment) does not exist.
    """
    chosen = Path(registry).expanduser() if registry is not None else env_settings().registry
    if chosen is not None:
        if not chosen.is_file():
            raise InvalidRequest(f"registry file {chosen} does not exist; check the path")
        return chosen
    default = default_registry_path()
    return default if default.is_file() else None


def looks_like_name(text: str) -> bool:
    """Whether ``text`` can only be a registry name (no scheme, no path, no spaces)."""
    return "://" not in text and _NAME.fullmatch(text) is not None


def load_registry(path: str | PathLike[str]) -> dict[str, Entry]:
    """Read and check a registry file.

    Raises:
        InvalidRequest: the file cannot be read, is not TOML, or an entry is malformed.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise InvalidRequest(f"cannot read registry {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"registry {path} is not valid TOML: {exc}; fix the file") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"registry {path} is not valid TOML: byte {exc.start} is not UTF-8 ({exc.reason}); "
            "save the file as UTF-8"
        ) from None
    return {name: _entry(path, name, table) for name, table in data.items()}


def _entry(path: Path, name: str, table: Any) -> Entry:
    where = f"registry {path}, entry [{name}]"
    if not isinstance(table, Mapping):
        raise InvalidRequest(f'{where}: must be a table with at least url = "https://..."')
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"{where}: use letters, digits, '.', '_', '+' or '-' in names")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise InvalidRequest(f"{where}: unknown keys {unknown}; known: {sorted(_KEYS)}")
    url = _text(where, table, "url", required=True)
    sha256 = _text(where, table, "sha256")
    if sha256 is not None and not is_sha256(sha256):
        raise InvalidRequest(f"{where}: sha256 must be 64 hex digits, got {sha256!r}")
    mirrors = table.get("mirrors", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise InvalidRequest(f"{where}: mirrors must be a list of URLs")
    check_hash = table.get("check_hash", False)
    if not isinstance(check_hash, bool):
        raise InvalidRequest(f"{where}: check_hash must be true or false")
    file_name = _text(where, table, "file_name")
    if file_name is not None and not _plain_file_name(file_name):
        raise InvalidRequest(
            f"{where}: file_name must be a plain file name (no '/' or '\\', not '.' or '..'), "
            f"got {file_name!r}; the file goes in the cache directory"
        )
    try:
        for url_ in (url, *mirrors):
            check_url(str(url_))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None
    return Entry(
        name=name,
        url=str(url),
        mirrors=tuple(mirrors),
        sha256=sha256.lower() if sha256 else None,
        file_name=file_name,
        check_hash=check_hash,
        description=_text(where, table, "description") or "",
        registry=path,
    )


def _plain_file_name(name: str) -> bool:
    """Whether ``name`` names a file in a directory, not a path that could leave it."""
    return name not in (".", "..") and not any(sep in name for sep in ("/", "\\", "\0"))


def _text(where: str, table: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where}: {key} must be a non-empty string")
    return value


def lookup(name: str, registry: str | PathLike[str] | None = None) -> Entry:
    """The registry entry called ``name``.

    Raises:
        InvalidRequest: no registry file, or no entry of that name (the message lists the
            names there are, and where the registry was looked for).
    """
    path = registry_path(registry)
    if path is None:
        raise InvalidRequest(
            f"{name!r} is not a URL and there is no model registry to look it up in; give a "
            f"full URL (https://host/file), or a registry file with --registry FILE / "
            f"registry=, $ASYNCFETCH_REGISTRY, or {default_registry_path()}"
        )
    entries = load_registry(path)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise InvalidRequest(
            f"{name!r} is not a URL and registry {path} has no entry of that name "
            f"(entries: {known}); add it or give a full URL"
        )
    return entries[name]
