"""The wire protocol between the bridge and its clients (see docs/protocol.md).

Every websocket frame is one binary msgpack map with a ``type`` key. Enums
travel by value, pixels as raw bytes. This module needs only the standard
library and msgpack: the editors' plug-ins carry a copy of it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar, Union

import msgpack

from . import wire

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


# --- value objects ---------------------------------------------------------------------------


_R = TypeVar("_R", bound="_Raster")


@dataclass(frozen=True)
class _Raster:
    width: int
    height: int
    data: wire.Piece  # bytes when received; the sender may hand over a view of its own pixels
    encoding: Encoding = Encoding.RAW
    # same-machine hand-off (bridge.shm): the raw pixels are bytes offset.. of this segment, and data is empty
    segment: str | None = None
    offset: int = 0

    def to_wire(self) -> dict[str, Any]:
        out = {"width": self.width, "height": self.height, "encoding": self.encoding.value, "data": self.data}
        if self.segment is not None:
            out.update(segment=self.segment, offset=self.offset)
        return out

    @classmethod
    def from_wire(cls: type[_R], raw: Any, name: str) -> _R:
        obj = _map(raw, name)
        return cls(
            width=_int(obj, "width", name),
            height=_int(obj, "height", name),
            data=_bytes(obj, "data", name),
            encoding=_enum(obj, "encoding", name, Encoding, Encoding.RAW),
            segment=_opt_str(obj, "segment", name),
            offset=_int(obj, "offset", name, 0),
        )


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
class PreviewSettings:
    """How often previews come (every N steps; 0 = never), their largest side and encoding."""

    every: int = 1
    max_size: int = 256
    encoding: Encoding = Encoding.RAW
    decoder: PreviewDecoder = PreviewDecoder.AUTO

    def to_wire(self) -> dict[str, Any]:
        return {"every": self.every, "max_size": self.max_size, "encoding": self.encoding.value, "decoder": self.decoder.value}

    @classmethod
    def from_wire(cls, raw: Any, name: str) -> PreviewSettings:
        obj = _map(raw, name)
        default = cls()
        return cls(
            every=_int(obj, "every", name, default.every),
            max_size=_int(obj, "max_size", name, default.max_size),
            encoding=_enum(obj, "encoding", name, Encoding, default.encoding),
            decoder=_enum(obj, "decoder", name, PreviewDecoder, default.decoder),
        )


@dataclass(frozen=True)
class Limits:
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
        wire = {f.name: getattr(self, f.name) for f in fields(self)}
        wire["max_message_bytes"] = self.max_message_bytes
        return wire

    @classmethod
    def from_wire(cls, raw: Any, name: str) -> Limits:
        obj = _map(raw, name)
        return cls(**{f.name: _int(obj, f.name, name, f.default) for f in fields(cls)})


@dataclass(frozen=True)
class Recipe:
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

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, raw: Any, name: str) -> Recipe:
        obj = _map(raw, name)
        return cls(
            steps=_int(obj, "steps", name),
            guidance=_float(obj, "guidance", name),
            strength=_float(obj, "strength", name),
            live_steps=_int(obj, "live_steps", name),
            live_strength=_float(obj, "live_strength", name),
            resolution=_int(obj, "resolution", name),
            scheduler=_str(obj, "scheduler", name, ""),
            inpaint=_bool(obj, "inpaint", name, False),
            family=_str(obj, "family", name, ""),
            kind=_str(obj, "kind", name, ""),
        )

    def settings(self, live: bool) -> tuple[int, float, float]:
        """Steps, guidance and strength for an ordinary or a live job."""
        if live:
            return self.live_steps, self.guidance, self.live_strength
        return self.steps, self.guidance, self.strength


def _opt_recipe(obj: dict[str, Any], key: str, prefix: str) -> Recipe | None:
    raw = obj.get(key)
    return None if raw is None else Recipe.from_wire(raw, _path(prefix, key))


@dataclass(frozen=True)
class ModelInfo:
    """One model the bridge can load: ``name`` is what ``load_model`` takes."""

    name: str
    source: str  # "builtin", "hub", "folder" or "file"
    test_model: bool = False
    recipe: Recipe | None = None  # None: known once the model is loaded

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "test_model": self.test_model,
            "recipe": None if self.recipe is None else self.recipe.to_wire(),
        }

    @classmethod
    def from_wire(cls, raw: Any, name: str) -> ModelInfo:
        obj = _map(raw, name)
        return cls(
            name=_str(obj, "name", name),
            source=_str(obj, "source", name, ""),
            test_model=_bool(obj, "test_model", name, False),
            recipe=_opt_recipe(obj, "recipe", name),
        )


@dataclass(frozen=True)
class ModelState:
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

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "test_model": self.test_model,
            "inpaint": self.inpaint,
            "progress": self.progress,
            "recipe": None if self.recipe is None else self.recipe.to_wire(),
            "downloaded": self.downloaded,
            "download_size": self.download_size,
        }

    @classmethod
    def from_wire(cls, raw: Any, name: str) -> ModelState:
        obj = _map(raw, name)
        return cls(
            name=_opt_str(obj, "name", name),
            status=_enum(obj, "status", name, ModelStatus),
            message=_str(obj, "message", name, ""),
            test_model=_bool(obj, "test_model", name, False),
            inpaint=_bool(obj, "inpaint", name, False),
            progress=_opt_float(obj, "progress", name),
            recipe=_opt_recipe(obj, "recipe", name),
            downloaded=_opt_int(obj, "downloaded", name),
            download_size=_opt_int(obj, "download_size", name),
        )


@dataclass(frozen=True)
class SharedMemoryOffer:
    """The bridge's same-machine hand-off (bridge.shm), offered in the welcome to loopback clients that ask.

    ``folder`` is the bridge's private segment folder; the file ``probe`` in it holds ``token``: a client that
    reads it there shares the bridge's machine and user, and may name segments of that folder in its images.
    """

    folder: str
    probe: str
    token: str

    def to_wire(self) -> dict[str, Any]:
        return {"folder": self.folder, "probe": self.probe, "token": self.token}

    @classmethod
    def from_wire(cls, raw: Any, name: str) -> SharedMemoryOffer:
        obj = _map(raw, name)
        return cls(folder=_str(obj, "folder", name), probe=_str(obj, "probe", name), token=_str(obj, "token", name))


# --- messages --------------------------------------------------------------------------------


class Message:
    """Base of every message; ``TYPE`` is the wire ``type``."""

    TYPE: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Message:
        raise NotImplementedError


@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    client: str
    protocol: int = PROTOCOL_VERSION
    encodings: tuple[Encoding, ...] = BASIC_ENCODINGS
    #: the client can take the same-machine hand-off (bridge.shm) if the bridge offers it
    shm: bool = False

    def to_wire(self) -> dict[str, Any]:
        out = {"type": self.TYPE, "client": self.client, "protocol": self.protocol, "encodings": [e.value for e in self.encodings]}
        if self.shm:
            out["shm"] = True
        return out

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Hello:
        return cls(
            client=_str(obj, "client", None),
            protocol=_int(obj, "protocol", None),
            encodings=_enum_list(obj, "encodings", Encoding, BASIC_ENCODINGS),
            shm=_bool(obj, "shm", None, False),
        )


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
    shm: bool = False

    @property
    def matches_seams(self) -> bool:
        return self.mask is not None if self.match_seams is None else self.match_seams and self.mask is not None

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "job_id": self.job_id,
            "image": self.image.to_wire(),
            "mask": None if self.mask is None else self.mask.to_wire(),
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "strength": self.strength,
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "count": self.count,
            "preview": self.preview.to_wire(),
            "result_encoding": self.result_encoding.value,
            "live": self.live,
            "match_seams": self.match_seams,
            **({"shm": True} if self.shm else {}),
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Generate:
        job_id = _str(obj, "job_id", None)
        try:
            mask_raw = obj.get("mask")
            preview_raw = obj.get("preview")
            return cls(
                job_id=job_id,
                image=Image.from_wire(_required(obj, "image", None), "image"),
                mask=None if mask_raw is None else Mask.from_wire(mask_raw, "mask"),
                prompt=_str(obj, "prompt", None),
                negative_prompt=_str(obj, "negative_prompt", None, ""),
                strength=_opt_float(obj, "strength", None),
                steps=_opt_int(obj, "steps", None),
                guidance=_opt_float(obj, "guidance", None),
                seed=_opt_int(obj, "seed", None),
                count=_int(obj, "count", None, 1),
                preview=PreviewSettings() if preview_raw is None else PreviewSettings.from_wire(preview_raw, "preview"),
                result_encoding=_enum(obj, "result_encoding", None, Encoding, Encoding.RAW),
                live=_bool(obj, "live", None, False),
                match_seams=None if obj.get("match_seams") is None else _bool(obj, "match_seams", None),
                shm=_bool(obj, "shm", None, False),
            )
        except ProtocolError as exc:
            exc.job_id = job_id
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

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "job_id": self.job_id}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Cancel:
        return cls(job_id=_str(obj, "job_id", None))


@dataclass(frozen=True)
class ListModels(Message):
    TYPE: ClassVar[str] = "list_models"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ListModels:
        return cls()


@dataclass(frozen=True)
class LoadModel(Message):
    """Ask the bridge to switch models; ``model_status`` events follow, for every client."""

    TYPE: ClassVar[str] = "load_model"
    model: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "model": self.model}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> LoadModel:
        return cls(model=_str(obj, "model", None))


@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    protocol: int
    server_version: str
    device: str
    model: ModelState
    limits: Limits
    models: tuple[ModelInfo, ...]
    encodings: tuple[Encoding, ...]
    shm: SharedMemoryOffer | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "protocol": self.protocol,
            "server_version": self.server_version,
            "device": self.device,
            "model": self.model.to_wire(),
            "limits": self.limits.to_wire(),
            "models": [m.to_wire() for m in self.models],
            "encodings": [e.value for e in self.encodings],
            **({} if self.shm is None else {"shm": self.shm.to_wire()}),
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Welcome:
        return cls(
            protocol=_int(obj, "protocol", None),
            server_version=_str(obj, "server_version", None),
            device=_str(obj, "device", None),
            model=ModelState.from_wire(_required(obj, "model", None), "model"),
            limits=Limits.from_wire(_required(obj, "limits", None), "limits"),
            models=tuple(ModelInfo.from_wire(m, "models") for m in _list(obj, "models", None)),
            encodings=_enum_list(obj, "encodings", Encoding, BASIC_ENCODINGS),
            shm=None if obj.get("shm") is None else SharedMemoryOffer.from_wire(obj["shm"], "shm"),
        )


@dataclass(frozen=True)
class Queued(Message):
    """The job was accepted; ``position`` jobs run before it (0: it runs next)."""

    TYPE: ClassVar[str] = "queued"
    job_id: str
    position: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "job_id": self.job_id, "position": self.position}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Queued:
        return cls(job_id=_str(obj, "job_id", None), position=_int(obj, "position", None))


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

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "job_id": self.job_id, "index": self.index, "step": self.step, "steps": self.steps}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Progress:
        return cls(
            job_id=_str(obj, "job_id", None),
            index=_int(obj, "index", None),
            step=_int(obj, "step", None),
            steps=_int(obj, "steps", None),
        )


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

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "job_id": self.job_id,
            "index": self.index,
            "step": self.step,
            "steps": self.steps,
            "image": self.image.to_wire(),
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Preview:
        return cls(
            job_id=_str(obj, "job_id", None),
            index=_int(obj, "index", None),
            step=_int(obj, "step", None),
            steps=_int(obj, "steps", None),
            image=Image.from_wire(_required(obj, "image", None), "image"),
            x=_int(obj, "x", None),
            y=_int(obj, "y", None),
            width=_int(obj, "width", None),
            height=_int(obj, "height", None),
        )


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

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "job_id": self.job_id,
            "index": self.index,
            "count": self.count,
            "image": self.image.to_wire(),
            "x": self.x,
            "y": self.y,
            "seed": self.seed,
            "timings": dict(self.timings),
            "steps": self.steps,
            "guidance": self.guidance,
            "strength": self.strength,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Result:
        timings = _map(obj.get("timings", {}), "timings")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in timings.values()):
            raise _invalid(None, "timings", "a map of numbers")
        return cls(
            job_id=_str(obj, "job_id", None),
            index=_int(obj, "index", None),
            count=_int(obj, "count", None),
            image=Image.from_wire(_required(obj, "image", None), "image"),
            x=_int(obj, "x", None),
            y=_int(obj, "y", None),
            seed=_int(obj, "seed", None),
            timings={str(k): float(v) for k, v in timings.items()},
            steps=_opt_int(obj, "steps", None),
            guidance=_opt_float(obj, "guidance", None),
            strength=_opt_float(obj, "strength", None),
        )


@dataclass(frozen=True)
class Error(Message):
    """Something failed. With a ``job_id`` that job is over; without one the connection stays usable."""

    TYPE: ClassVar[str] = "error"
    code: ErrorCode
    message: str
    job_id: str | None = None
    field: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "code": self.code.value, "message": self.message, "job_id": self.job_id, "field": self.field}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Error:
        code_raw = obj.get("code")
        code = next((c for c in ErrorCode if c.value == code_raw), ErrorCode.INTERNAL)
        return cls(
            code=code,
            message=_str(obj, "message", None, ""),
            job_id=_opt_str(obj, "job_id", None),
            field=_opt_str(obj, "field", None),
        )

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> Error:
        return cls(code=exc.code, message=exc.message, job_id=exc.job_id, field=exc.field)


@dataclass(frozen=True)
class Cancelled(Message):
    TYPE: ClassVar[str] = "cancelled"
    job_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "job_id": self.job_id}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Cancelled:
        return cls(job_id=_str(obj, "job_id", None))


@dataclass(frozen=True)
class Models(Message):
    TYPE: ClassVar[str] = "models"
    models: tuple[ModelInfo, ...]
    current: ModelState

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "models": [m.to_wire() for m in self.models], "current": self.current.to_wire()}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Models:
        return cls(
            models=tuple(ModelInfo.from_wire(m, "models") for m in _list(obj, "models", None)),
            current=ModelState.from_wire(_required(obj, "current", None), "current"),
        )


@dataclass(frozen=True)
class ModelStatusEvent(Message):
    """Sent to every client whenever the model's state changes (loading progress included)."""

    TYPE: ClassVar[str] = "model_status"
    model: ModelState

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "model": self.model.to_wire()}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ModelStatusEvent:
        return cls(model=ModelState.from_wire(_required(obj, "model", None), "model"))


