"""The client library: the command line and both editor plug-ins talk to the bridge through it.

Standard library + websockets + msgpack only (Python 3.10 to 3.14): the editors'
embedded Pythons run it from pure-Python copies of those two packages.

Events arrive on a background thread and are handed to ``on_event``; hosts
marshal them onto their own main thread (GLib in GIMP, Qt in Krita). A
failure of the connection becomes a ``Disconnected`` event, never an exception
crossing threads.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit, urlunsplit

from . import protocol as p
from . import shm, wire
from .dependencies import (
    VENDORED,
    websockets_client,
    websockets_exceptions,
    websockets_frames,
    websockets_protocol,
    websockets_streams,
)

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

DEFAULT_URL = f"ws://{p.DEFAULT_HOST}:{p.DEFAULT_PORT}{p.WS_PATH}"
START_HINT = "start it with: img2img-bridge serve"


def sentence(message: str) -> str:
    """``message`` as the plug-ins show it to the artist: capitalised, with a full stop."""
    text = message.strip()
    if not text:
        return ""
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?", "\u2026")) else ".")


def describe_loading(state: p.ModelState) -> str:
    """A loading model in the plug-ins' words: ``"Downloading sd-turbo: 1.2 GB of 2.6 GB"``, ``"Loading sd-turbo: 40%"``."""
    name = state.name or "the model"
    if state.downloaded is not None:
        total = f" of {_bytes(state.download_size)}" if state.download_size else ""
        return f"Downloading {name}: {_bytes(state.downloaded)}{total}"
    if state.progress is not None:
        return f"Loading {name}: {state.progress:.0%}"
    return f"Loading {name}"


def loading_fraction(state: p.ModelState) -> float | None:
    """How far a loading model is, 0-1, when the bridge says (download bytes first)."""
    if state.downloaded is not None and state.download_size:
        return min(1.0, state.downloaded / state.download_size)
    return state.progress


def _bytes(count: int | None) -> str:
    count = count or 0
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


#: messages larger than this go out as fragments of this size, framed straight from the pixels
FRAGMENT_BYTES = 1 << 20
#: frames from this size on are gathered from the received chunks in one copy (``LargeFrameReader``)
LARGE_FRAME_BYTES = 1 << 20
#: the largest message read before the welcome (a long model list fits many times over); then the bridge's limit
WELCOME_MAX_BYTES = 16 << 20
#: bytes the reader asks the socket for at a time (websockets' default, 64 KiB, means a thousand turns for a large layer)
RECV_BUFFER_BYTES = 1 << 20
_MASK_CHUNK = 1 << 16


