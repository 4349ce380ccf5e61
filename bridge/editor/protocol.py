"""The wire protocol between the bridge and its clients (see docs/protocol.md).

Every websocket frame is one binary msgpack map with a ``type`` key. Enums
travel by value, pixels as raw bytes. This module needs only the standard
library and msgpack: the editors' plug-ins carry a copy of it.
"""

from __future__ import annotations

import types
import zlib
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import Enum
from typing import Any, Callable, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from . import wire
from .dependencies import PURE_MSGPACK, msgpack

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7421
DEFAULT_HOST = "127.0.0.1"
WS_PATH = "/ws"


class Encoding(Enum):
    """How an image's pixels travel. RAW and ZLIB need nothing but the standard library."""

    RAW = "raw"
    ZLIB = "zlib"
    PNG = "png"
    JPEG = "jpeg"


#: Encodings every client can read and write without an imaging library.
BASIC_ENCODINGS = (Encoding.RAW, Encoding.ZLIB)


class ModelStatus(Enum):
    READY = "ready"
    LOADING = "loading"
    NO_MODEL = "no-model"
    ERROR = "error"


class PreviewDecoder(Enum):
    """How previews are decoded: AUTO takes the tiny autoencoder when present, else APPROX."""

    AUTO = "auto"
    APPROX = "approx"
    TINY = "tiny"
    FULL = "full"


