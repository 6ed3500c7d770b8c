"""The downloaders under test: each tool is a name, an argv builder and how to check its work.

To add a tool, write a function ``Job -> argv`` and add a :class:`Tool` to :data:`TOOLS`.
Python tools run as ``python -c SNIPPET ARGS`` children of the venv interpreter, so their
wall time includes interpreter start-up and imports, as a user would see it. The argv
builders and hooks of the resume, batch and cache-hit scenarios live in ``_resume``,
``_batchtools`` and ``_cachehit``; every tool is registered here.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

from benchmarks import _batchtools, _cachehit, _resume
from benchmarks._job import PY, Job, Tool, asyncfetch_facts, json_objects, last_line

HASHONLY_BLOCK = 4 << 20
HF_CHUNK_SIZE = 10 * 1024 * 1024  # huggingface_hub's DOWNLOAD_CHUNK_SIZE for hf_transfer
HF_HUB_MAX_FILES = 100  # huggingface_hub's HF_TRANSFER_CONCURRENCY
PROBE_TIMEOUT_S = 60.0

TORCH_HUB_SNIPPET = """\
import sys
from torch.hub import download_url_to_file
download_url_to_file(sys.argv[1], sys.argv[2], hash_prefix=sys.argv[3] or None, progress=False)
"""

HF_TRANSFER_SNIPPET = """\
import sys
import hf_transfer
hf_transfer.download(
    url=sys.argv[1], filename=sys.argv[2], max_files=int(sys.argv[3]), chunk_size=int(sys.argv[4])
)
"""

HASHONLY_SNIPPET = """\
import hashlib, sys
digest = hashlib.sha256()
buf = bytearray(int(sys.argv[2]))
view = memoryview(buf)
with open(sys.argv[1], "rb", buffering=0) as f:
    while n := f.readinto(buf):
        digest.update(view[:n])
