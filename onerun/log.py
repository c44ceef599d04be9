"""onerun's own log lines on stderr: plain text for people or one JSON object per line.

Callers pass messages that never contain secrets; nothing here can tell one apart.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Logger:
    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr

    def _emit(self, level: str, message: str, fields: dict[str, Any]) -> None:
        if self.fmt == "json":
            record = {"ts": round(time.time(), 3), "level": level, "logger": "onerun",
                      "msg": message, **fields}
            line = json.dumps(record, default=str)
        else:
            extra = "".join(f" {key}={value}" for key, value in fields.items())
            line = f"onerun {level}: {message}{extra}"
        print(line, file=self.stream, flush=True)

    def info(self, message: str, **fields: Any) -> None:
        self._emit("info", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._emit("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._emit("error", message, fields)