class ErrorCode(Enum):
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    SIZE_MISMATCH = "size_mismatch"
    TOO_LARGE = "too_large"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    HANDSHAKE_REQUIRED = "handshake_required"
    DUPLICATE_JOB = "duplicate_job"
    UNKNOWN_JOB = "unknown_job"
    UNKNOWN_MODEL = "unknown_model"
    NO_MODEL = "no_model"
    MODEL_LOADING = "model_loading"
    MODEL_LOAD_FAILED = "model_load_failed"
    OUT_OF_MEMORY = "out_of_memory"
    QUEUE_FULL = "queue_full"
    UNAUTHORIZED = "unauthorized"
    CONNECTION = "connection"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message that cannot be accepted; becomes an ``error`` event for the sender."""

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.job_id = job_id
        #: raw frames the unreadable message announced: they follow it on the connection and must be skipped too
        self.frames = 0


# --- the codec: every value object and message converts through its dataclass fields ---------

_W = TypeVar("_W", bound="_Wire")


def _wire(default: Any = MISSING, *, missing: Any = MISSING, required: bool = False, unknown: Any = None, sparse: bool = False) -> Any:
    """A field whose wire form differs from its Python default.

    ``missing``: the value when the field is absent on the wire (the class itself has no default);
    ``required``: absent on the wire is an error although the class has a default;
    ``unknown``: an enum value this side does not know decodes as this member;
    ``sparse``: left off the wire while it holds its default, so that peers that do not use it send what they
    sent before it existed.
    """
    meta = {"missing": missing, "required": required, "unknown": unknown, "sparse": sparse}
    return field(default=default, metadata=meta)


class _Wire:
    """``to_wire`` and ``from_wire`` for a dataclass, read off its fields and their types."""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in fields(self):  # type: ignore[arg-type]
            value = getattr(self, spec.name)
            if not (spec.metadata.get("sparse") and value == spec.default):
                out[spec.name] = _encode(value)
        return out

    @classmethod
    def from_wire(cls: type[_W], raw: Any, name: str | None = None) -> _W:
        """Decode a wire map; a ProtocolError names the field at fault, prefixed by ``name`` for a nested object."""
        obj = _map(raw, name or "message")
        return cls(**{spec.name: spec.read(obj, name) for spec in _plan(cls)})


def _encode(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, _Wire):
        return value.to_wire()
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    convert: Callable[[Any, str], Any]  # the wire value (not None) and its path -> the field's value
    absent: Callable[[str], Any]  # the path -> the value when the wire has none, or raises

    def read(self, obj: dict[str, Any], prefix: str | None) -> Any:
        path = _path(prefix, self.name)
        value = obj.get(self.name)
        return self.absent(path) if value is None else self.convert(value, path)


_PLANS: dict[type, tuple[_FieldSpec, ...]] = {}


def _plan(cls: type) -> tuple[_FieldSpec, ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = get_type_hints(cls)
        plan = _PLANS[cls] = tuple(_field_spec(f, hints[f.name]) for f in fields(cls))
    return plan


def _field_spec(spec: Any, hint: Any) -> _FieldSpec:
    meta = spec.metadata
    nullable = _is_optional(hint)
    kind = _strip_none(hint)
    absent: Callable[[str], Any]
    if meta.get("required"):
        absent = _missing_field
    elif meta.get("missing", MISSING) is not MISSING:
        absent = _constant(meta["missing"])
    elif spec.default is not MISSING:
        absent = _constant(spec.default)
    elif spec.default_factory is not MISSING:
        factory = spec.default_factory
        absent = lambda _path: factory()  # noqa: E731
    elif nullable:
        absent = _constant(None)
    elif get_origin(kind) is tuple:
        absent = _constant(())
    else:
        absent = _missing_field
    return _FieldSpec(spec.name, _converter(kind, meta.get("unknown")), absent)


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint) and hint != wire.Piece


def _strip_none(hint: Any) -> Any:
    if not _is_optional(hint):
        return hint
    (inner,) = (a for a in get_args(hint) if a is not type(None))
    return inner


def _constant(value: Any) -> Callable[[str], Any]:
    return lambda _path: value


def _missing_field(path: str) -> Any:
    raise ProtocolError(ErrorCode.MISSING_FIELD, f"missing field '{path}'", field=path)


def _converter(kind: Any, unknown: Any) -> Callable[[Any, str], Any]:
    if kind is bool:
        return _as_bool
    if kind is int:
        return _as_int
    if kind is float:
        return _as_float
    if kind is str:
        return _as_str
    if kind == wire.Piece:
        return _as_bytes
    if isinstance(kind, type) and issubclass(kind, Enum):
        return lambda value, path: _as_enum(value, path, kind, unknown)
    if isinstance(kind, type) and issubclass(kind, _Wire):
        return kind.from_wire
    origin, args = get_origin(kind), get_args(kind)
    if origin is tuple and isinstance(args[0], type) and issubclass(args[0], Enum):
        return lambda value, path: _as_enum_tuple(value, path, args[0])
    if origin is tuple:
        item = _converter(args[0], unknown)
        return lambda value, path: tuple(item(v, path) for v in _as_list(value, path))
    if origin is dict:
        return _as_number_map
    raise TypeError(f"no wire form for {kind!r}")


def _invalid(path: str, what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD, f"'{path}' must be {what}", field=path)


def _map(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'{path}' must be a map", field=path)
    return raw


def _as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise _invalid(path, "a list")
    return list(value)


def _as_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(path, "an integer")
    return value


def _as_float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _invalid(path, "a number")
    return float(value)


def _as_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _invalid(path, "a string")
    return value


def _as_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(path, "true or false")
    return value


def _as_bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise _invalid(path, "binary data (msgpack bin)")
    return bytes(value)


def _as_enum(value: Any, path: str, enum: Any, unknown: Any) -> Any:
    if isinstance(value, enum):
        return value
    for member in enum:
        if member.value == value:
            return member
    if unknown is not None:
        return unknown
    choices = ", ".join(repr(m.value) for m in enum)
    raise _invalid(path, f"one of {choices}")


def _as_enum_tuple(value: Any, path: str, enum: Any) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _invalid(path, "a list of strings")
    # unknown values are skipped so that newer peers can offer more
    known = {m.value: m for m in enum}
    return tuple(known[v] for v in value if v in known)


def _as_number_map(value: Any, path: str) -> dict[str, float]:
    numbers = _map(value, path)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
        raise _invalid(path, "a map of numbers")
    return {str(k): float(v) for k, v in numbers.items()}


def _path(prefix: str | None, key: str) -> str:
    return key if prefix is None else f"{prefix}.{key}"


# --- value objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raster(_Wire):
    width: int
    height: int
    data: wire.Piece  # bytes when received; the sender may hand over a view of its own pixels
    encoding: Encoding = Encoding.RAW
    # same-machine hand-off (bridge.editor.shm): the raw pixels are bytes offset.. of this segment, and data is empty
    segment: str | None = _wire(None, sparse=True)
    offset: int = _wire(0, sparse=True)
    # raw frames (see split_frames): the data is the binary frame of this many bytes that follows the message
    frame: int = _wire(0, sparse=True)


@dataclass(frozen=True)
class Image(_Raster):
    """RGBA 8-bit pixels, row-major, no padding (or their encoded form)."""

    def raw_rgba(self) -> bytes:
        """The pixels as raw RGBA bytes; RAW and ZLIB only (others need an imaging library)."""
        return decode_plain(self.data, self.encoding, self.width * self.height * 4, "image")


@dataclass(frozen=True)
class Mask(_Raster):
    """8-bit grayscale, one byte per pixel: 0 keeps, 255 regenerates, values between blend."""

    def raw_gray(self) -> bytes:
        return decode_plain(self.data, self.encoding, self.width * self.height, "mask")


def decode_plain(data: wire.Piece, encoding: Encoding, expected: int, name: str) -> bytes:
    """Undo a RAW or ZLIB encoding and check the byte count."""
    if encoding is Encoding.ZLIB:
        data = _inflate(data, expected, name)
    elif encoding is not Encoding.RAW:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_ENCODING,
            f"{name} is {encoding.value}-encoded; only raw and zlib are decoded here",
            field=f"{name}.encoding",
        )
    if len(data) != expected:
        raise ProtocolError(
            ErrorCode.SIZE_MISMATCH,
            f"{name}.data has {len(data)} bytes but its stated size needs {expected}",
            field=f"{name}.data",
        )
    return data if isinstance(data, bytes) else bytes(data)


def _inflate(data: wire.Piece, expected: int, name: str) -> bytes:
    """Inflate at most ``expected`` bytes: a small message must not unpack into a huge one."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, expected + 1)
    except zlib.error as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{name}.data is not valid zlib data: {exc}", field=f"{name}.data") from exc
    if len(out) > expected or inflater.unconsumed_tail:
        raise ProtocolError(
            ErrorCode.SIZE_MISMATCH,
            f"{name}.data inflates to more than the {expected} bytes its stated size needs",
            field=f"{name}.data",
        )
    if not inflater.eof:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{name}.data is not valid zlib data: the stream is cut short", field=f"{name}.data")
    return out


