"""Connect, run one job to its end, disconnect: the network on the client's thread, the job on the main loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .bridge_package import BridgeClient, ClientError, Disconnected, EventCallback, new_job_id, p, recipe_for
from .errors import PluginError, describe_client_error
from .job import Canvas, ImageJob
from .request import build_request
from .settings import JobSettings
from .source import Source

CLIENT_NAME = "gimp-img2img"


class MainLoop(Protocol):
    """The editor's main loop: ``post`` may be called from any thread; the rest only on the main thread."""

    def post(self, callback: Callable[[], None]) -> None: ...

    def run(self) -> None:
        """Process posted callbacks until ``quit``."""
        ...

    def quit(self) -> None: ...


class Connection(Protocol):
    def connect(self) -> p.Welcome: ...

    def close(self) -> None: ...

    def generate(self, request: p.Generate) -> str: ...

    def load_model(self, model: str) -> None: ...

    def cancel(self, job_id: str) -> None: ...


ConnectionFactory = Callable[[str, EventCallback], Connection]


def bridge_connection(url: str, on_event: EventCallback) -> Connection:
    return BridgeClient(url, name=CLIENT_NAME, on_event=on_event)


def run_job(
    settings: JobSettings,
    source: Source,
    canvas: Canvas,
    loop: MainLoop,
    *,
    connection: ConnectionFactory = bridge_connection,
) -> ImageJob:
    """Run one job and return it once it has ended; raises PluginError when the bridge cannot be reached."""
    job: ImageJob | None = None

    def deliver(event: p.Message | Disconnected) -> None:
        # the client's reader thread: hand over, never touch the job or the editor here
        loop.post(lambda: job.handle(event) if job is not None else None)

    client = connection(settings.url, deliver)
    try:
        welcome = client.connect()
    except ClientError as exc:
        raise PluginError(describe_client_error(exc)) from exc
    try:
        recipe = recipe_for(settings.model, welcome.models, welcome.model)
        request = build_request(settings, source, new_job_id(), recipe)
        job = ImageJob(request, source, canvas, client, on_end=loop.quit)
        job.start(welcome, settings.model)
        if not job.ended:
            loop.run()
        if not job.ended:  # the loop stopped on an unexpected error
            job.abort("Img2Img stopped on an internal error (see the terminal); the job was cancelled.")
    finally:
        client.close()
    return job
