"""One nginx child process serving the data dir on several free 127.0.0.1 ports.

Each :class:`ServerSpec` becomes one ``server`` block on its own port: unthrottled, or capped
per connection with ``limit_rate``, over http or https, each with its own access log
(``_accesslog`` reads them). For https, a CA and a certificate for 127.0.0.1 are generated
with openssl into the data dir; tools trust the CA through ``SSL_CERT_FILE`` and its kin
(:meth:`Nginx.trust_env`).
nginx runs in the foreground (``daemon off``) in its own process group, with its pid, logs and
temp paths inside the data dir, and :class:`Nginx` stops it (and any worker left behind) on
exit, exceptions and Ctrl-C included.

A spec with a ``delay`` (or ``request_delay``) is reached through a delaying TCP proxy
(:mod:`benchmarks._delayproxy`, its own process) on the spec's port, nginx listening on
another: a WAN's round trip, or a per-request cost, in front of the server.

Note on ``limit_rate``: nginx allows ``rate * (seconds since the request started + 1)`` bytes,
so every new request starts with a one-second burst. Clients that send many small Range
requests can beat the nominal cap; compare tools that use the same range size.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from benchmarks._accesslog import LOG_FORMAT
from benchmarks._log import log
from benchmarks._measure import kill_group

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
CA_CERT = "ca.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
# Where clients look for a CA bundle: Python's ssl and hf_transfer read SSL_CERT_FILE, requests
# and asyncfetch REQUESTS_CA_BUNDLE first, curl CURL_CA_BUNDLE (set on many machines already).
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@dataclass(frozen=True)
class ServerSpec:
    """One server block: a name scenarios refer to and an optional per-connection cap.

    Args:
        name: the key scenarios use to pick this server.
        rate: nginx ``limit_rate`` in bytes per second per request; ``None`` for unthrottled.
        tls: serve https (with the generated certificate) instead of http.
        delay: seconds each chunk waits in each direction (half the round trip), in a
            delaying proxy in front; 0 for none.
        request_delay: seconds each request waits on top, in that proxy: a fixed cost per
            request (per range).
    """

    name: str
    rate: int | None = None
    tls: bool = False
    delay: float = 0.0
    request_delay: float = 0.0

    @property
    def proxied(self) -> bool:
        """Whether a delaying proxy stands in front of this server."""
        return self.delay > 0 or self.request_delay > 0


def find_nginx() -> str | None:
    """Return the nginx executable (Debian keeps it in /usr/sbin, often off a user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_config(prefix: Path, root: Path, ports: dict[str, int], specs: list[ServerSpec]) -> str:
    """Return an nginx.conf: one server block per spec, all serving ``root``."""
    servers = "\n".join(_server_block(spec, ports[spec.name], root, prefix) for spec in specs)
    # Running as root, workers would switch to "nobody", who may not read the data dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    log_format bench '{LOG_FORMAT}';
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{servers}
}}
"""


def make_certificates(prefix: Path) -> Path:
    """Generate a CA and a certificate for 127.0.0.1 signed by it in ``prefix``; return the
    CA's file (what a client must trust). Valid for two days: each run makes new ones."""
    ca_key, ca, csr = prefix / "ca.key", prefix / CA_CERT, prefix / "server.csr"
    ext = prefix / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=asyncfetch bench CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", prefix / SERVER_KEY, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", prefix / SERVER_CERT, "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return ca


def access_log(prefix: Path, server: str) -> Path:
    """Where the server named ``server`` logs its requests."""
    return prefix / f"access-{server}.log"


def _server_block(spec: ServerSpec, port: int, root: Path, prefix: Path) -> str:
    limit = f"limit_rate {spec.rate};" if spec.rate else "limit_rate 0;"
    tls = (
        f" ssl;\n        ssl_certificate {prefix / SERVER_CERT};"
        f"\n        ssl_certificate_key {prefix / SERVER_KEY}"
        if spec.tls
        else ""
    )
    return f"""    server {{  # {spec.name}
        listen 127.0.0.1:{port}{tls};
        root {root};
        access_log {access_log(prefix, spec.name)} bench;
        location / {{ {limit} }}
    }}"""