@dataclass(frozen=True)
class PreviewSettings(_Wire):
    """How often previews come (every N steps; 0 = never), their largest side and encoding."""

    every: int = 1
    max_size: int = 256
    encoding: Encoding = Encoding.RAW
    decoder: PreviewDecoder = PreviewDecoder.AUTO


@dataclass(frozen=True)
class Limits(_Wire):
    """What the server accepts; sent in the welcome."""

    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    max_steps: int = 100
    max_count: int = 8
    max_prompt_chars: int = 4000

    @property
    def max_message_bytes(self) -> int:
        # an RGBA image plus its mask plus room for the other fields
        return self.max_pixels * 5 + (1 << 20)

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "max_message_bytes": self.max_message_bytes}


@dataclass(frozen=True)
class Recipe(_Wire):
    """How a model wants to be driven; a ``generate`` that leaves steps, guidance or strength unset gets these.

    ``steps`` is the full schedule: img2img runs about ``steps × strength`` of it (at least one step).
    ``guidance`` ≤ 1 means classifier-free guidance is off (distilled turbo/LCM/Lightning models).
    """

    steps: int
    guidance: float
    strength: float
    live_steps: int
    live_strength: float
    resolution: int  # the model's native side in pixels
    scheduler: str = ""  # the diffusers scheduler class the bridge runs it with
    inpaint: bool = False  # a 9-channel inpainting UNet
    family: str = ""  # "sd" or "sdxl"
    kind: str = ""  # what the bridge took it for, e.g. "sd-turbo", "sd15", "sdxl-lightning"

    def settings(self, live: bool) -> tuple[int, float, float]:
        """Steps, guidance and strength for an ordinary or a live job."""
        if live:
            return self.live_steps, self.guidance, self.live_strength
        return self.steps, self.guidance, self.strength


