"""``asyncfetch serve``'s ``/v1`` routes: jobs (:mod:`.jobs`) and files that carry their digest.

Routes::

    POST /v1/jobs           an order ({"url", "mirrors", "sha256", "name", "replace"}) or a
                            list of them → 202 with the job(s), once committed to the store
                            (200 when every one is a job already queued or running)
    GET /v1/jobs            jobs, oldest first (?state=queued,running&limit=N)
    GET /v1/jobs/ID         a job: state, bytes, size, speed, bytes per source, error
    DELETE /v1/jobs/ID      cancel it (its part file stays); 409 when it has ended
    GET /                   the status page (static/index.html): live jobs, submit, cancel
    GET|HEAD /v1/files/NAME a complete file, with Range; its ``ETag`` is its SHA-256 and
                            ``Repr-Digest: sha-256=:BASE64:`` (RFC 9530) announces it

The ETag is the file's digest, so a client comparing a mirror's ETag with the primary's, or with
the SHA-256 it asked for, can tell the mirror serves that file; under the "never a wrong file"
rule a client takes a mirror's digest only as evidence of agreement with the primary's or its
own, never as the expectation. Conditional requests (``If-None-Match``, ``If-Match``, an
entity-tag ``If-Range``) are judged against that ETag, not aiohttp's mtime-and-size one.

This module, :mod:`.app`, :mod:`.events`, :mod:`.failures` and :mod:`.listen` are the ones
that import ``aiohttp.web``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import stat
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.helpers import ETag

from .._cache.marker import read_marker
from .._errors import FetchError
from .._storage.hasher import sha256_of_file
from .._storage.nofollow import open_existing
from .events import EventStreams
from .failures import BodyTooSlow, error_response, failure
from .files import lookup
from .jobs import view
from .orders import ORDER_SHAPE, parse_orders
from .store import STATES

if TYPE_CHECKING:
    from .app import Service

MAX_BODY = 64 * 1024
#: seconds a request's body (at most MAX_BODY bytes) may take to arrive once its head has: one
#: withheld would hold its connection and handler for ever (aiohttp sets no limit)
BODY_TIMEOUT = 30.0
#: the page runs only its own inline script, talks only to the service, and cannot be framed
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src "
    "'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MAX_LISTED = 1000


class V1:
    """The ``/v1`` handlers of one service."""

    def __init__(self, service: Service, status_for: Any) -> None:
        self.service = service
        self.jobs = service.jobs
        self._status_for = status_for
        self._digests: dict[tuple[int, int, int, int], str] = {}

    def add_to(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_post("/v1/jobs", self.post_jobs)
        app.router.add_get("/v1/jobs", self.get_jobs)
        app.router.add_get("/v1/jobs/{id}", self.get_job)
        app.router.add_delete("/v1/jobs/{id}", self.delete_job)
        app.router.add_get("/v1/files/{name}", self.get_file)
        app.router.add_get("/", self.get_page)
        streams = EventStreams(self.jobs, lambda: self.service.stopping)
        app.router.add_get("/v1/jobs/{id}/events", streams.job_events)
        app.router.add_get("/v1/events", streams.all_events)

    async def post_jobs(self, request: web.Request) -> web.Response:
        """Accept one order or a list of them as jobs."""
        try:
            orders, many = parse_orders(await read_body(request))
            answers = await self.jobs.submit(orders)
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                413, f"the body is over {MAX_BODY} bytes; send {ORDER_SHAPE}", "InvalidRequest"
            )
        except FetchError as exc:
            return failure(exc, self._status_for)
        views = [view(row, self.jobs.live.get(row.id)) | {"new": new} for row, new in answers]
        status = 202 if any(new for _, new in answers) else 200
        if many:
            return web.json_response({"jobs": views}, status=status)
        return web.json_response(views[0], status=status, headers={"Location": views[0]["href"]})

    async def get_jobs(self, request: web.Request) -> web.Response:
        """List jobs, oldest first, filtered by ``?state=`` (comma-separated)."""
        wanted = tuple(s for s in request.query.get("state", "").split(",") if s) or STATES
        unknown = sorted(set(wanted) - set(STATES))
        if unknown:
            return error_response(400, f"unknown state(s) {', '.join(unknown)}; use "
                                  f"{', '.join(STATES)}", "InvalidRequest")  # fmt: skip
        try:
            limit = min(_count(request.query.get("limit", str(MAX_LISTED))), MAX_LISTED)
        except ValueError:
            return error_response(400, f"limit must be a whole number from 0 to {MAX_LISTED}",
                                  "InvalidRequest")  # fmt: skip
        store = self.jobs.store
        rows = await store.call(lambda: store.jobs(wanted, limit))
        return web.json_response({"jobs": [view(r, self.jobs.live.get(r.id)) for r in rows]})

    async def get_job(self, request: web.Request) -> web.Response:
        """One job."""
        row = await self.jobs.get(request.match_info["id"])
        if row is None:
            return _no_job(request.match_info["id"])
        return web.json_response(view(row, self.jobs.live.get(row.id)))

    async def delete_job(self, request: web.Request) -> web.Response:
        """Cancel a job (its part file stays for a later job to resume)."""
        id_ = request.match_info["id"]
        row, cancelled = await self.jobs.cancel(id_)
        if row is None:
            return _no_job(id_)
        if not cancelled:
            return error_response(409, f"job {id_} has ended ({row.state}); nothing to cancel",
                                  "JobEnded")  # fmt: skip
        return web.json_response(view(row, None))

    async def get_page(self, _request: web.Request) -> web.Response:
        """The status page: jobs with live progress, a form to submit a URL, cancel buttons."""
        return web.Response(body=_page(), content_type="text/html", charset="utf-8",
                            headers=PAGE_HEADERS)  # fmt: skip

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        """A complete cached file, its SHA-256 as ETag and Repr-Digest."""
        name = request.match_info["name"]
        found = await asyncio.to_thread(lookup, self.service.cache_dir, name)
        if found is None:
            return error_response(404, f"{name} is not a complete file in the cache", "NotFound")
        path, corrupt = found
        if corrupt:
            return error_response(409, f"{name} is corrupt (`asyncfetch cache verify` found "
                                  "another SHA-256 than recorded); fetch it again",
                                  "Corrupt")  # fmt: skip
        try:
            sha256, version = await asyncio.to_thread(self.digest_of, path)
        except OSError:
            return error_response(404, f"{name} is not a complete file in the cache", "NotFound")
        return DigestFileResponse(path, sha256, version, name=name)

    def digest_of(self, path: Path) -> tuple[str, Version]:
        """``path``'s SHA-256 and the version of the file it is the digest of: its marker's
        when it describes the file as it is, else hashed once per version (blocking).

        The file is opened once, never through a link, and both are read from that: a file
        swapped meanwhile cannot lend its digest to another.
        """
        with os.fdopen(open_existing(path, os.O_RDONLY), "rb", buffering=0) as file:
            st = os.fstat(file.fileno())
            version = version_of(st)
            marker = read_marker(path)
            if marker is not None and marker.sha256 and marker.describes(st):
                return marker.sha256, version
            if version not in self._digests:
                self._digests[version] = sha256_of_file(file)
        return self._digests[version], version


@functools.cache
def _page() -> bytes:
    """The status page's HTML (package data; read once)."""
    return resources.files(__package__).joinpath("static/index.html").read_bytes()


