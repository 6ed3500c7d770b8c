"""A client of ``asyncfetch serve``'s jobs API: :class:`ServiceClient` (async) and
:class:`SyncServiceClient` (its sync twin, on a private loop as :mod:`asyncfetch._sync` runs it).

It speaks JSON to the service with aiohttp's client (never the server side), not through the
download transport: these are small API calls to one known service, not ranged downloads, and
the service's token must go to the service only; aiohttp is imported on the first call, so
``import asyncfetch`` still does not pay for it. The token comes from the same places as the
server's: ``--token-file``, else ``ASYNCFETCH_SERVICE_TOKEN``. An https service (``serve
--tls-cert``) is trusted as downloads are: ``cacert=`` (``--cacert``), else
``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` / ``SSL_CERT_FILE``, else the system store.

::

    async with ServiceClient("http://node1:8765", token=TOKEN) as service:
        job = await service.submit("https://example.org/model.bin", sha256=HEX)
        job = await service.wait(job.id)
        print(job.state, service.url + job.file)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._config import TLSTrust, env_settings
from .._errors import FetchError
from .._sync import run_sync
from .._transport.tls import TRUST_HINT, ssl_context

if TYPE_CHECKING:
    import aiohttp

DEFAULT_SERVICE = "http://127.0.0.1:8765"
ENDED = frozenset({"done", "failed", "cancelled"})
TOKEN_HINT = (
    " (give the client the token: --token-file FILE or ASYNCFETCH_SERVICE_TOKEN, token= in Python)"
)


class ServiceError(FetchError):
    """The service answered with an error.

    Attributes:
        status: the HTTP status.
        kind: the service's error type (``QueueFull``, ``Unauthorized``, ...).
        retry_after: seconds to wait before asking again (429), or None.
    """

    def __init__(
        self, message: str, *, status: int, kind: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.retry_after = retry_after

    def __reduce__(self) -> Any:
        return _rebuild, (str(self), self.status, self.kind, self.retry_after)


def _rebuild(message: str, status: int, kind: str, retry_after: float | None) -> ServiceError:
    return ServiceError(message, status=status, kind=kind, retry_after=retry_after)


@dataclass(frozen=True)
class Job:
    """A job as the service shows it (see ``GET /v1/jobs/ID``).

    Attributes:
        id: the job's id.
        state: ``queued``, ``running``, ``done``, ``failed`` or ``cancelled``.
        url: the URL, credentials masked.
        name: the file's name in the service's cache.
        bytes: bytes on disk so far; total: the size, when known; speed: bytes/s lately.
        error: why it failed, when it did.
        file: the file's path on the service (``/v1/files/NAME``), once done.
        raw: everything the service said.
    """

    id: str
    state: str
    url: str
    name: str
    bytes: int = 0
    total: int | None = None
    speed: float = 0.0
    error: str | None = None
    file: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        """Done, failed or cancelled."""
        return self.state in ENDED

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """A job from the service's JSON."""
        return cls(
            id=data["id"], state=data["state"], url=data["url"], name=data["name"],
            bytes=data.get("bytes") or 0, total=data.get("total"), speed=data.get("speed") or 0,
            error=data.get("error"), file=data.get("file"), raw=data,
        )  # fmt: skip


def _order(
    url: str, mirrors: tuple[str, ...] | list[str], sha256: str | None, name: str | None,
    replace: bool,
) -> dict[str, Any]:  # fmt: skip
    order: dict[str, Any] = {"url": url}
    if mirrors:
        order["mirrors"] = list(mirrors)
    if sha256:
        order["sha256"] = sha256
    if name:
        order["name"] = name
    if replace:
        order["replace"] = True
    return order