@dataclass(frozen=True)
class ModelInfo(_Wire):
    """One model the bridge can load: ``name`` is what ``load_model`` takes."""

    name: str
    source: str = _wire(missing="")  # "builtin", "hub", "folder" or "file"
    test_model: bool = False
    recipe: Recipe | None = None  # None: known once the model is loaded


@dataclass(frozen=True)
class ModelState(_Wire):
    """The loaded model and what it is doing. ``message`` says why when it is not ready."""

    name: str | None
    status: ModelStatus
    message: str = ""
    test_model: bool = False
    inpaint: bool = False
    progress: float | None = None
    recipe: Recipe | None = None  # the loaded model's recipe, once it is ready
    downloaded: int | None = None  # bytes of the model downloaded so far, while downloading
    download_size: int | None = None  # bytes to download in all, when known


@dataclass(frozen=True)
class SharedMemoryOffer(_Wire):
    """The bridge's same-machine hand-off (bridge.editor.shm), offered in the welcome to loopback clients that ask.

    ``folder`` is the bridge's private segment folder; the file ``probe`` in it holds ``token``: a client that
    reads it there shares the bridge's machine and user, and may name segments of that folder in its images.
    """

    folder: str
    probe: str
    token: str


# --- messages --------------------------------------------------------------------------------


class Message(_Wire):
    """Base of every message; ``TYPE`` is the wire ``type``."""

    TYPE: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, **super().to_wire()}


@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    client: str
    protocol: int = _wire(PROTOCOL_VERSION, required=True)
    encodings: tuple[Encoding, ...] = BASIC_ENCODINGS
    #: the client can take the same-machine hand-off (bridge.editor.shm) if the bridge offers it
    shm: bool = _wire(False, sparse=True)
    #: the client sends and reads large pixel data as binary frames of their own (see split_frames)
    raw_frames: bool = _wire(False, sparse=True)