async def read_body(request: web.Request) -> bytes:
    """The request's body, once all of it arrived within BODY_TIMEOUT seconds.

    Raises:
        BodyTooSlow: it did not (408).
        web.HTTPRequestEntityTooLarge: it is over MAX_BODY bytes.
    """
    try:
        return await asyncio.wait_for(request.read(), BODY_TIMEOUT)
    except asyncio.TimeoutError:
        raise BodyTooSlow(
            f"the body did not arrive within {BODY_TIMEOUT:g} s of the request's head; send "
            f"{ORDER_SHAPE} all at once"
        ) from None


def _count(text: str) -> int:
    """``text`` as a count; ValueError if it is not one (a negative LIMIT is none to SQLite)."""
    number = int(text)
    if number < 0:
        raise ValueError(f"{number} is negative")
    return number


def _no_job(id_: str) -> web.Response:
    return error_response(404, f"no job {id_!r}; GET /v1/jobs lists them", "NotFound")


#: a cached file is bytes to save, whatever its name: never a page (text/html, an SVG) that a
#: browser would run as the service's own origin, beside the status page and its token
SERVED_AS_BYTES = {
    "Content-Type": "application/octet-stream",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Content-Disposition": "attachment",
}


#: which file a digest is of: device, inode, size and mtime (ns)
Version = tuple[int, int, int, int]