class ServiceClient:
    """An async client of ``asyncfetch serve``'s jobs API.

    Args:
        url: the service (``http://host:port``, or ``https://`` for ``serve --tls-cert``).
        token: its bearer token, if it needs one.
        timeout: seconds each call may take.
        cacert: a PEM file of the CA certificates that vouch for an https service (else
            the environment's bundle, else the system store).
    """

    def __init__(
        self,
        url: str = DEFAULT_SERVICE,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        cacert: str | PathLike[str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._trust = TLSTrust.coerce(cacert)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def submit(
        self, url: str, *, mirrors: tuple[str, ...] | list[str] = (), sha256: str | None = None,
        name: str | None = None, replace: bool = False,
    ) -> Job:  # fmt: skip
        """Submit a download; returns the job (an unfinished one for the same URL, digest
        and name, if the service has one)."""
        order = _order(url, mirrors, sha256, name, replace)
        return Job.from_json(await self._call("POST", "/v1/jobs", order))

    async def submit_many(self, orders: list[dict[str, Any]]) -> list[Job]:
        """Submit several downloads at once (each a dict of ``url``, ``mirrors``, ``sha256``,
        ``name``, ``replace``): all are accepted, or none."""
        answer = await self._call("POST", "/v1/jobs", orders)
        return [Job.from_json(j) for j in answer["jobs"]]

    async def job(self, id_: str) -> Job:
        """The job called ``id_``."""
        return Job.from_json(await self._call("GET", f"/v1/jobs/{id_}"))

    async def jobs(self, state: str | None = None) -> list[Job]:
        """The service's jobs, oldest first; ``state``: only those (comma-separated)."""
        path = "/v1/jobs" + (f"?state={state}" if state else "")
        return [Job.from_json(j) for j in (await self._call("GET", path))["jobs"]]

    async def cancel(self, id_: str) -> Job:
        """Cancel the job called ``id_`` (its part file stays on the service)."""
        return Job.from_json(await self._call("DELETE", f"/v1/jobs/{id_}"))

    async def wait(self, id_: str, *, poll: float = 0.5, timeout: float | None = None) -> Job:
        """The job once it has ended (polled every ``poll`` seconds).

        Raises:
            TimeoutError: it had not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(id_)
            if job.ended:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {id_} is still {job.state} after {timeout} s")
            await asyncio.sleep(poll)

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        import aiohttp  # here: `import asyncfetch` need not import it

        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            tls = (
                ssl_context(self._trust, env_settings()) if self.url.startswith("https:") else None
            )
            connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        try:
            async with self._session.request(method, self.url + path, data=data,
                                             headers=headers) as answer:  # fmt: skip
                text = await answer.text()
                status, retry_after = answer.status, answer.headers.get("Retry-After")
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
            message = (
                f"the service at {self.url} has a certificate not trusted here ({why}); "
                f"{TRUST_HINT}"  # no --insecure: submit and jobs never send the token unchecked
            )
            raise ServiceError(message, status=0, kind="Untrusted") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            message = f"cannot reach the service at {self.url}: {why}; is it running there?"
            raise ServiceError(message, status=0, kind="Unreachable") from None
        try:
            found: dict[str, Any] = json.loads(text)
        except ValueError:
            found = {"error": text[:200], "type": "NotJSON"}
        if status >= 400:
            hint = TOKEN_HINT if status == 401 else ""
            raise ServiceError(
                f"{method} {self.url}{path}: {status} {found.get('error', '')}{hint}",
                status=status, kind=str(found.get("type", "")),
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )  # fmt: skip
        return found


class SyncServiceClient:
    """:class:`ServiceClient`'s sync twin: the same methods, each run to its end."""

    def __init__(
        self,
        url: str = DEFAULT_SERVICE,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        cacert: str | PathLike[str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._args = (url, token, timeout, cacert)

    def _run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        url, token, timeout, cacert = self._args

        async def call() -> Any:
            async with ServiceClient(url, token=token, timeout=timeout, cacert=cacert) as client:
                return await getattr(client, name)(*args, **kwargs)

        return run_sync(call())

    def submit(self, url: str, **kwargs: Any) -> Job:
        """See :meth:`ServiceClient.submit`."""
        job: Job = self._run("submit", url, **kwargs)
        return job

    def submit_many(self, orders: list[dict[str, Any]]) -> list[Job]:
        """See :meth:`ServiceClient.submit_many`."""
        jobs: list[Job] = self._run("submit_many", orders)
        return jobs

    def job(self, id_: str) -> Job:
        """See :meth:`ServiceClient.job`."""
        job: Job = self._run("job", id_)
        return job

    def jobs(self, state: str | None = None) -> list[Job]:
        """See :meth:`ServiceClient.jobs`."""
        jobs: list[Job] = self._run("jobs", state)
        return jobs

    def cancel(self, id_: str) -> Job:
        """See :meth:`ServiceClient.cancel`."""
        job: Job = self._run("cancel", id_)
        return job

    def wait(self, id_: str, *, poll: float = 0.5, timeout: float | None = None) -> Job:
        """See :meth:`ServiceClient.wait`."""
        job: Job = self._run("wait", id_, poll=poll, timeout=timeout)
        return job