@dataclass(frozen=True)
class Generate(Message):
    """Run img2img on ``image`` (regenerating where ``mask`` says) and stream events back."""

    TYPE: ClassVar[str] = "generate"
    job_id: str
    image: Image
    prompt: str
    negative_prompt: str = ""
    mask: Mask | None = None
    # None: the model's recipe (its live recipe for live jobs); see Recipe
    strength: float | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    count: int = 1
    preview: PreviewSettings = field(default_factory=PreviewSettings)
    result_encoding: Encoding = Encoding.RAW
    live: bool = False
    # match the regenerated region's colours to the kept pixels around it (bridge.seams); None: on when masked
    match_seams: bool | None = None
    #: raw results and previews come back through shared-memory segments (only after the welcome offered them)
    shm: bool = _wire(False, sparse=True)

    @property
    def matches_seams(self) -> bool:
        return self.mask is not None if self.match_seams is None else self.match_seams and self.mask is not None

    @classmethod
    def from_wire(cls, raw: Any, name: str | None = None) -> Generate:
        try:
            return super().from_wire(raw, name)
        except ProtocolError as exc:
            job_id = raw.get("job_id") if isinstance(raw, dict) else None
            exc.job_id = job_id if isinstance(job_id, str) and exc.field != "job_id" else None
            raise

    def validate(self, limits: Limits) -> None:
        """Check every field against ``limits`` before any work is done."""
        try:
            self._validate(limits)
        except ProtocolError as exc:
            exc.job_id = self.job_id
            raise

    def _validate(self, limits: Limits) -> None:
        if not self.job_id or len(self.job_id) > 128:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "job_id must be 1 to 128 characters", field="job_id")
        _check_size(self.image.width, self.image.height, limits, "image")
        if self.image.encoding is Encoding.RAW:
            expected = self.image.width * self.image.height * 4
            if len(self.image.data) != expected:
                raise ProtocolError(
                    ErrorCode.SIZE_MISMATCH,
                    f"image.data has {len(self.image.data)} bytes; a {self.image.width}x{self.image.height} RGBA image needs {expected}",
                    field="image.data",
                )
        if self.mask is not None:
            if (self.mask.width, self.mask.height) != (self.image.width, self.image.height):
                raise ProtocolError(
                    ErrorCode.SIZE_MISMATCH,
                    f"mask is {self.mask.width}x{self.mask.height} but image is {self.image.width}x{self.image.height}; they must match",
                    field="mask",
                )
            needed = self.mask.width * self.mask.height
            if self.mask.encoding is Encoding.RAW and len(self.mask.data) != needed:
                raise ProtocolError(
                    ErrorCode.SIZE_MISMATCH,
                    f"mask.data has {len(self.mask.data)} bytes; a {self.mask.width}x{self.mask.height} mask needs {needed}",
                    field="mask.data",
                )
        if len(self.prompt) > limits.max_prompt_chars:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"prompt is longer than {limits.max_prompt_chars} characters", field="prompt")
        if len(self.negative_prompt) > limits.max_prompt_chars:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, f"negative_prompt is longer than {limits.max_prompt_chars} characters", field="negative_prompt"
            )
        if self.strength is not None:
            _check_range("strength", self.strength, 0.0, 1.0, low_open=True)
        if self.steps is not None:
            _check_range("steps", self.steps, 1, limits.max_steps)
        if self.guidance is not None:
            _check_range("guidance", self.guidance, 0.0, 30.0)
        _check_range("count", self.count, 1, limits.max_count)
        if self.seed is not None:
            _check_range("seed", self.seed, 0, 2**32 - 1)
        _check_range("preview.every", self.preview.every, 0, limits.max_steps)
        _check_range("preview.max_size", self.preview.max_size, 16, 2048)


@dataclass(frozen=True)
class Cancel(Message):
    TYPE: ClassVar[str] = "cancel"
    job_id: str


@dataclass(frozen=True)
class ListModels(Message):
    TYPE: ClassVar[str] = "list_models"


@dataclass(frozen=True)
class LoadModel(Message):
    """Ask the bridge to switch models; ``model_status`` events follow, for every client."""

    TYPE: ClassVar[str] = "load_model"
    model: str


@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    protocol: int
    server_version: str
    device: str
    model: ModelState
    limits: Limits
    models: tuple[ModelInfo, ...]
    encodings: tuple[Encoding, ...] = _wire(missing=BASIC_ENCODINGS)
    shm: SharedMemoryOffer | None = _wire(None, sparse=True)
    #: the bridge agrees to raw frames, which the hello asked for: both sides use them from now on
    raw_frames: bool = _wire(False, sparse=True)


@dataclass(frozen=True)
class Queued(Message):
    """The job was accepted; ``position`` jobs run before it (0: it runs next)."""

    TYPE: ClassVar[str] = "queued"
    job_id: str
    position: int


@dataclass(frozen=True)
class Progress(Message):
    """Denoising step ``step`` of ``steps`` is done for variation ``index``."""

    TYPE: ClassVar[str] = "progress"
    job_id: str
    index: int
    step: int
    steps: int

    @property
    def fraction(self) -> float:
        return self.step / self.steps if self.steps else 1.0


@dataclass(frozen=True)
class Preview(Message):
    """A downscaled look at the predicted result; it covers the rectangle x, y, width, height of the sent image."""

    TYPE: ClassVar[str] = "preview"
    job_id: str
    index: int
    step: int
    steps: int
    image: Image
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Result(Message):
    """Variation ``index`` of ``count``: full-size pixels for the rectangle at (x, y) of the sent image.

    The job is over once the result with ``index == count - 1`` arrives.
    """

    TYPE: ClassVar[str] = "result"
    job_id: str
    index: int
    count: int
    image: Image
    x: int
    y: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    # the settings this variation actually ran with (the request's, or the model's recipe where it left them unset)
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None

    @property
    def last(self) -> bool:
        return self.index >= self.count - 1