print(digest.hexdigest())
"""


def asyncfetch_argv(job: Job, *, verify: bool, mirrors: bool = False) -> list[str]:
    """``python -m asyncfetch get --json``, with ``--sha256`` or ``--no-hash``.

    With ``mirrors``, every other URL of the file is passed as ``--mirror``.
    """
    check = ["--sha256", job.sha256] if verify else ["--no-hash"]
    extra = [arg for url in job.mirrors for arg in ("--mirror", url)] if mirrors else []
    return [
        job.python, "-m", "asyncfetch", "get", job.url, *extra, "-o", str(job.dest),
        "--no-progress", "--json", "--connections", str(job.connections), *check,
    ]  # fmt: skip


RANK_SAMPLE = "64M"  # 16 MiB per connection: well past nginx's one-second burst per request


def asyncfetch_mirrors_argv(job: Job) -> list[str]:
    """``python -m asyncfetch mirrors URL [MIRROR...] --sample 64M --json``: rank, download
    nothing.

    The default 8 MiB sample (2 MiB on each of 4 connections) fits inside the burst that
    nginx's ``limit_rate`` grants every request (a second's worth: 4 and 12 MB here), so
    it would time the burst, not the cap, and rank the two mirrors by chance.
    """
    return [job.python, "-m", "asyncfetch", "mirrors", job.url, *job.mirrors,
            "--sample", RANK_SAMPLE, "--json"]  # fmt: skip


def ranking_facts(text: str) -> dict[str, object]:
    """The URLs in the order ``asyncfetch mirrors --json`` ranked them (fastest first)."""
    return {"ranking": [str(obj["url"]) for obj in json_objects(text) if "url" in obj]}


def check_ranking(job: Job, text: str) -> str | None:
    """A ranking must name every URL of the file once."""
    ranking = ranking_facts(text)["ranking"]
    expected = {job.url, *job.mirrors}
    assert isinstance(ranking, list)
    if sorted(ranking) != sorted(expected):
        return f"ranked {ranking}, expected the URLs {sorted(expected)}"
    return None


def torch_hub_argv(job: Job, *, verify: bool) -> list[str]:
    """``torch.hub.download_url_to_file``; verified means ``hash_prefix`` = 8 hex digits."""
    prefix = job.sha256[:8] if verify else ""
    return [job.python, "-c", TORCH_HUB_SNIPPET, job.url, str(job.dest), prefix]


def aria2c_argv(job: Job, *, verify: bool, mirrors: bool = False) -> list[str]:
    """``aria2c -x16 -s16 -k1M``; verified adds ``--checksum=sha-256=HEX``.

    With ``mirrors``, every URL of the file is given: aria2c treats the URIs on its command
    line as mirrors of one file and spreads its ``--split`` connections over them.
    """
    n = str(job.connections)
    check = [f"--checksum=sha-256={job.sha256}"] if verify else []
    uris = [job.url, *job.mirrors] if mirrors else [job.url]
    return [
        "aria2c", "--no-conf", f"--max-connection-per-server={n}", f"--split={n}",
        "--min-split-size=1M", "--file-allocation=none", "--allow-overwrite=true",
        "--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
        *check, "-d", str(job.dest.parent), "-o", job.dest.name, *uris,
    ]  # fmt: skip


def hf_transfer_argv(job: Job, *, max_files: int | None = None) -> list[str]:
    """``hf_transfer.download`` with 10 MiB chunks; ``max_files`` parallel requests."""
    files = str(max_files or job.connections)
    return [job.python, "-c", HF_TRANSFER_SNIPPET, job.url, str(job.dest), files,
            str(HF_CHUNK_SIZE)]  # fmt: skip


def curl_argv(job: Job) -> list[str]:
    """``curl -s -o PATH URL`` (plus ``--fail``, so that an HTTP error is a failed run)."""
    return ["curl", "-s", "--fail", "-o", str(job.dest), job.url]


def curl_fsync_argv(job: Job) -> list[str]:
    """curl, then ``sync --data`` of its file: curl made as durable as asyncfetch's finish
    (which fsyncs before the rename), so the two can be compared like for like."""
    script = 'curl -s --fail -o "$1" "$2" && sync --data "$1"'
    return ["sh", "-c", script, "curl+fsync", str(job.dest), job.url]


def hf_transfer_fsync_argv(job: Job) -> list[str]:
    """hf_transfer, then ``sync --data`` of its file (durable, as asyncfetch's finish)."""
    script = 'dest="$1"; shift; "$@" && sync --data "$dest"'
    return ["sh", "-c", script, "hf_transfer+fsync", str(job.dest), *hf_transfer_argv(job)]


def curl_tee_openssl_argv(job: Job) -> list[str]:
    """A verified download with the standard tools: curl's bytes both to the file (``tee``)
    and to ``openssl dgst -sha256`` as they come, then ``sync --data``; prints the digest last
    (coreutils' ``sha256sum`` is left out: it does not use SHA-NI, 3x slower here)."""
    script = (
        'set -o pipefail; { curl -s --fail "$2" | tee "$1" | openssl dgst -sha256 -r; }'
        ' | cut -c1-64 && sync --data "$1"'
    )
    return ["bash", "-c", script, "curl|openssl", str(job.dest), job.url]


def hashonly_argv(job: Job) -> list[str]:
    """SHA-256 of the page-cached source file: the ceiling for any verified download."""
    return [job.python, "-c", HASHONLY_SNIPPET, str(job.source), str(HASHONLY_BLOCK)]


def check_digest(job: Job, text: str) -> str | None:
    """``hashonly`` (and curl + tee + openssl) must print the file's SHA-256 last."""
    digest = last_line(text)
    return None if digest == job.sha256 else f"printed digest {digest[:80]!r}"


GET = (PY, "-m", "asyncfetch", "get", "--help")
CURL_OPENSSL = "curl + tee + openssl sha256 + fsync"

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("asyncfetch", lambda j: asyncfetch_argv(j, verify=True), True, GET,
             is_asyncfetch=True, facts=asyncfetch_facts),
        Tool("asyncfetch --no-hash", lambda j: asyncfetch_argv(j, verify=False), False, GET,
             is_asyncfetch=True, facts=asyncfetch_facts),
        Tool("asyncfetch --mirror", lambda j: asyncfetch_argv(j, verify=True, mirrors=True),
             True, GET, is_asyncfetch=True, facts=asyncfetch_facts),
        Tool("asyncfetch mirrors", asyncfetch_mirrors_argv, False,
             (PY, "-m", "asyncfetch", "mirrors", "--help"), writes_file=False,
             is_asyncfetch=True, check_output=check_ranking, facts=ranking_facts, rate=False),
        Tool("torch.hub hash_prefix", lambda j: torch_hub_argv(j, verify=True), True,
             (PY, "-c", "import torch.hub")),
        Tool("torch.hub", lambda j: torch_hub_argv(j, verify=False), False,
             (PY, "-c", "import torch.hub")),
        Tool("aria2c --checksum", lambda j: aria2c_argv(j, verify=True), True,
             ("aria2c", "--version")),
        Tool("aria2c --checksum 2 URIs", lambda j: aria2c_argv(j, verify=True, mirrors=True),
             True, ("aria2c", "--version")),
        Tool("aria2c", lambda j: aria2c_argv(j, verify=False), False, ("aria2c", "--version")),
        Tool("hf_transfer", hf_transfer_argv, False, (PY, "-c", "import hf_transfer")),
        Tool("hf_transfer x100", lambda j: hf_transfer_argv(j, max_files=HF_HUB_MAX_FILES),
             False, (PY, "-c", "import hf_transfer")),
        Tool("hf_transfer + fsync", hf_transfer_fsync_argv, False,
             (PY, "-c", "import hf_transfer")),
        Tool("curl", curl_argv, False, ("curl", "--version")),
        Tool("curl + fsync", curl_fsync_argv, False, ("sync", "--version")),
        Tool(CURL_OPENSSL, curl_tee_openssl_argv, True, ("openssl", "version"),
             check_output=check_digest),
        Tool("hashonly", hashonly_argv, True, (PY, "-c", "import hashlib"), writes_file=False,
             check_output=check_digest),
        Tool("asyncfetch rerun after kill", lambda j: asyncfetch_argv(j, verify=True), True,
             GET, is_asyncfetch=True, facts=asyncfetch_facts, rate=False,
             prepare=lambda j: _resume.kill_halfway(asyncfetch_argv(j, verify=True), j)),
        Tool("asyncfetch batch", _batchtools.asyncfetch_batch_argv, True,
             (PY, "-m", "asyncfetch", "batch", "--help"), is_asyncfetch=True,
             facts=asyncfetch_facts),
        Tool("aria2c -i -j16 -x1 --checksum", _batchtools.aria2c_input_argv, True,
             ("aria2c", "--version")),
        Tool("torch.hub hash_prefix loop", _batchtools.torch_hub_loop_argv, True,
             (PY, "-c", "import torch.hub"), max_runs=1),
        Tool("asyncfetch cache hit", _cachehit.asyncfetch_argv, True, _cachehit.PROBE,
             writes_file=False, is_asyncfetch=True, prepare=_cachehit.populate,
             check_output=_cachehit.check_loaded, rate=False, imports_torch=True),
        Tool("torch.load", _cachehit.torch_load_argv, False, (PY, "-c", "import torch"),
             writes_file=False, prepare=_cachehit.populate, check_output=_cachehit.check_loaded,
             rate=False, imports_torch=True),
    )
}  # fmt: skip


def unavailable(tool: Tool, python: str) -> str | None:
    """Return why ``tool`` cannot run here, or None when its probe command succeeds."""
    return _probe(tuple(python if part == PY else part for part in tool.probe))


@cache
def _probe(argv: tuple[str, ...]) -> str | None:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not found (run benchmarks/setup.sh)"
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(argv[:3])}: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"`{' '.join(argv)}` failed: {lines[-1] if lines else done.returncode}"
    return None
