"""The torch.hub-compatible cache: where checkpoints live and what they are called."""

from __future__ import annotations

import posixpath
import urllib.parse
from os import PathLike
from pathlib import Path

from ._config import env_settings
from ._errors import InvalidRequest


def checkpoints_dir(model_dir: str | PathLike[str] | None = None) -> Path:
    """torch.hub's checkpoint directory: ``model_dir``, else ``$TORCH_HOME/hub/checkpoints``."""
    if model_dir is not None:
        return Path(model_dir).expanduser()
    return env_settings().torch_home / "hub" / "checkpoints"


def file_name_for(url: str) -> str:
    """The cache file name torch.hub uses for ``url``: the basename of its path."""
    name = posixpath.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise InvalidRequest(f"{url} has no file name in its path; pass a file name", url=url)
    return name


def cached_path(
    url: str, model_dir: str | PathLike[str] | None = None, file_name: str | None = None
) -> Path:
    """Where the cache keeps ``url``'s file."""
    return checkpoints_dir(model_dir) / (file_name or file_name_for(url))
