"""The service's own certificate: ``asyncfetch serve --tls-cert FILE --tls-key FILE`` serves
https, so that the bearer token and the files do not cross the network in clear text."""

from __future__ import annotations

import ssl
from pathlib import Path

from .._errors import InvalidRequest


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The TLS context to listen with (TLS 1.2 or later), or None for plain http.

    Raises:
        InvalidRequest: one of the two files given without the other, or files that do not
            hold a certificate chain and its private key (the message names them).
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InvalidRequest(
            "give both --tls-cert FILE (the certificate chain, PEM) and --tls-key FILE (its "
            "private key), or neither to serve plain http"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise InvalidRequest(
            f"cannot serve https with --tls-cert {cert} and --tls-key {key}: {why}; give a "
            "PEM certificate chain and the PEM private key that matches it"
        ) from None
    return context