class ClientError(Exception):
    """A failure the user should read: ``message`` says what to do next."""

    def __init__(self, code: p.ErrorCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Disconnected:
    """The connection ended; ``reason`` is a sentence for the user."""

    reason: str


EventCallback = Callable[["p.Message | Disconnected"], None]


@dataclass
class JobOutcome:
    """Everything a finished job produced."""

    job_id: str
    results: list[p.Result] = field(default_factory=list)
    previews: int = 0
    error: p.Error | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled and bool(self.results)


def normalize_url(url: str) -> str:
    """Accept ``host:port``, ``http://…`` or ``ws://…`` and return the websocket URL of ``/ws``."""
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ClientError(p.ErrorCode.CONNECTION, f"{shown_url(url)!r} is not a bridge address (expected ws://HOST:PORT)")
    path = parts.path if parts.path not in ("", "/") else p.WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def shown_url(url: str) -> str:
    """``url`` as messages may show it: a token in its query is replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = "&".join(
        f"{key}=***" if key.lower() == "token" else piece for piece in parts.query.split("&") for key in (piece.partition("=")[0],)
    )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def fast_apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """websockets' pure-Python ``apply_mask`` (same result), XOR-ing 64 KiB at a time so the work stays in cache.

    websockets without its C speedups (what the editors' plug-ins carry) XORs a whole frame as one huge integer:
    three passes over the frame plus a frame-sized repeated key, about three times slower.
    """
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    view = memoryview(data).cast("B")
    size = len(view)
    out = bytearray(size)
    whole = size - size % _MASK_CHUNK
    if whole:
        key = int.from_bytes(bytes(mask) * (_MASK_CHUNK // 4), "little")
        for start in range(0, whole, _MASK_CHUNK):
            end = start + _MASK_CHUNK
            out[start:end] = (int.from_bytes(view[start:end], "little") ^ key).to_bytes(_MASK_CHUNK, "little")
    tail = size - whole
    if tail:
        key = int.from_bytes((bytes(mask) * (tail // 4 + 1))[:tail], "little")
        out[whole:] = (int.from_bytes(view[whole:], "little") ^ key).to_bytes(tail, "little")
    return out  # type: ignore[return-value]  # websockets only writes it out: no copy to bytes


class LargeFrameReader(websockets_streams.StreamReader):
    """websockets' stream reader, except that a large frame is gathered from the received chunks in one copy.

    The stock reader appends every chunk the socket gives to one growing buffer, slices the frame out of it, and
    websockets turns the slice into bytes: three copies of a layer-sized frame, and room for three. While a read of
    ``LARGE_FRAME_BYTES`` or more waits, this one keeps the chunks as they came and joins them once, into the bytes
    websockets then hands on as they are.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes | bytearray] = []  # what came during a large read, after ``buffer``
        self._chunked = 0
        self._large = False

    def feed_data(self, data: bytes | bytearray) -> None:
        if not self._large:
            super().feed_data(data)
            return
        if self.eof:
            raise EOFError("stream ended")
        self._chunks.append(data)
        self._chunked += len(data)

    def read_exact(self, n: int) -> Generator[None, None, bytes | bytearray]:  # type: ignore[override]
        if n < LARGE_FRAME_BYTES:
            return (yield from super().read_exact(n))
        if len(self.buffer) >= n:  # it came whole, in one chunk
            with memoryview(self.buffer) as view:
                data = bytes(view[:n])
            del self.buffer[:n]
            return data
        self._large = True
        try:
            while len(self.buffer) + self._chunked < n:
                if self.eof:
                    raise EOFError(f"stream ends after {len(self.buffer) + self._chunked} bytes, expected {n} bytes")
                yield
        except BaseException:
            self._leave(self._chunks)
            raise
        parts: list[bytes | bytearray | memoryview] = [self.buffer]
        rest: list[bytes | bytearray] = []
        got = len(self.buffer)
        for i, chunk in enumerate(self._chunks):
            take = n - got
            if len(chunk) >= take:
                parts.append(memoryview(chunk)[:take])
                rest = [chunk[take:], *self._chunks[i + 1 :]]
                break
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
        self.buffer = bytearray()
        self._leave(rest)
        return data

    def _leave(self, rest: list[bytes | bytearray]) -> None:
        """Back to ordinary reads, with ``rest`` in the buffer."""
        self.buffer += b"".join(rest)
        self._chunks, self._chunked, self._large = [], 0, False


def _speed_up_pure_websockets() -> None:
    # only this package's own copy, which has no C speedups: the environment's websockets is shared, left alone
    if VENDORED:
        websockets_frames.apply_mask = fast_apply_mask
        websockets_protocol.StreamReader = LargeFrameReader  # type: ignore[misc]


_speed_up_pure_websockets()  # once, on import: a connection's reader is made with whatever is set when it opens


def _fragments(pieces: list[wire.Piece]) -> Iterator[memoryview]:
    for piece in pieces:
        view = memoryview(piece).cast("B")
        for start in range(0, len(view), FRAGMENT_BYTES):
            yield view[start : start + FRAGMENT_BYTES]


class BridgeClient:
    """One connection to the bridge.

    ``connect()`` does the handshake and starts the reader thread; ``generate``,
    ``cancel``, ``list_models`` and ``load_model`` may be called from any thread.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        name: str = "img2img-client",
        on_event: EventCallback | None = None,
        encodings: tuple[p.Encoding, ...] = p.BASIC_ENCODINGS,
        timeout: float = 10.0,
        keepalive: float | None = 10.0,
        shared_memory: bool = True,
        raw_frames: bool = True,
    ) -> None:
        self.url = normalize_url(url)
        self.token = token
        self.name = name
        self.encodings = encodings
        self.timeout = timeout
        #: seconds between pings; a bridge that has not answered one within twice as long is given up on
        self.keepalive = keepalive
        #: take the bridge's same-machine hand-off (bridge.editor.shm) when it offers one
        self.shared_memory = shared_memory
        #: why an offered hand-off could not be used (the socket carries the pixels then)
        self.shm_refused: str | None = None
        #: offer to send and read large pixel data as binary frames of their own, outside msgpack (fewer copies)
        self.raw_frames = raw_frames
        self._raw = False
        self._handoff: shm.ClientHandoff | None = None
        self.welcome: p.Welcome | None = None
        self._on_event = on_event
        self._ws: ClientConnection | None = None
        self._reader: threading.Thread | None = None
        self._jobs: dict[str, Callable[[p.Message | Disconnected], None]] = {}
        self._lock = threading.Lock()
        # a fragmented send lets go of websockets' own lock between fragments: sends take turns here
        self._send_lock = threading.Lock()
        self._closing = False

    # --- connection -----------------------------------------------------------------------

    def connect(self) -> p.Welcome:
        """Open the websocket and handshake; raises ClientError with advice when it cannot."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = websockets_client.connect(
                self.url,
                additional_headers=headers,
                compression=None,  # pixels do not deflate well and pure-Python deflate is slow
                max_size=WELCOME_MAX_BYTES,  # until the welcome states the bridge's own limit
                max_queue=64,
                open_timeout=self.timeout,
                # a frozen bridge answers no ping: the reader then ends with a clear reason instead of waiting forever
                ping_interval=self.keepalive,
                # a pong waits behind a large frame being written to us: allow for that
                ping_timeout=None if self.keepalive is None else 2 * self.keepalive,
                proxy=None,
                close_timeout=2,
            )
        except websockets_exceptions.InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ClientError(
                    p.ErrorCode.UNAUTHORIZED,
                    f"the bridge at {shown_url(self.url)} refused the connection ({status}): check the token (serve --token)",
                ) from exc
            raise ClientError(
                p.ErrorCode.CONNECTION, f"the bridge at {shown_url(self.url)} answered HTTP {status}; is this an img2img bridge?"
            ) from exc
        except (OSError, websockets_exceptions.WebSocketException, TimeoutError) as exc:
            raise ClientError(
                p.ErrorCode.CONNECTION, f"could not reach the bridge at {shown_url(self.url)} ({self._redact(exc)}); {START_HINT}"
            ) from exc
        try:
            ws.send(p.encode(p.Hello(client=self.name, encodings=self.encodings, shm=self._may_share_memory(), raw_frames=self.raw_frames)))
            reply = p.decode_server_message(ws.recv(timeout=self.timeout))
        except Exception as exc:
            ws.close()
            raise ClientError(
                p.ErrorCode.CONNECTION, f"the bridge at {shown_url(self.url)} did not complete the handshake: {self._redact(exc)}"
            ) from exc
        if isinstance(reply, p.Error):
            ws.close()
            raise ClientError(reply.code, reply.message, field=reply.field)
        if not isinstance(reply, p.Welcome):
            ws.close()
            raise ClientError(p.ErrorCode.BAD_MESSAGE, f"the bridge answered the handshake with {reply.TYPE!r}")
        self.welcome = reply
        self._raw = self.raw_frames and reply.raw_frames
        self._handoff, self.shm_refused = None, None
        if reply.shm is not None:
            try:
                self._handoff = shm.ClientHandoff.open(reply.shm, max_bytes=2 * reply.limits.max_message_bytes)
            except shm.ShmUnavailable as exc:
                self.shm_refused = exc.reason
        if hasattr(ws, "recv_bufsize"):
            ws.recv_bufsize = RECV_BUFFER_BYTES
        if hasattr(ws.protocol, "max_message_size"):  # nothing the bridge sends is larger than it accepts
            ws.protocol.max_message_size = reply.limits.max_message_bytes
        self._ws = ws
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, name="img2img-bridge-reader", daemon=True)
        self._reader.start()
        return reply

    def _may_share_memory(self) -> bool:
        host = urlsplit(self.url).hostname or ""
        return self.shared_memory and shm.supported() and shm.loopback(host)

    @property
    def shares_memory(self) -> bool:
        """Whether this connection hands pixels over through shared memory."""
        return self._handoff is not None

    def _redact(self, exc: Exception) -> str:
        """An exception's text without the URL's token or ``token``: a message must never echo a secret."""
        text = str(exc).replace(self.url, shown_url(self.url))
        return text.replace(self.token, "***") if self.token else text

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._reader is not None and self._reader.is_alive()

    def close(self) -> None:
        """Close the connection; the bridge cancels this client's jobs."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            ws.close()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)
        handoff, self._handoff = self._handoff, None
        if handoff is not None:
            handoff.close()

    def __enter__(self) -> BridgeClient:
        if self._ws is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests -------------------------------------------------------------------------

    def generate(self, request: p.Generate, on_event: EventCallback | None = None) -> str:
        """Submit a job; ``on_event`` (optional) receives only this job's events, then the global callback does."""
        if on_event is not None:
            with self._lock:
                self._jobs[request.job_id] = on_event
        handoff = self._handoff
        try:
            self._send(request if handoff is None else handoff.outgoing(request))
        except ClientError:
            with self._lock:
                self._jobs.pop(request.job_id, None)
            if handoff is not None:
                handoff.release(request.job_id)
            raise
        return request.job_id

    def cancel(self, job_id: str) -> None:
        self._send(p.Cancel(job_id=job_id))

    def list_models(self) -> None:
        """Ask for the model list; a ``Models`` event answers."""
        self._send(p.ListModels())

    def load_model(self, model: str) -> None:
        """Ask the bridge to switch models; ``ModelStatusEvent``s report progress."""
        self._send(p.LoadModel(model=model))

    def send_raw(self, frame: bytes) -> None:
        """Send an arbitrary frame (tests and diagnostics)."""
        self._send_pieces([frame])

    def run(self, request: p.Generate, on_event: EventCallback | None = None, timeout: float | None = None) -> JobOutcome:
        """Submit a job and block until it ends, returning everything it produced."""
        outcome = JobOutcome(job_id=request.job_id)
        done = threading.Event()

        def collect(event: p.Message | Disconnected) -> None:
            if isinstance(event, p.Result):
                outcome.results.append(event)
            elif isinstance(event, p.Preview):
                outcome.previews += 1
            elif isinstance(event, p.Error):
                outcome.error = event
            elif isinstance(event, p.Cancelled):
                outcome.cancelled = True
            elif isinstance(event, Disconnected):
                outcome.error = p.Error(code=p.ErrorCode.CONNECTION, message=event.reason, job_id=request.job_id)
            if on_event is not None:
                on_event(event)
            if isinstance(event, Disconnected) or p.is_job_end(event):
                done.set()

        self.generate(request, collect)
        if not done.wait(timeout):
            self.cancel(request.job_id)
            raise ClientError(p.ErrorCode.CONNECTION, f"job {request.job_id} did not finish within {timeout} s; it was cancelled")
        return outcome

    # --- internals ------------------------------------------------------------------------

    def _require(self) -> ClientConnection:
        if self._ws is None:
            raise ClientError(p.ErrorCode.CONNECTION, f"not connected to the bridge; {START_HINT}")
        return self._ws

    def _send(self, message: p.Message) -> None:
        if self._raw:
            head, pixels = p.split_frames(message)
            if pixels:
                self._send_frames([p.encode_parts(head), *([data] for data in pixels)])
                return
        self._send_pieces(p.encode_parts(message))

    def _send_pieces(self, pieces: list[wire.Piece]) -> None:
        self._send_frames([pieces])

    def _send_frames(self, frames: list[list[wire.Piece]]) -> None:
        """Send websocket messages back to back, each given as pieces; no other thread's message goes between them."""
        ws = self._require()
        try:
            with self._send_lock:
                for pieces in frames:
                    if sum(memoryview(piece).nbytes for piece in pieces) <= FRAGMENT_BYTES:
                        ws.send(pieces[0] if len(pieces) == 1 else b"".join(pieces))
                    else:
                        ws.send(_fragments(pieces))
        except Exception as exc:
            raise ClientError(p.ErrorCode.CONNECTION, f"the connection to the bridge is closed ({exc}); {START_HINT}") from exc

    def _read_loop(self) -> None:
        ws = self._require()
        reason = "the bridge closed the connection"
        try:
            while True:
                event = self._read_event(ws)
                if event is None:
                    continue
                handoff = self._handoff
                if handoff is not None:
                    handed = handoff.incoming(event)
                    if handed is None:
                        continue
                    event = handed
                self._dispatch(event)
                del event
        except Exception as exc:
            if not self._closing:
                reason = self._lost(exc)
        finally:
            self._ws = None
            handoff, self._handoff = self._handoff, None
            if handoff is not None:
                handoff.close()
            if not self._closing:
                self._dispatch(Disconnected(reason=reason))
            else:
                self._dispatch(Disconnected(reason="closed"))

    def _read_event(self, ws: ClientConnection) -> p.Message | None:
        """The next message, with the raw frames that follow it put in place; an unreadable one becomes an error (a
        preview whose pixels do not fit its message is dropped: None)."""
        frame = ws.recv()
        try:
            message = p.decode_server_message(frame)
        except p.ProtocolError as exc:
            for _ in range(exc.frames):  # the pixels an unreadable message announced are not messages
                ws.recv()
            return p.Error(code=exc.code, message=f"unreadable message from the bridge: {exc.message}")
        except Exception as exc:  # an unreadable frame must not end the connection
            return p.Error(code=p.ErrorCode.BAD_MESSAGE, message=f"unreadable message from the bridge: {exc}")
        finally:
            del frame  # a layer-sized frame must not stay alive until the next message
        following = p.frames_following(message)
        if not following:
            return message
        frames = [ws.recv() for _ in range(following)]
        try:
            return p.join_frames(message, frames)
        except p.ProtocolError as exc:
            return p.lost_pixels(message, exc.code, f"unreadable message from the bridge: {exc.message}")

    def _lost(self, exc: Exception) -> str:
        """A sentence for a connection that ended under the reader."""
        if isinstance(exc, websockets_exceptions.ConnectionClosed):
            if exc.rcvd is not None and exc.rcvd.reason:
                # 1008: the bridge turned this client away (it did not read, said no hello); otherwise it stopped
                hint = "" if exc.rcvd.code == 1008 else f"; {START_HINT}"
                return f"the bridge closed the connection: {exc.rcvd.reason}{hint}"
            if exc.sent is not None and "keepalive" in exc.sent.reason:
                return (
                    f"the bridge stopped answering (no reply to a ping within {2 * (self.keepalive or 0):g} s): "
                    "it may be frozen or overloaded; restart it if this persists"
                )
        return f"lost the connection to the bridge ({exc.__class__.__name__}: {exc}); {START_HINT}"

    def _dispatch(self, event: p.Message | Disconnected) -> None:
        with self._lock:
            if isinstance(event, Disconnected):
                targets = list(self._jobs.values())
                self._jobs.clear()
            else:
                job_id = getattr(event, "job_id", None)
                target = self._jobs.get(job_id) if job_id is not None else None
                targets = [target] if target is not None else []
                if target is not None and p.is_job_end(event):
                    del self._jobs[job_id]  # type: ignore[arg-type]
        for target in targets:
            _safe_call(target, event)
        if self._on_event is not None:
            _safe_call(self._on_event, event)


def _safe_call(callback: Callable[[p.Message | Disconnected], None], event: p.Message | Disconnected) -> None:
    try:
        callback(event)
    except Exception:  # a broken callback must not kill the reader thread
        import traceback

        traceback.print_exc()