@dataclass(frozen=True)
class Error(Message):
    """Something failed. With a ``job_id`` that job is over; without one the connection stays usable."""

    TYPE: ClassVar[str] = "error"
    code: ErrorCode = _wire(unknown=ErrorCode.INTERNAL)
    message: str = _wire(missing="")
    job_id: str | None = None
    field: str | None = None

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> Error:
        return cls(code=exc.code, message=exc.message, job_id=exc.job_id, field=exc.field)


@dataclass(frozen=True)
class Cancelled(Message):
    TYPE: ClassVar[str] = "cancelled"
    job_id: str


@dataclass(frozen=True)
class Models(Message):
    TYPE: ClassVar[str] = "models"
    models: tuple[ModelInfo, ...]
    current: ModelState


@dataclass(frozen=True)
class ModelStatusEvent(Message):
    """Sent to every client whenever the model's state changes (loading progress included)."""

    TYPE: ClassVar[str] = "model_status"
    model: ModelState


ClientMessage = Union[Hello, Generate, Cancel, ListModels, LoadModel]
ServerMessage = Union[Welcome, Queued, Progress, Preview, Result, Error, Cancelled, Models, ModelStatusEvent]

CLIENT_MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (Hello, Generate, Cancel, ListModels, LoadModel)}
SERVER_MESSAGES: dict[str, type[Message]] = {
    m.TYPE: m for m in (Welcome, Queued, Progress, Preview, Result, Error, Cancelled, Models, ModelStatusEvent)
}

# the fields of each message that hold pixels: what raw frames carry
_RASTERS: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if _strip_none(get_type_hints(cls)[f.name]) in (Image, Mask))  # type: ignore[arg-type]
    for cls in (*CLIENT_MESSAGES.values(), *SERVER_MESSAGES.values())
}
_RASTER_KEYS = tuple(sorted({name for names in _RASTERS.values() for name in names}))


def lost_pixels(event: Message, code: ErrorCode, message: str) -> Message | None:
    """What a client makes of an event whose pixels it could not get: a preview is dropped (None); a result becomes
    its job's error, which ends the job."""
    if isinstance(event, Preview):
        return None
    return Error(code=code, message=message, job_id=getattr(event, "job_id", None))


def is_job_end(message: Message) -> bool:
    """True for the event that ends a job: its last result, an error naming it, or cancelled."""
    if isinstance(message, Result):
        return message.last
    if isinstance(message, Error):
        return message.job_id is not None
    return isinstance(message, Cancelled)


def encode(message: Message) -> bytes:
    """The message as one msgpack frame (large pixel buffers copied once, into the frame)."""
    parts = wire.pack_parts(message.to_wire())
    return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)


def encode_parts(message: Message) -> list[wire.Piece]:
    """``encode``'s bytes as pieces in which large pixel buffers are the message's own, not copies."""
    return wire.pack_parts(message.to_wire())


# --- raw frames: large pixel data as binary frames of their own, outside msgpack ----------------

#: pixel data from this size on travels as a frame of its own once hello and welcome agreed to ``raw_frames``
RAW_FRAME_BYTES = wire.LIFT_BYTES
_M = TypeVar("_M", bound=Message)


def split_frames(message: _M) -> tuple[_M, list[wire.Piece]]:
    """``message`` with its large rasters' data taken out (each ``frame`` says how many bytes), and that data in order.

    With raw frames a message travels as its msgpack frame followed by one binary frame per raster taken out, in
    field order: the pixels are never copied into msgpack nor out of it.
    """
    changes: dict[str, _Raster] = {}
    taken: list[wire.Piece] = []
    for name, raster in _rasters(message):
        size = memoryview(raster.data).nbytes
        if size >= RAW_FRAME_BYTES:
            changes[name] = replace(raster, data=b"", frame=size)
            taken.append(raster.data)
    return (replace(message, **changes) if changes else message), taken  # type: ignore[type-var]


