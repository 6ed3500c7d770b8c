"""``asyncfetch submit`` and ``asyncfetch jobs``: the jobs API of an ``asyncfetch serve``, from
the command line (through :class:`~asyncfetch._service.client.ServiceClient`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .._config import env_settings
from .._service.client import Job, ServiceClient
from .._service.guard import load_token
from .._sync import run_sync
from .options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, one_line_text


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``submit`` and ``jobs``."""
    submit = commands.add_parser(
        "submit", help="ask an asyncfetch serve to download URLs (jobs)",
        description="Submit downloads to an asyncfetch serve as jobs; prints each job's id, "
        "state, name and URL. A job already queued or running for the same URL, digest and "
        "name is returned as it is.",
    )  # fmt: skip
    submit.add_argument("urls", nargs="+", metavar="URL")
    submit.add_argument("--mirror", action="append", default=[], metavar="URL",
                        help="another URL of the same file; repeatable")  # fmt: skip
    submit.add_argument("--sha256", metavar="HEX", help="the file's SHA-256 (one URL only)")
    submit.add_argument("--name", help="the file's name in the service's cache (one URL only)")
    submit.add_argument("--replace", action="store_true", help="may replace a different file "
                        "of that name")  # fmt: skip
    submit.add_argument("--wait", action="store_true", help="wait until the jobs end; exit 1 "
                        "unless all are done")  # fmt: skip
    _common(submit)
    submit.set_defaults(handler=_submit)
    jobs = commands.add_parser(
        "jobs", help="list an asyncfetch serve's jobs", description="List an asyncfetch "
        "serve's jobs, oldest first.",
    )  # fmt: skip
    jobs.add_argument("--state", help="only these states (queued,running,done,failed,cancelled)")
    _common(jobs)
    jobs.set_defaults(handler=_jobs)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", metavar="URL", help="the service (default: "
                        "$ASYNCFETCH_SERVICE, else http://127.0.0.1:8765)")  # fmt: skip
    parser.add_argument("--token-file", type=Path, metavar="FILE", help="the service's token "
                        "(else ASYNCFETCH_SERVICE_TOKEN)")  # fmt: skip
    parser.add_argument("--cacert", type=Path, metavar="FILE", help="the CA certificates (PEM) "
                        "that vouch for an https service (else REQUESTS_CA_BUNDLE, "
                        "CURL_CA_BUNDLE, SSL_CERT_FILE, else the system store)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object per job")


def _client(args: argparse.Namespace) -> ServiceClient:
    env = env_settings()
    token = load_token(args.token_file, env.service_token)
    return ServiceClient(args.service or env.service_url, token=token, cacert=args.cacert)


def _print(job: Job, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job.raw), flush=True)
        return
    done = f"{job.bytes}/{job.total}" if job.total else str(job.bytes)
    print(f"{job.id}  {job.state:<9}  {done:>23}  {job.name}  {job.url}", flush=True)
    if job.error:
        print(f"    {one_line_text(job.error)}", flush=True)


def _submit(args: argparse.Namespace) -> int:
    if len(args.urls) > 1 and (args.sha256 or args.name):
        print("asyncfetch submit: error: --sha256 and --name take one URL", file=sys.stderr)
        return EXIT_USAGE
    orders: list[dict[str, Any]] = [{"url": url, "mirrors": args.mirror} for url in args.urls]
    if args.sha256:
        orders[0]["sha256"] = args.sha256
    if args.name:
        orders[0]["name"] = args.name
    if args.replace:
        for order in orders:
            order["replace"] = True

    async def go() -> list[Job]:
        async with _client(args) as service:
            jobs = await service.submit_many(orders)
            if not args.wait:
                return jobs
            return [await service.wait(job.id) for job in jobs]

    jobs = run_sync(go())
    for job in jobs:
        _print(job, args.json)
    failed = [job for job in jobs if job.ended and job.state != "done"]
    return EXIT_FAILED if args.wait and failed else EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    async def go() -> list[Job]:
        async with _client(args) as service:
            return await service.jobs(args.state)

    for job in run_sync(go()):
        _print(job, args.json)
    return EXIT_OK
