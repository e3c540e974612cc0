"""Structured logging (structlog) to stderr, with secrets redacted from every event."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_PATTERNS = [
    re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]+"),
    re.compile(r"\bwhsec_[A-Za-z0-9]+"),
    re.compile(r"https://hooks\.slack\.com/[^\s\"']+"),
    re.compile(r"(redis|rediss|postgres|postgresql(\+\w+)?)://[^:@/\s]*:[^@/\s]+@"),
]


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(0).split("_")[0] + "_…redacted" if "_" in m.group(0)[:4]
                           else "…redacted…", text)
    return text


def _redact_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]
                      ) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of the call.

    Binding the stream at configure time breaks once a test runner or CLI harness swaps
    and closes stderr ("I/O operation on closed file"); resolving it per write does not.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR: TextIO = _CurrentStderr()  # type: ignore[assignment]
_configured = False
# The handler this module put on the root logger (replaced, never stacked, on reconfigure).
_HANDLER_MARK = "_nrr_structlog_handler"


def _shared_processors() -> list[Any]:
    """Run on every event, structlog's own and the standard library's (Celery, libraries)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]


def _add_logger_name(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]
                     ) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
    return event_dict


def configure_logging(level: str = "INFO", json_output: bool = False) -> None:
    """structlog events and standard-library records (Celery's own lines, libraries) go
    through one pipeline: the same time stamp, context (task id), redaction and renderer,
    key=value text or one JSON object a line (``NRR_LOG_FORMAT=json``)."""
    global _configured
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (structlog.processors.JSONRenderer() if json_output
                     else structlog.dev.ConsoleRenderer(colors=False))
    handler = logging.StreamHandler(_STDERR)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_add_logger_name, *_shared_processors()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Python warnings (Celery's SecurityWarning, deprecations) become records too, so
    # stderr holds only lines of the chosen format.
    logging.captureWarnings(True)
    # Library chatter (alembic's plugin set-up, per-request HTTP lines) is not ours to show
    # at INFO; it comes back with NRR_LOG_LEVEL=DEBUG.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for noisy in ("alembic", "urllib3", "stripe", "httpx"):
        logging.getLogger(noisy).setLevel(quiet)
    structlog.configure(
        processors=[*_shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_STDERR),
        cache_logger_on_first_use=False,
    )
    _configured = True


def configure_from_settings(settings: Any) -> None:
    """Logging as ``NRR_LOG_LEVEL`` and ``NRR_LOG_FORMAT`` say."""
    configure_logging(settings.log_level, json_output=settings.log_format == "json")


def get_logger(name: str | None = None) -> Any:
    if not _configured:
        configure_logging()
    return structlog.get_logger(name)
