"""The parent's handle on a client worker process (see ``client_worker``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

_WORKER = Path(__file__).resolve().parent / "client_worker.py"
_MARK = "@@ "


class WorkerError(Exception):
    pass


class ClientProcess:
    """A client worker: ``pure`` runs it on the vendored pure-Python websockets and msgpack, as in the editors."""

    def __init__(self, *, vendor: Path | None) -> None:
        self.pure = vendor is not None
        # -S: nothing from site-packages, so only the vendored copies can be imported
        command = [sys.executable, "-S", str(_WORKER), "--vendor", str(vendor)] if vendor else [sys.executable, str(_WORKER)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info: dict[str, str] = self._read()["info"]

    @property
    def label(self) -> str:
        return "pure-Python client" if self.pure else "client with C speedups"

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith(_MARK):
                answer: dict[str, Any] = json.loads(line[len(_MARK) :])
                if "error" in answer:
                    raise WorkerError(answer["error"])
                return answer
        raise WorkerError(f"the client worker exited with status {self._process.wait()}")

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self._process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ClientProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