def version_of(st: os.stat_result) -> Version:
    """The :data:`Version` of the file ``st`` describes."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Changed(Exception):
    """The file at a name is no longer the one its digest was taken of."""


class DigestFileResponse(web.FileResponse):
    """A FileResponse whose ETag is the file's SHA-256, with a ``Repr-Digest`` header, sent
    as bytes (:data:`SERVED_AS_BYTES`).

    Only the very file the digest is of (``version``) is sent, never a compressed variant
    aiohttp would pick beside it (``NAME.gz``: another cached file), nor one swapped in or
    removed since the digest was taken (a link to a file outside the cache dir, put there by
    whoever else can write it): that answers the service's JSON 404, without the digest.
    """

    def __init__(self, path: Path, sha256: str, version: Version, *, name: str) -> None:
        super().__init__(path, headers=SERVED_AS_BYTES)
        self._name = name
        self._version = version
        self._tag = sha256
        raw = bytes.fromhex(sha256)
        self.headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(raw).decode()}:"

    @property
    def etag(self) -> ETag | None:
        """The file's SHA-256 as a strong entity-tag."""
        return ETag(value=self._tag)

    @etag.setter
    def etag(self, _value: object) -> None:  # aiohttp sets its mtime-size one: ours instead
        web.StreamResponse.etag.fset(self, ETag(value=self._tag))  # type: ignore[attr-defined]

    async def prepare(self, request: web.BaseRequest) -> Any:
        """Judge the conditional headers against the digest, then send as FileResponse."""
        ours = f'"{self._tag}"'
        if_match = request.headers.get(hdrs.IF_MATCH)
        if if_match is not None and not _matches(if_match, ours, weak=False):
            self.set_status(412)
            self.etag = None
            return await web.StreamResponse.prepare(self, request)
        if_none = request.headers.get(hdrs.IF_NONE_MATCH)
        if if_none is not None and _matches(if_none, ours, weak=True):
            self.set_status(304)
            self.etag = None
            return await web.StreamResponse.prepare(self, request)
        drop = {"if-match", "if-none-match"}
        if if_match is not None:
            drop.add("if-unmodified-since")
        if if_none is not None:
            drop.add("if-modified-since")
        if_range = request.headers.get(hdrs.IF_RANGE, "").strip()
        if if_range.startswith(('"', "W/")):  # an entity-tag, which aiohttp would ignore
            drop.add("if-range")
            if if_range != ours:
                drop.add("range")  # another version: the whole file (200)
        drop.add("accept-encoding")  # else aiohttp sends NAME.gz or NAME.br if there is one
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in drop]
        try:
            return await super().prepare(request.clone(headers=headers))
        except Changed:
            return await self._not_found(request)

    async def _not_found(self, request: web.BaseRequest) -> Any:
        """Answer the service's JSON 404 in place of the file, without its digest headers."""
        answer = error_response(404, f"{self._name} changed while it was being served (replaced "
                                "or removed after its SHA-256 was taken); retry the request",
                                "NotFound")  # fmt: skip
        for name in (hdrs.ETAG, "Repr-Digest", hdrs.CONTENT_DISPOSITION):
            self.headers.popall(name, None)
        self.set_status(answer.status)
        self.content_type, self.charset = answer.content_type, answer.charset
        body = answer.body
        assert isinstance(body, bytes)  # json_response's text, encoded
        self.content_length = len(body)
        writer = await web.StreamResponse.prepare(self, request)
        if request.method != hdrs.METH_HEAD:
            await self.write(body)
        return writer

    def _make_response(self, request: web.BaseRequest, accept_encoding: str) -> Any:
        """aiohttp's (blocking: in its executor) for the file itself, never a variant, then
        checked to be the version the digest is of.

        Raises:
            Changed: it is not (another file, a link, none, not a regular file any more).
        """
        try:
            made = super()._make_response(request, "")
        except OSError:
            raise Changed from None
        opened, st = made[1], made[2]
        if opened is not None and version_of(os.fstat(opened.fileno())) != self._version:
            opened.close()
            raise Changed
        if opened is None and (not stat.S_ISREG(st.st_mode) or version_of(st) != self._version):
            raise Changed  # a 304 or 412 would carry the old digest for another file
        return made


def _matches(header: str, ours: str, *, weak: bool) -> bool:
    """Whether an If-Match / If-None-Match list holds ``ours`` (``*`` holds anything)."""
    for tag in (t.strip() for t in header.split(",")):
        if tag == "*" or tag == ours or (weak and tag.removeprefix("W/") == ours):
            return True
    return False
