"""``asyncfetch serve``: the download service and LAN mirror, from the command line (its
options, and the :class:`~asyncfetch._service.app.Service` they make)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._cache.lookup import checkpoints_dir
from .._config import env_settings
from .._sync import run_sync
from . import options
from .options import EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    serve = commands.add_parser(
        "serve",
        help="a caching download service and LAN mirror",
        description="A caching download service and LAN mirror. Listening on anything but a "
        "loopback address needs a token (--token-file or ASYNCFETCH_SERVICE_TOKEN); downloads "
        "never reach the local network unless --allow-private or --allow-net says so.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument(
        "--port", type=options.port, default=8765, help="default: 8765; 0: any free port"
    )
    serve.add_argument("--cache-dir", type=Path, help="default: the torch.hub checkpoint dir")
    serve.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="where the job store lives, on a local "
        "disk (default: $ASYNCFETCH_STATE_DIR/service, $XDG_STATE_HOME/asyncfetch/service); "
        "one service per state dir",
    )  # fmt: skip
    serve.add_argument("--max-downloads", type=options.positive_int, default=4, help="at once (4)")
    serve.add_argument(
        "--max-queue", type=options.count, default=64, help="downloads waiting for a slot; "
        "more get 429 with Retry-After (64)",
    )  # fmt: skip
    serve.add_argument(
        "--min-speed", type=options.speed, default="1K", metavar="SIZE",
        help="bytes/s under which a download gives its slot back (1K; 0: never)",
    )  # fmt: skip
    serve.add_argument(
        "--min-speed-window", type=options.seconds, default=60.0, metavar="SECONDS",
        help="the time --min-speed is averaged over (60)",
    )  # fmt: skip
    access = serve.add_argument_group("who may ask")
    access.add_argument(
        "--token-file", type=Path, metavar="FILE", help="the bearer token (chmod 600) that "
        "POST /fetch, GET /cache and GET /files need (else ASYNCFETCH_SERVICE_TOKEN)",
    )  # fmt: skip
    access.add_argument(
        "--public-files", action="store_true", help="serve GET /files/NAME without the token "
        "(a LAN mirror for `get --mirror`)",
    )  # fmt: skip
    access.add_argument(
        "--public-metrics", action="store_true", help="serve GET /metrics without the token "
        "(a Prometheus scraper)",
    )  # fmt: skip
    access.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME", help="a name clients "
        "reach the service by (localhost and IP addresses always do); repeatable",
    )  # fmt: skip
    access.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="serve https with this certificate "
        "chain (PEM; with --tls-key): the token and the files are then not sent in clear",
    )  # fmt: skip
    access.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    reach = serve.add_argument_group("where downloads may connect")
    reach.add_argument(
        "--allow-private", action="store_true", help="also to loopback, private, link-local "
        "and unique-local addresses (not cloud metadata ones)",
    )  # fmt: skip
    reach.add_argument(
        "--allow-net", action="append", default=[], type=options.network, metavar="CIDR",
        help="also to this network, whatever it holds; repeatable",
    )  # fmt: skip
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; aiohttp.web is imported here, where only this command
    pays for it."""
    from .._service import app as _service  # imports aiohttp.web, which only this command needs
    from .._service import listen
    from .._service.guard import Guard, host_name, load_token
    from .._service.limits import SpeedFloor
    from .._service.log import log_json_lines
    from .._service.tls import server_context
    from .._transport.netpolicy import NetPolicy

    bound = [args.host] if host_name(args.host) else []  # a name listened on is the service's
    guard = Guard(
        token=load_token(args.token_file, env_settings().service_token),
        public_files=args.public_files,
        public_metrics=args.public_metrics,
        hosts=(*args.allowed_host, *bound),
    )
    floor = SpeedFloor(bytes_per_s=args.min_speed, window=args.min_speed_window)
    service = _service.Service(
        args.cache_dir or checkpoints_dir(),
        max_downloads=args.max_downloads,
        max_queue=args.max_queue,
        floor=floor if args.min_speed else None,
        guard=guard,
        net=NetPolicy(allow_private=args.allow_private, allowed=tuple(args.allow_net)),
        state_dir=args.state_dir or env_settings().state_dir / "service",
    )
    tls = server_context(args.tls_cert, args.tls_key)
    log_json_lines()
    run_sync(listen.serve(service, host=args.host, port=args.port, tls=tls))
    listen.log.info("stopped")
    return EXIT_OK