ClientMessage = Union[Hello, Generate, Cancel, ListModels, LoadModel]
ServerMessage = Union[Welcome, Queued, Progress, Preview, Result, Error, Cancelled, Models, ModelStatusEvent]

CLIENT_MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (Hello, Generate, Cancel, ListModels, LoadModel)}
SERVER_MESSAGES: dict[str, type[Message]] = {
    m.TYPE: m for m in (Welcome, Queued, Progress, Preview, Result, Error, Cancelled, Models, ModelStatusEvent)
}


def is_job_end(message: Message) -> bool:
    """True for the event that ends a job: its last result, an error naming it, or cancelled."""
    if isinstance(message, Result):
        return message.last
    if isinstance(message, Error):
        return message.job_id is not None
    return isinstance(message, Cancelled)


# msgpack's pure-Python fallback (the editors' plug-ins) copies each large bin three times on the way in;
# wire.unpack copies it once. Where msgpack's C extension loaded, it is the faster reader.
_PURE_MSGPACK = msgpack.Unpacker.__module__ == "msgpack.fallback"


def encode(message: Message) -> bytes:
    """The message as one msgpack frame (large pixel buffers copied once, into the frame)."""
    parts = wire.pack_parts(message.to_wire())
    return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)


def encode_parts(message: Message) -> list[wire.Piece]:
    """``encode``'s bytes as pieces in which large pixel buffers are the message's own, not copies."""
    return wire.pack_parts(message.to_wire())


