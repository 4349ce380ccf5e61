"""The server's log: one line per connection and per job, third-party chatter quieted, an optional rotating file."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import warnings
from pathlib import Path

from .throttle import LogThrottle

LEVELS = ("debug", "info", "warning", "error")
#: the logger every module of the bridge logs to
BRIDGE_LOGGER = "img2img_bridge"
FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: a log file is rotated at this size, keeping this many old files
LOG_FILE_BYTES = 10 << 20
LOG_FILE_BACKUPS = 3

#: libraries that log warnings and request lines nobody running the bridge needs, except when debugging
_NOISY = (
    "accelerate",
    "diffusers",
    "filelock",
    "httpcore",
    "httpx",
    "huggingface_hub",
    "PIL",
    "py.warnings",
    "torch",
    "torchvision",
    "transformers",
    "urllib3",
)


def configure(level: str = "info", log_file: Path | None = None) -> None:
    """Log to stderr (and ``log_file``, rotated) at ``level``; below debug, third-party libraries say only errors."""
    numeric = getattr(logging, level.upper())
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(
            logging.handlers.RotatingFileHandler(log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
        )
    throttle = LogThrottle()
    for handler in handlers:
        handler.setFormatter(_Formatter(FORMAT))
        handler.addFilter(throttle)
    logging.basicConfig(level=numeric, handlers=handlers, force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if numeric > logging.DEBUG:
        _quiet_libraries()


class _Formatter(logging.Formatter):
    """The bridge's own lines as they are; another library's lines start with its name in brackets."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if record.name.split(".")[0] in (BRIDGE_LOGGER, "aiohttp"):
            return line
        prefix = f"{record.asctime} {record.levelname} "
        return f"{prefix}[{record.name}] {line[len(prefix) :]}" if line.startswith(prefix) else line


def _quiet_libraries() -> None:
    # read by transformers and diffusers when they are imported (the engine imports them later)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # torchvision's and diffusers' deprecation notes are for developers, not for the person running the bridge
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from diffusers.utils import logging as diffusers_logging

        # the "Loading pipeline components" bars; the Hub's download bars stay, they are the download's progress
        diffusers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except ImportError:
        pass
    # after the imports above: each library sets its own logger's level when it is first imported
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)
