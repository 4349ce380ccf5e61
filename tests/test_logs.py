"""What ``serve`` logs: one line per connection and per job, nothing from the libraries at the default level."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

from bridge.editor import protocol as p
from bridge.editor.client import BridgeClient, Disconnected
from tests.served import ROOT, serve
from tests.test_server import TIMEOUT, photo, request

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) (?!\[)")
BANNER = ("img2img-bridge ", "device: ", "the tiny model is")


def test_one_line_per_connection_and_job_and_no_library_noise(tmp_path: Path) -> None:
    log_file = tmp_path / "bridge.log"
    # the libraries' own verbosity settings, which the test session sets, must not be what keeps them quiet
    unset = ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "PYTHONWARNINGS")
    with (
        serve("--model", "tiny", "--log-file", str(log_file), log_dir=tmp_path, unset=unset) as served,
        BridgeClient(served.url, name="log test") as client,
    ):
        jobs = [request(photo(96, 64, seed=seed), steps=4, strength=0.5) for seed in (1, 2)]
        for job in jobs:
            assert client.run(job, timeout=TIMEOUT).ok
        cancelled = request(photo(64, 64), steps=100, strength=1.0)
        running, ended = threading.Event(), threading.Event()

        def follow(event: p.Message | Disconnected) -> None:
            (ended if isinstance(event, p.Cancelled) else running if isinstance(event, p.Progress) else threading.Event()).set()

        client.generate(cancelled, follow)
        assert running.wait(TIMEOUT)
        client.cancel(cancelled.job_id)
        assert ended.wait(TIMEOUT)
    console = served.log.read_text()
    logged = log_file.read_text().splitlines()

    for job in jobs:
        (line,) = [line for line in logged if job.job_id in line]
        assert "from 'log test'" in line and "96x64" in line and "steps run (asked 4)" in line
        assert re.search(r", \d+ ms, done$", line)
    (line,) = [line for line in logged if cancelled.job_id in line]
    assert line.endswith("cancelled")
    assert len([line for line in logged if " job " in line]) == 3
    assert len([line for line in logged if "'log test'" in line and "connected from 127.0.0.1" in line]) == 1
    assert len([line for line in logged if "'log test'" in line and "disconnected after" in line]) == 1

    # nothing but the bridge's banner and its own log lines: no warnings, progress bars or request lines
    for line in console.splitlines():
        assert line.startswith(BANNER) or LINE.match(line), line
    assert all(LINE.match(line) for line in logged)


def test_the_log_file_rotates(tmp_path: Path) -> None:
    script = (
        "import logging, sys; from pathlib import Path; from bridge import logs; logs.LOG_FILE_BYTES = 2000; "
        "logs.configure('info', Path(sys.argv[1])); log = logging.getLogger('img2img_bridge'); "
        "[log.info(f'line {i} of a long enough log message') for i in range(80)]"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bridge.log")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bridge.log.1").exists()
    assert (tmp_path / "bridge.log").stat().st_size <= 2000


_NOISE = """
import logging, sys, warnings
from bridge import logs
logs.configure(sys.argv[1])
logging.getLogger("httpx").info('HTTP Request: HEAD https://huggingface.co/api/models "HTTP/1.1 200 OK"')
logging.getLogger("huggingface_hub.file_download").warning("hub says something")
logging.getLogger("diffusers.pipelines.pipeline_utils").warning("diffusers says something")
logging.getLogger("transformers.modeling_utils").warning("transformers says something")
warnings.warn("torchvision: failed to load image Python extension", UserWarning, stacklevel=1)
from diffusers.utils.logging import tqdm
for _ in tqdm(range(3), desc="Loading pipeline components"):
    pass
logging.getLogger("img2img_bridge").info("the bridge speaks")
"""


def test_libraries_are_quiet_at_the_default_level_and_heard_at_debug() -> None:
    def run(level: str) -> str:
        done = subprocess.run([sys.executable, "-c", _NOISE, level], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    quiet = run("info").strip().splitlines()
    assert len(quiet) == 1 and quiet[0].endswith("INFO the bridge speaks")
    loud = run("debug")
    for noise in ("HTTP Request", "hub says", "diffusers says", "transformers says", "torchvision", "Loading pipeline components"):
        assert noise in loud
    assert "[httpx] HTTP Request" in loud  # another library's line names it
