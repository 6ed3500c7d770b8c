"""The test certificate authority (trustme): one per process, its PEM file, and server contexts.

Clients trust it only when told to (``cacert=ca_path()``, or ``REQUESTS_CA_BUNDLE`` and the
like): it is in no system store, so a client that is not told fails the certificate check.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import trustme

HOSTS = ("127.0.0.1", "localhost", "::1")  # the names a FaultServer may be reached by

_lock = threading.Lock()
_ca: list[trustme.CA] = []
_path: list[Path] = []


def authority() -> trustme.CA:
    """The process's test CA (made on first use)."""
    with _lock:
        if not _ca:
            _ca.append(trustme.CA(organization_name="asyncfetch tests"))
        return _ca[0]


def ca_path() -> Path:
    """A PEM file holding the test CA's certificate (removed when the process ends)."""
    ca = authority()
    with _lock:
        if not _path:
            folder = Path(tempfile.mkdtemp(prefix="asyncfetch-test-ca-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            ca.cert_pem.write_to_path(str(folder / "ca.pem"))
            _path.append(folder / "ca.pem")
        return _path[0]


def server_context(on_hello: Callable[[], None] | None = None) -> ssl.SSLContext:
    """A server-side context with a certificate for :data:`HOSTS`, signed by the test CA.

    ``on_hello``: called for every TLS ClientHello, so a server can count handshakes (the
    failed ones too, which never become requests).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority().issue_cert(*HOSTS).configure_cert(context)
    if on_hello is not None:
        hello = on_hello
        context.sni_callback = lambda *_: hello()
    return context