def _unpack(data: bytes | bytearray | memoryview) -> Any:
    if _PURE_MSGPACK:
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


# --- field readers: each names the field at fault -------------------------------------------

_MISSING: Any = object()


def _path(prefix: str | None, key: str) -> str:
    return key if prefix is None else f"{prefix}.{key}"


def _required(obj: dict[str, Any], key: str, prefix: str | None) -> Any:
    if key not in obj or obj[key] is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f"missing field '{_path(prefix, key)}'", field=_path(prefix, key))
    return obj[key]


def _get(obj: dict[str, Any], key: str, prefix: str | None, default: Any) -> Any:
    if default is _MISSING:
        return _required(obj, key, prefix)
    value = obj.get(key)
    return default if value is None else value


def _invalid(prefix: str | None, key: str, what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD, f"'{_path(prefix, key)}' must be {what}", field=_path(prefix, key))


def _map(raw: Any, name: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"'{name}' must be a map", field=name)
    return raw


def _list(obj: dict[str, Any], key: str, prefix: str | None) -> list[Any]:
    value = _get(obj, key, prefix, [])
    if not isinstance(value, (list, tuple)):
        raise _invalid(prefix, key, "a list")
    return list(value)


def _int(obj: dict[str, Any], key: str, prefix: str | None, default: Any = _MISSING) -> int:
    value = _get(obj, key, prefix, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(prefix, key, "an integer")
    return value


def _opt_int(obj: dict[str, Any], key: str, prefix: str | None) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, prefix)


