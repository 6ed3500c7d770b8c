"""TLS trust: the one ``ssl.SSLContext`` a Transport uses, built from the caller's options and
the environment, and what a certificate error tells the user.

Which certificates are trusted, first that applies:

1. ``insecure=True`` (``--insecure``): none is checked; a warning says so on every use.
2. ``cacert=FILE`` (``--cacert FILE``).
3. ``REQUESTS_CA_BUNDLE``, then ``CURL_CA_BUNDLE`` (what requests, pip and Hugging Face's
   clients read), then ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (OpenSSL's).
4. The system store, through ``truststore`` (as pip): the OS keychain on macOS and Windows,
   OpenSSL's default locations on Linux.

A bundle (2 or 3) replaces the system store, as in requests and curl: a file or directory
naming a private CA trusts only what it holds. The only module that touches truststore.
"""

from __future__ import annotations

import os
import ssl
import warnings

from .._config import CABundle, EnvSettings, TLSTrust
from .._errors import CertificateError, InsecureWarning, InvalidRequest

TRUST_HINT = (
    "pass --cacert FILE (cacert= in Python) or set REQUESTS_CA_BUNDLE / SSL_CERT_FILE to trust "
    "a private CA"
)
HINT = TRUST_HINT + ", or --insecure to skip the check"


def ssl_context(trust: TLSTrust, settings: EnvSettings) -> ssl.SSLContext:
    """The context for every TLS connection of one Transport (see the module docstring).

    Raises:
        InvalidRequest: a bundle that is missing or holds no usable certificate, naming where
            it was given.
    """
    if trust.insecure:
        warnings.warn(
            "insecure=True (--insecure): TLS certificates are not checked", InsecureWarning,
            stacklevel=2,
        )  # fmt: skip
        return _unchecked()
    bundle = trust.bundle or settings.ca_bundle
    if bundle is None:
        import truststore  # here: a cache hit, which makes no Transport, never imports it

        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _from_bundle(bundle)


def described(trust: TLSTrust, settings: EnvSettings) -> str:
    """What ``trust`` trusts, for messages: ``the system store``, ``REQUESTS_CA_BUNDLE=...``."""
    if trust.insecure:
        return "nothing checked (insecure)"
    bundle = trust.bundle or settings.ca_bundle
    return bundle.origin if bundle is not None else "the system store"


def _from_bundle(bundle: CABundle) -> ssl.SSLContext:
    """A context trusting only ``bundle`` (the stdlib's defaults otherwise: hostnames checked)."""
    problem = _unusable(bundle)
    if problem is None:
        try:
            return ssl.create_default_context(cafile=bundle.cafile, capath=bundle.capath)
        except ssl.SSLError as exc:  # before OSError: it is one
            problem = f"no usable certificate in it ({exc.reason or exc})"
        except OSError as exc:
            problem = exc.strerror or str(exc)
    raise InvalidRequest(
        f"cannot use the CA bundle {bundle.origin}: {problem}; give a PEM file of CA "
        "certificates, or leave it out to trust the system store"
    )


def _unusable(bundle: CABundle) -> str | None:
    """Why ``bundle`` cannot be loaded, where OpenSSL would not say (a missing directory)."""
    if bundle.cafile is not None and not bundle.cafile.exists():
        return "no such file"
    dirs = str(bundle.capath).split(os.pathsep) if bundle.capath is not None else []
    if dirs and not any(os.path.isdir(d) for d in dirs):
        return "no such directory"
    return None


def _unchecked() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def certificate_error(url: str, error: BaseException, trusted: str | None) -> CertificateError:
    """The error for ``url``'s certificate failing the check, with a one-line hint.

    ``error``: the ``ssl.SSLCertVerificationError`` (or what wraps it); ``trusted``: what was
    trusted (:func:`described`).
    """
    cause = error if isinstance(error, ssl.SSLCertVerificationError) else error.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        message, code = str(cause.verify_message or cause.reason), cause.verify_code
    else:
        message, code = str(error), 1  # X509_V_ERR_UNSPECIFIED
    trusting = f"; trusted: {trusted}" if trusted else ""
    return CertificateError(
        f"{url}: certificate verify failed ({message}{trusting}): {HINT}",
        url=url, verify_message=message, verify_code=code,
    )  # fmt: skip