def frames_following(message: Message) -> int:
    """How many binary frames follow ``message`` with its rasters' data."""
    return sum(1 for _, raster in _rasters(message) if raster.frame > 0)


def join_frames(message: _M, frames: list[Any]) -> _M:
    """``message`` with the data of the ``frames_following`` binary frames that came after it put back in place."""
    changes: dict[str, _Raster] = {}
    pending = iter(frames)
    for name, raster in _rasters(message):
        if raster.frame < 0:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"'{name}.frame' must not be negative", field=f"{name}.frame")
        if raster.frame == 0:
            continue
        data = next(pending)
        if not isinstance(data, (bytes, bytearray)):
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE, f"the frame after the message must be binary: it carries {name}'s pixels", field=f"{name}.frame"
            )
        if len(raster.data) or raster.segment is not None:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, f"'{name}' comes in a frame of its own: its data must be empty", field=f"{name}.data"
            )
        if len(data) != raster.frame:
            raise ProtocolError(
                ErrorCode.SIZE_MISMATCH,
                f"{name}'s frame has {len(data)} bytes but the message announced {raster.frame}",
                field=f"{name}.frame",
            )
        changes[name] = replace(raster, data=bytes(data), frame=0)
    return replace(message, **changes) if changes else message  # type: ignore[type-var]


def _rasters(message: Message) -> list[tuple[str, _Raster]]:
    """The message's images and masks that are present, by field name, in field order."""
    found = ((name, getattr(message, name)) for name in _RASTERS.get(type(message), ()))
    return [(name, raster) for name, raster in found if raster is not None]


def _announced(obj: Any) -> int:
    # read off the wire map itself, so that the frames of a message that cannot be decoded are skipped too
    if not isinstance(obj, dict):
        return 0
    frames = 0
    for key in _RASTER_KEYS:
        raster = obj.get(key)
        frame = raster.get("frame") if isinstance(raster, dict) else None
        if isinstance(frame, int) and not isinstance(frame, bool) and frame > 0:
            frames += 1
    return frames


def _unpack(data: bytes | bytearray | memoryview) -> Any:
    # msgpack's pure-Python fallback (the editors' plug-ins) copies each large bin three times on the way in;
    # wire.unpack copies it once. Where msgpack's C extension loaded, it is the faster reader.
    if PURE_MSGPACK:
        return wire.unpack(data)
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def decode(data: bytes | bytearray | memoryview | str, registry: dict[str, type[Message]]) -> Message:
    """Parse one frame into a message from ``registry``; raises ProtocolError naming what is wrong."""
    if isinstance(data, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "send binary msgpack frames, not text")
    try:
        obj = _unpack(data)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"the frame is not valid msgpack: {exc}") from exc
    try:
        return _decode_map(obj, registry)
    except ProtocolError as exc:
        exc.frames = _announced(obj)
        raise


def _decode_map(obj: Any, registry: dict[str, type[Message]]) -> Message:
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message must be a msgpack map with a 'type' key")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.MISSING_FIELD, "the message has no 'type'", field="type")
    cls = registry.get(kind)
    if cls is None:
        known = ", ".join(sorted(registry))
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}; known types: {known}", field="type")
    return cls.from_wire(obj)


def decode_client_message(data: bytes | bytearray | memoryview | str) -> Message:
    return decode(data, CLIENT_MESSAGES)


def decode_server_message(data: bytes | bytearray | memoryview | str) -> Message:
    return decode(data, SERVER_MESSAGES)


def _check_size(width: int, height: int, limits: Limits, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"{name} is {width}x{height}; both sides must be at least 1 pixel",
            field=f"{name}.width" if width <= 0 else f"{name}.height",
        )
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{name} is {width}x{height}; this bridge accepts at most {limits.max_side} pixels a side and "
            f"{limits.max_pixels} pixels in all (serve --max-pixels raises it)",
            field=name,
        )


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{name} is {value}; it must be in {bracket}{low}, {high}]", field=name)