def _float(obj: dict[str, Any], key: str, prefix: str | None, default: Any = _MISSING) -> float:
    value = _get(obj, key, prefix, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _invalid(prefix, key, "a number")
    return float(value)


def _opt_float(obj: dict[str, Any], key: str, prefix: str | None) -> float | None:
    return None if obj.get(key) is None else _float(obj, key, prefix)


def _str(obj: dict[str, Any], key: str, prefix: str | None, default: Any = _MISSING) -> str:
    value = _get(obj, key, prefix, default)
    if not isinstance(value, str):
        raise _invalid(prefix, key, "a string")
    return value


def _opt_str(obj: dict[str, Any], key: str, prefix: str | None) -> str | None:
    return None if obj.get(key) is None else _str(obj, key, prefix)


def _bool(obj: dict[str, Any], key: str, prefix: str | None, default: Any = _MISSING) -> bool:
    value = _get(obj, key, prefix, default)
    if not isinstance(value, bool):
        raise _invalid(prefix, key, "true or false")
    return value


def _bytes(obj: dict[str, Any], key: str, prefix: str | None) -> bytes:
    value = _required(obj, key, prefix)
    if not isinstance(value, (bytes, bytearray)):
        raise _invalid(prefix, key, "binary data (msgpack bin)")
    return bytes(value)


def _enum(obj: dict[str, Any], key: str, prefix: str | None, enum: Any, default: Any = _MISSING) -> Any:
    value = _get(obj, key, prefix, default)
    if isinstance(value, enum):
        return value
    for member in enum:
        if member.value == value:
            return member
    choices = ", ".join(repr(m.value) for m in enum)
    raise _invalid(prefix, key, f"one of {choices}")


def _enum_list(obj: dict[str, Any], key: str, enum: Any, default: tuple[Any, ...]) -> tuple[Any, ...]:
    values = obj.get(key)
    if values is None:
        return default
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise _invalid(None, key, "a list of strings")
    # unknown values are skipped so that newer peers can offer more
    known = {m.value: m for m in enum}
    return tuple(known[v] for v in values if v in known)


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
