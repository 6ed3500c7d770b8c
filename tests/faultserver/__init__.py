"""A fault-injecting loopback HTTP file server for the test suite.

`FaultServer` serves in-memory files at ``/files/NAME`` from an aiohttp app that runs on its own
event loop in a daemon thread, so sync tests, async tests (with their own loop) and subprocesses
can all use it. Faults are switched on per request with query parameters, which
`FaultServer.url` builds::

    with FaultServer() as server:
        server.add_file("model.bin", make_payload(1 << 20))
        url = server.url("model.bin", status=503, retry_after=1, times=2)
        # two answers of 503 with "Retry-After: 1", then the file

``FaultServer(tls=True)`` speaks HTTPS instead, with a certificate for 127.0.0.1, localhost and
::1 signed by a test CA (trustme; one per process) whose PEM file is ``server.ca_path``: a
client trusts it only when told to (``cacert=``, ``REQUESTS_CA_BUNDLE``, ...).
``server.handshakes`` counts TLS handshakes, failed ones too (they never become requests).
Every fault works alike over TLS; a reset reaches Python's ssl module as a ragged EOF.

Without faults GET and HEAD send Content-Length, Accept-Ranges, ETag and Last-Modified; one
``Range: bytes=a-b | a- | -n`` gets 206 with Content-Range, an unsatisfiable one 416 with
``Content-Range: bytes */SIZE``; malformed and multi-range headers are ignored (200); an
``If-Range`` that does not match the current ETag (strongly) or Last-Modified (exactly) gets 200.

Faults (several may combine; offsets and counts in bytes):

- ``status=CODE`` answer CODE (HEAD and GET alike), with ``retry_after=V`` as Retry-After verbatim
- ``reset_after=N`` send N body bytes, then drop the connection with a TCP RST
- ``truncate_after=N`` advertise the full length, send N body bytes, then close cleanly (FIN)
- ``stall_after=N`` send N body bytes, then nothing until the client leaves or the server stops
  (at most 60 s), then RST; the cut faults count from the start of the response body
- ``flip_byte=OFFSET`` XOR 0xFF into the byte at file OFFSET if the response covers it (repeatable)
- ``ignore_range=1`` answer a Range with 200 and the whole file (still says Accept-Ranges)
- ``wrong_range=1`` answer 206 for the asked range shifted by +1 byte (-1 at the end of the file),
  with a Content-Range and body that match each other but not the request
- ``no_head=1`` HEAD gets 405; ``head_lies=1`` HEAD says Content-Length SIZE+1000 and no
  Accept-Ranges (GET stays truthful)
- ``no_ranges=1`` no Accept-Ranges, Range ignored (200); ``no_length=1`` no Content-Length
  (chunked) and no ranges
- ``redirect=N`` 302 to the same URL with redirect=N-1 (N hops, then the file; ignores times);
  ``redirect_loop=1`` 302 to itself forever; ``redirect_to=URL`` 302 to URL (e.g. a mirror)
- ``gzip=1`` gzip the body (Content-Encoding: gzip, chunked) if Accept-Encoding allows gzip;
  ``force_gzip=1`` gzip it whatever Accept-Encoding says (an unasked Content-Encoding)
- ``digest=KIND`` (repeatable) announce the file's SHA-256 on its answers (and on a
  ``redirect_to``): ``repr`` Repr-Digest, ``legacy`` Digest, ``linked`` X-Linked-Etag,
  ``amz`` x-amz-checksum-sha256, ``amz-composite`` the same with a ``-3`` suffix;
  ``digest_of=HEX`` announce HEX instead of the file's own digest
- ``refuse_header=NAME`` answer 403 to a request with header NAME (as S3 a presigned URL's
  request with an unsigned ``x-amz-*`` header), after any redirect
- ``changed=N`` GET answers (not HEAD) serve other content, N bytes longer (N may be negative),
  under the same ETag and Last-Modified: the file changed after the probe
- ``auth=USER:PASS`` answer 401 (with ``WWW-Authenticate: Basic``), before any redirect, unless
  the request has ``Authorization: Basic`` with exactly these credentials
- ``rate=BYTES_PER_S`` throttle the response body; ``delay=SECONDS`` wait before answering
  (every request: a per-request cost); ``close=1`` answer GETs with ``Connection: close``;
  ``burst=N`` with ``rate``: each response's first N body bytes go unthrottled (nginx's
  ``limit_rate_after``: an initial burst)
- ``X-Amz-Signature=SIG`` a presigned URL's signature (no effect alone); with
  ``expires_after=N`` the signature expires once N body bytes were sent under it (for this
  file, in all): later requests carrying it get 403 with an S3-like body "Request has expired"
  (responses under way finish); ``sign=1`` 302 to the same URL less ``sign``, with a fresh
  ``X-Amz-Signature`` (``FRESHSIG1``, ``FRESHSIG2``, ...), as a hub's ``resolve/`` does
- ``times=K`` each fault fires only the first K times it would change a response, counted per
  (fault, file) whatever the URL, until `FaultServer.reset_counters`

Every request is logged as a `RequestRecord` (see `FaultServer.requests`). A record is final
(outcome, bytes_sent, finished) before the last byte of its response leaves the server, so a
client that has read a whole response can assert on the log at once.
"""

from .faults import FAULT_PARAMS, RequestRecord
from .server import FaultServer, make_payload

__all__ = ["FAULT_PARAMS", "FaultServer", "RequestRecord", "make_payload"]