class Nginx:
    """Run nginx for the duration of a ``with`` block; ``url()`` names files on each server."""

    def __init__(self, data_dir: Path, root: Path, specs: list[ServerSpec]) -> None:
        self._prefix = data_dir / "nginx"
        self._root = root
        self._specs = specs
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._tls = {spec.name: spec.tls for spec in specs}
        self._ca: Path | None = None
        self._proxies: list[subprocess.Popen[bytes]] = []

    def url(self, server: str, name: str) -> str:
        """Return the URL of file ``name`` on server ``server``."""
        scheme = "https" if self._tls.get(server) else "http"
        return f"{scheme}://127.0.0.1:{self._ports[server]}/{name}"

    def trust_env(self) -> dict[str, str]:
        """Environment variables that make clients trust the generated CA (none without
        https servers)."""
        return {name: str(self._ca) for name in CA_VARIABLES} if self._ca else {}

    def access_log(self, server: str) -> Path:
        """Return the access log of server ``server``."""
        return access_log(self._prefix, server)

    def __enter__(self) -> Nginx:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self) -> None:
        exe = find_nginx()
        if exe is None:
            raise RuntimeError("nginx not found; run: bash benchmarks/setup.sh .venv")
        (self._prefix / "tmp").mkdir(parents=True, exist_ok=True)
        if any(self._tls.values()):
            self._ca = make_certificates(self._prefix)
        self._ports = {spec.name: free_port() for spec in self._specs}
        listen = {s.name: free_port() if s.proxied else self._ports[s.name] for s in self._specs}
        for spec in self._specs:  # each nginx run starts fresh logs
            access_log(self._prefix, spec.name).unlink(missing_ok=True)
        conf = self._prefix / "nginx.conf"
        conf.write_text(render_config(self._prefix, self._root, listen, self._specs))
        errlog = self._prefix / "error.log"
        argv = [exe, "-p", str(self._prefix), "-e", str(errlog), "-c", str(conf)]
        with open(self._prefix / "stdout.log", "wb") as out:
            self._proc = subprocess.Popen(
                [*argv, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pending = dict(self._ports)
        self._ports = listen  # nginx's own ports first, then the proxies' in front
        self._wait_ready(errlog)
        self._ports = pending
        for spec in self._specs:
            if spec.proxied:
                self._start_proxy(spec, listen[spec.name])
        ports = ", ".join(f"{name}={port}" for name, port in self._ports.items())
        log(f"nginx: pid {self._proc.pid}, ports {ports}")

    def _start_proxy(self, spec: ServerSpec, target: int) -> None:
        """A delaying proxy on ``spec``'s port in front of nginx's ``target`` port."""
        argv = [sys.executable, "-m", "benchmarks._delayproxy", str(self._ports[spec.name]),
                str(target), str(spec.delay), str(spec.request_delay)]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        self._proxies.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the delaying proxy for {spec.name} did not start")
        log(f"{spec.name}: delaying proxy, {spec.delay * 2000:g} ms round trip, "
            f"{spec.request_delay * 1000:g} ms per request, pid {proc.pid}")  # fmt: skip

    def _wait_ready(self, errlog: Path) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = set(self._ports.values())
        while pending and time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            pending = {port for port in pending if not _accepts(port)}
            if pending:
                time.sleep(POLL_S)
        if pending:
            tail = errlog.read_text(errors="replace")[-2000:] if errlog.exists() else ""
            raise RuntimeError(f"nginx did not start (ports {sorted(pending)}):\n{tail}")

    def stop(self) -> None:
        """Stop nginx: SIGTERM (fast shutdown), then SIGKILL its process group if needed; and
        the delaying proxies."""
        proxies, self._proxies = self._proxies, []
        for proxy in proxies:
            kill_group(proxy.pid)
            proxy.wait(timeout=STOP_TIMEOUT_S)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log("nginx: did not stop on SIGTERM; killing its process group")
        kill_group(proc.pid)
        proc.wait(timeout=STOP_TIMEOUT_S)
        log("nginx: stopped")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
