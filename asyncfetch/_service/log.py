"""``asyncfetch serve``'s logs: one JSON object per line on stderr, the access log's fields
(``remote_address``, ``first_request_line``, ``response_status``, ...) as keys of their own.

Every string is JSON-escaped and the line is pure ASCII, so nothing a client sends (a name or
a URL with a newline, an escape sequence, U+2028) can start a line or forge an entry.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any

#: what every LogRecord has; anything else on a record came in ``extra`` and is logged too
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of ASCII JSON."""
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


def log_json_lines(stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Send every log record, the access log's included, to ``stream`` (stderr) as JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
