from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import msgpack
import pytest

from bridge.editor import protocol as p

RGBA_2X2 = bytes(range(16))
TURBO = p.Recipe(
    steps=4, guidance=0.0, strength=0.5, live_steps=1, live_strength=0.5, resolution=512,
    scheduler="EulerAncestralDiscreteScheduler", inpaint=False, family="sd", kind="sd-turbo",
)  # fmt: skip

SAMPLES: dict[str, p.Message] = {
    "hello": p.Hello(client="krita-plugin/0.1", protocol=1, encodings=(p.Encoding.RAW, p.Encoding.PNG)),
    "generate": p.Generate(
        job_id="job-1",
        image=p.Image(2, 2, RGBA_2X2),
        prompt="a lighthouse at dusk",
        negative_prompt="blurry",
        mask=p.Mask(2, 2, zlib.compress(b"\x00\xff\x80\x00"), p.Encoding.ZLIB),
        strength=0.75,
        steps=12,
        guidance=4.5,
        seed=1234,
        count=3,
        preview=p.PreviewSettings(every=2, max_size=128, encoding=p.Encoding.JPEG, decoder=p.PreviewDecoder.TINY),
        result_encoding=p.Encoding.PNG,
        live=True,
    ),
    "cancel": p.Cancel(job_id="job-1"),
    "list_models": p.ListModels(),
    "load_model": p.LoadModel(model="stabilityai/sd-turbo"),
    "welcome": p.Welcome(
        protocol=1,
        server_version="0.1.0",
        device="cpu",
        model=p.ModelState(
            name="tiny", status=p.ModelStatus.READY, message="noise", test_model=True, inpaint=False, progress=None, recipe=TURBO
        ),
        limits=p.Limits(max_pixels=1024 * 1024, max_side=2048, max_steps=50, max_count=4, max_prompt_chars=500),
        models=(p.ModelInfo("tiny", "builtin", test_model=True, recipe=TURBO), p.ModelInfo("sd15.safetensors", "file")),
        encodings=(p.Encoding.RAW, p.Encoding.ZLIB, p.Encoding.PNG, p.Encoding.JPEG),
    ),
    "queued": p.Queued(job_id="job-1", position=2),
    "progress": p.Progress(job_id="job-1", index=1, step=3, steps=10),
    "preview": p.Preview(job_id="job-1", index=0, step=3, steps=10, image=p.Image(1, 1, b"\x01\x02\x03\xff"), x=4, y=5, width=6, height=7),
    "result": p.Result(
        job_id="job-1",
        index=2,
        count=3,
        image=p.Image(2, 2, b"png bytes", p.Encoding.PNG),
        x=8,
        y=9,
        seed=77,
        timings={"total_ms": 12.5},
        steps=4,
        guidance=0.0,
        strength=0.5,
    ),
    "error": p.Error(code=p.ErrorCode.SIZE_MISMATCH, message="image.data has 3 bytes", job_id="job-1", field="image.data"),
    "cancelled": p.Cancelled(job_id="job-1"),
    "models": p.Models(
        models=(p.ModelInfo("tiny", "builtin", test_model=True),),
        current=p.ModelState(
            name="sd-turbo", status=p.ModelStatus.LOADING, message="downloading", progress=0.4, downloaded=1 << 30, download_size=5 << 30
        ),
    ),
    "model_status": p.ModelStatusEvent(model=p.ModelState(name=None, status=p.ModelStatus.NO_MODEL, message="start with --model")),
}

ALL_TYPES = [("client", kind) for kind in sorted(p.CLIENT_MESSAGES)] + [("server", kind) for kind in sorted(p.SERVER_MESSAGES)]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def generate_wire(**changes: Any) -> dict[str, Any]:
    wire = p.Generate(job_id="job-1", image=p.Image(2, 2, RGBA_2X2), prompt="x", mask=p.Mask(2, 2, b"\x00\x00\xff\xff")).to_wire()
    wire.update(changes)
    return wire


def decode_error(obj: Any, registry: dict[str, type[p.Message]] = p.CLIENT_MESSAGES) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(pack(obj), registry)
    return info.value


def valid_request(**changes: Any) -> p.Generate:
    fields: dict[str, Any] = {"job_id": "job-1", "image": p.Image(4, 3, bytes(4 * 3 * 4)), "prompt": "a cat"}
    fields.update(changes)
    return p.Generate(**fields)


def validate_error(request: p.Generate) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        request.validate(p.Limits())
    return info.value


@pytest.mark.parametrize(("side", "kind"), ALL_TYPES)
def test_every_message_round_trips(side: str, kind: str) -> None:
    message = SAMPLES[kind]
    assert kind == message.TYPE
    decoded = p.decode_client_message(p.encode(message)) if side == "client" else p.decode_server_message(p.encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


def test_the_registries_do_not_share_types() -> None:
    assert not set(p.CLIENT_MESSAGES) & set(p.SERVER_MESSAGES)


def test_enums_travel_by_value() -> None:
    wire = msgpack.unpackb(p.encode(SAMPLES["generate"]), raw=False)
    assert wire["result_encoding"] == "png"
    assert wire["preview"]["decoder"] == "tiny"
    assert wire["mask"]["encoding"] == "zlib"
    assert isinstance(wire["image"]["data"], bytes)


def test_generate_defaults_fill_absent_optional_fields() -> None:
    decoded = p.decode_client_message(
        pack({"type": "generate", "job_id": "j", "prompt": "", "image": {"width": 1, "height": 1, "data": b"abcd"}})
    )
    assert decoded == p.Generate(job_id="j", image=p.Image(1, 1, b"abcd"), prompt="")


def test_unset_steps_guidance_and_strength_mean_the_recipe() -> None:
    request = p.Generate(job_id="j", image=p.Image(1, 1, b"abcd"), prompt="")
    wire = msgpack.unpackb(p.encode(request), raw=False)
    assert (wire["steps"], wire["guidance"], wire["strength"]) == (None, None, None)
    assert p.decode_client_message(p.encode(request)) == request
    request.validate(p.Limits())


def test_a_recipe_gives_ordinary_and_live_settings() -> None:
    assert TURBO.settings(live=False) == (4, 0.0, 0.5)
    assert TURBO.settings(live=True) == (1, 0.0, 0.5)


def test_a_model_without_a_recipe_decodes_to_none() -> None:
    wire = SAMPLES["welcome"].to_wire()
    del wire["models"][0]["recipe"]
    del wire["model"]["recipe"]
    decoded = p.decode_server_message(pack(wire))
    assert isinstance(decoded, p.Welcome)
    assert decoded.models[0].recipe is None and decoded.model.recipe is None


def test_a_bad_recipe_names_its_field() -> None:
    wire = SAMPLES["welcome"].to_wire()
    wire["models"][0]["recipe"]["live_steps"] = "one"
    error = decode_error(wire, p.SERVER_MESSAGES)
    assert (error.code, error.field) == (p.ErrorCode.INVALID_FIELD, "models.recipe.live_steps")


def test_hello_skips_encodings_it_does_not_know() -> None:
    decoded = p.decode_client_message(pack({"type": "hello", "client": "c", "protocol": 1, "encodings": ["webp", "zlib"]}))
    assert isinstance(decoded, p.Hello)
    assert decoded.encodings == (p.Encoding.ZLIB,)


def test_error_with_an_unknown_code_decodes_as_internal() -> None:
    decoded = p.decode_server_message(pack({"type": "error", "code": "from_the_future", "message": "m"}))
    assert decoded == p.Error(code=p.ErrorCode.INTERNAL, message="m")


@pytest.mark.parametrize("frame", [b"\xc1", b"\x92\x01", b"\x01\x02", b""])
def test_malformed_msgpack_is_a_bad_message(frame: bytes) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client_message(frame)
    assert info.value.code is p.ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize("obj", [[1, 2], "generate", 7, None])
def test_a_frame_that_is_not_a_map_is_a_bad_message(obj: Any) -> None:
    assert decode_error(obj).code is p.ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize("obj", [{"job_id": "a"}, {"type": 3}, {"type": None}])
def test_a_message_without_a_type_names_the_type_field(obj: dict[str, Any]) -> None:
    error = decode_error(obj)
    assert (error.code, error.field) == (p.ErrorCode.MISSING_FIELD, "type")


def test_an_unknown_type_lists_the_known_ones() -> None:
    error = decode_error({"type": "explode"})
    assert (error.code, error.field) == (p.ErrorCode.UNKNOWN_TYPE, "type")
    assert "'explode'" in error.message
    assert "generate" in error.message


def test_server_messages_are_unknown_to_the_client_registry() -> None:
    assert decode_error(SAMPLES["welcome"].to_wire()).code is p.ErrorCode.UNKNOWN_TYPE
    assert decode_error(SAMPLES["hello"].to_wire(), p.SERVER_MESSAGES).code is p.ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize(
    ("drop", "field"),
    [
        ("prompt", "prompt"),
        ("image", "image"),
        ("image.width", "image.width"),
        ("image.height", "image.height"),
        ("image.data", "image.data"),
        ("mask.width", "mask.width"),
        ("mask.data", "mask.data"),
    ],
)
def test_generate_missing_fields_are_named_and_carry_the_job_id(drop: str, field: str) -> None:
    wire = generate_wire()
    *parents, key = drop.split(".")
    target = wire
    for parent in parents:
        target = target[parent]
    del target[key]
    error = decode_error(wire)
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.MISSING_FIELD, field, "job-1")
    assert field in error.message


def test_generate_without_a_job_id_names_it() -> None:
    wire = generate_wire()
    del wire["job_id"]
    error = decode_error(wire)
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.MISSING_FIELD, "job_id", None)


@pytest.mark.parametrize(
    ("kind", "drop", "field"),
    [
        ("queued", "position", "position"),
        ("progress", "steps", "steps"),
        ("preview", "image", "image"),
        ("result", "seed", "seed"),
        ("welcome", "limits", "limits"),
        ("models", "current", "current"),
        ("model_status", "model", "model"),
        ("cancelled", "job_id", "job_id"),
    ],
)
def test_server_messages_missing_fields_are_named(kind: str, drop: str, field: str) -> None:
    wire = SAMPLES[kind].to_wire()
    del wire[drop]
    error = decode_error(wire, p.SERVER_MESSAGES)
    assert (error.code, error.field) == (p.ErrorCode.MISSING_FIELD, field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": "20"}, "steps"),
        ({"count": True}, "count"),
        ({"seed": "1"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"strength": "0.5"}, "strength"),
        ({"strength": False}, "strength"),
        ({"strength": float("nan")}, "strength"),
        ({"live": 1}, "live"),
        ({"prompt": 5}, "prompt"),
        ({"negative_prompt": b"bytes"}, "negative_prompt"),
        ({"image": {"width": "2", "height": 2, "data": RGBA_2X2}}, "image.width"),
        ({"image": {"width": 2, "height": True, "data": RGBA_2X2}}, "image.height"),
        ({"image": {"width": 2, "height": 2, "data": "not bytes"}}, "image.data"),
        ({"image": [2, 2]}, "image"),
        ({"mask": "all"}, "mask"),
        ({"preview": {"every": "1"}}, "preview.every"),
    ],
)
def test_wrong_types_are_invalid_and_named(changes: dict[str, Any], field: str) -> None:
    error = decode_error(generate_wire(**changes))
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.INVALID_FIELD, field, "job-1")
    assert field in error.message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"image": {"width": 2, "height": 2, "data": RGBA_2X2, "encoding": "webp"}}, "image.encoding"),
        ({"mask": {"width": 2, "height": 2, "data": b"\x00" * 4, "encoding": "RAW"}}, "mask.encoding"),
        ({"result_encoding": "gif"}, "result_encoding"),
        ({"preview": {"decoder": "perfect"}}, "preview.decoder"),
        ({"preview": {"encoding": 1}}, "preview.encoding"),
    ],
)
def test_bad_enum_values_are_invalid_and_list_the_choices(changes: dict[str, Any], field: str) -> None:
    error = decode_error(generate_wire(**changes))
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.INVALID_FIELD, field, "job-1")
    assert "one of" in error.message


def test_a_bad_model_status_is_named() -> None:
    wire = SAMPLES["model_status"].to_wire()
    wire["model"]["status"] = "sleeping"
    error = decode_error(wire, p.SERVER_MESSAGES)
    assert (error.code, error.field) == (p.ErrorCode.INVALID_FIELD, "model.status")


def test_a_valid_request_passes_validation() -> None:
    valid_request(strength=1.0, steps=100, guidance=30.0, count=8, seed=2**32 - 1, mask=p.Mask(4, 3, bytes(12))).validate(p.Limits())
    valid_request(image=p.Image(4096, 4096, b"", p.Encoding.PNG), guidance=0.0, seed=0).validate(p.Limits())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"steps": 0}, "steps"),
        ({"steps": 101}, "steps"),
        ({"guidance": -1.0}, "guidance"),
        ({"guidance": 31.0}, "guidance"),
        ({"count": 0}, "count"),
        ({"count": 9}, "count"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"negative_prompt": "x" * 4001}, "negative_prompt"),
        ({"job_id": ""}, "job_id"),
        ({"job_id": "j" * 129}, "job_id"),
        ({"preview": p.PreviewSettings(every=-1)}, "preview.every"),
        ({"preview": p.PreviewSettings(max_size=8)}, "preview.max_size"),
    ],
)
def test_out_of_range_values_are_invalid(changes: dict[str, Any], field: str) -> None:
    request = valid_request(**changes)
    error = validate_error(request)
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.INVALID_FIELD, field, request.job_id)
    assert field in error.message


@pytest.mark.parametrize(("width", "height"), [(0, 3), (4, 0), (-1, 3)])
def test_zero_sized_images_are_invalid(width: int, height: int) -> None:
    error = validate_error(valid_request(image=p.Image(width, height, b"")))
    assert (error.code, error.job_id) == (p.ErrorCode.INVALID_FIELD, "job-1")
    assert error.field is not None and error.field.startswith("image")
    assert f"{width}x{height}" in error.message


@pytest.mark.parametrize(("width", "height"), [(8193, 1), (1, 8193), (4097, 4096)])
def test_oversized_images_are_too_large(width: int, height: int) -> None:
    error = validate_error(valid_request(image=p.Image(width, height, b"", p.Encoding.PNG)))
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.TOO_LARGE, "image", "job-1")
    assert f"{width}x{height}" in error.message


def test_the_limits_given_are_the_ones_enforced() -> None:
    with pytest.raises(p.ProtocolError) as info:
        valid_request(steps=11).validate(p.Limits(max_steps=10))
    assert info.value.field == "steps"


def test_raw_pixels_must_match_the_stated_size() -> None:
    error = validate_error(valid_request(image=p.Image(4, 3, bytes(4 * 3 * 4 - 1))))
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.SIZE_MISMATCH, "image.data", "job-1")
    assert "47 bytes" in error.message


def test_the_mask_must_have_the_image_size() -> None:
    error = validate_error(valid_request(mask=p.Mask(3, 4, bytes(12))))
    assert (error.code, error.field, error.job_id) == (p.ErrorCode.SIZE_MISMATCH, "mask", "job-1")


def test_raw_mask_bytes_must_match_its_size() -> None:
    error = validate_error(valid_request(mask=p.Mask(4, 3, bytes(11))))
    assert (error.code, error.field) == (p.ErrorCode.SIZE_MISMATCH, "mask.data")


def test_zlib_image_decompresses_to_raw_rgba() -> None:
    assert p.Image(2, 2, zlib.compress(RGBA_2X2), p.Encoding.ZLIB).raw_rgba() == RGBA_2X2
    assert p.Image(2, 2, RGBA_2X2).raw_rgba() == RGBA_2X2


def test_zlib_image_of_the_wrong_size_is_a_size_mismatch() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.Image(2, 3, zlib.compress(RGBA_2X2), p.Encoding.ZLIB).raw_rgba()
    assert (info.value.code, info.value.field) == (p.ErrorCode.SIZE_MISMATCH, "image.data")


def test_corrupt_zlib_is_invalid() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.Image(2, 2, zlib.compress(RGBA_2X2)[:-3] + b"xyz", p.Encoding.ZLIB).raw_rgba()
    assert (info.value.code, info.value.field) == (p.ErrorCode.INVALID_FIELD, "image.data")


def test_zlib_mask_decompresses_and_checks_its_size() -> None:
    assert p.Mask(2, 2, zlib.compress(b"\x00\x01\x02\x03"), p.Encoding.ZLIB).raw_gray() == b"\x00\x01\x02\x03"
    with pytest.raises(p.ProtocolError) as info:
        p.Mask(3, 2, zlib.compress(b"\x00\x01\x02\x03"), p.Encoding.ZLIB).raw_gray()
    assert info.value.field == "mask.data"


def test_raw_rgba_refuses_encodings_that_need_an_imaging_library() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.Image(2, 2, b"\x89PNG", p.Encoding.PNG).raw_rgba()
    assert (info.value.code, info.value.field) == (p.ErrorCode.UNSUPPORTED_ENCODING, "image.encoding")


def test_error_from_exception_keeps_every_field() -> None:
    exc = p.ProtocolError(p.ErrorCode.QUEUE_FULL, "wait", field="job_id", job_id="j")
    assert p.Error.from_exception(exc) == p.Error(code=p.ErrorCode.QUEUE_FULL, message="wait", job_id="j", field="job_id")


@pytest.mark.parametrize(
    ("message", "ends"),
    [
        (p.Result(job_id="j", index=2, count=3, image=p.Image(1, 1, b"abcd"), x=0, y=0, seed=1), True),
        (p.Result(job_id="j", index=1, count=3, image=p.Image(1, 1, b"abcd"), x=0, y=0, seed=1), False),
        (p.Error(code=p.ErrorCode.INTERNAL, message="boom", job_id="j"), True),
        (p.Error(code=p.ErrorCode.BAD_MESSAGE, message="bad frame"), False),
        (p.Cancelled(job_id="j"), True),
        (p.Queued(job_id="j", position=0), False),
        (p.Progress(job_id="j", index=0, step=10, steps=10), False),
        (SAMPLES["preview"], False),
        (SAMPLES["model_status"], False),
    ],
)
def test_is_job_end(message: p.Message, ends: bool) -> None:
    assert p.is_job_end(message) is ends


def test_limits_announce_the_largest_message() -> None:
    limits = p.Limits(max_pixels=100)
    assert limits.to_wire()["max_message_bytes"] == 500 + (1 << 20)


# the two tests below fail: decode lets a TypeError / ValueError out instead of a ProtocolError,
# so the server drops the connection with a logged traceback and no error event


def test_an_unhashable_encoding_is_an_invalid_field() -> None:
    error = decode_error({"type": "hello", "client": "c", "protocol": 1, "encodings": [[1]]})
    assert (error.code, error.field) == (p.ErrorCode.INVALID_FIELD, "encodings")


def test_non_numeric_timings_are_an_invalid_field() -> None:
    wire = SAMPLES["result"].to_wire()
    wire["timings"] = {"total_ms": "fast"}
    error = decode_error(wire, p.SERVER_MESSAGES)
    assert (error.code, error.field) == (p.ErrorCode.INVALID_FIELD, "timings")


def test_zlib_is_inflated_only_up_to_the_stated_size() -> None:
    assert p.decode_plain(zlib.compress(bytes(64)), p.Encoding.ZLIB, 64, "image") == bytes(64)
    bomb = zlib.compress(bytes(64 << 20))  # 64 MiB of zeros in about 64 KB
    with pytest.raises(p.ProtocolError) as caught:
        p.decode_plain(bomb, p.Encoding.ZLIB, 64, "image")
    assert caught.value.code is p.ErrorCode.SIZE_MISMATCH and caught.value.field == "image.data"
    with pytest.raises(p.ProtocolError) as caught:
        p.decode_plain(zlib.compress(bytes(64))[:-5], p.Encoding.ZLIB, 64, "image")
    assert caught.value.code is p.ErrorCode.INVALID_FIELD


def test_the_shared_memory_fields_round_trip_and_stay_off_the_wire_unless_used() -> None:
    offer = p.SharedMemoryOffer(folder="/dev/shm/img2img-bridge-1000", probe="probe-12-0123456789abcdef", token="ab" * 16)
    welcome = replace(SAMPLES["welcome"], shm=offer)  # type: ignore[type-var]
    assert p.decode_server_message(p.encode(welcome)) == welcome
    hello = p.Hello(client="gimp", shm=True)
    assert p.decode_client_message(p.encode(hello)) == hello
    moved = p.Image(2, 2, b"", segment="c-12-0123456789abcdef", offset=16)
    request = replace(SAMPLES["generate"], image=moved, mask=None, shm=True)  # type: ignore[type-var]
    assert p.decode_client_message(p.encode(request)) == request
    # a peer that does not use the hand-off sends exactly what it sent before it existed
    for plain in (p.Hello(client="gimp"), SAMPLES["generate"], SAMPLES["welcome"]):
        wire = msgpack.unpackb(p.encode(plain), raw=False)
        assert not {"shm", "segment", "offset"} & (set(wire) | set(wire.get("image", {})))


def test_raw_frames_take_large_pixels_out_of_the_message_and_put_them_back() -> None:
    big, small = bytes(range(256)) * 512, bytes(64)  # 128 KiB and 64 bytes
    job = p.Generate(job_id="j", image=p.Image(256, 128, big), mask=p.Mask(8, 8, small), prompt="x")
    head, frames = p.split_frames(job)
    # only what is large enough leaves msgpack; the rest stays in the message, in field order
    assert head.image.frame == len(big) and head.image.data == b"" and head.mask == job.mask and frames == [big]
    received = p.decode_client_message(p.encode(head))
    assert p.frames_following(received) == 1 and len(p.encode(head)) < 1024
    assert p.join_frames(received, [big]) == job
    # a message with nothing large is sent whole, and the field stays off the wire
    little = replace(job, image=p.Image(8, 8, bytes(256)))
    assert p.split_frames(little) == (little, [])
    assert "frame" not in p.Image(8, 8, bytes(256)).to_wire()
    assert (
        "raw_frames" not in p.Hello(client="c").to_wire() and p.Hello.from_wire(p.Hello(client="c", raw_frames=True).to_wire()).raw_frames
    )


@pytest.mark.parametrize(
    ("image", "frame", "code"),
    [
        ({"frame": 8}, bytes(7), p.ErrorCode.SIZE_MISMATCH),
        ({"frame": 8}, "eight ch", p.ErrorCode.BAD_MESSAGE),
        ({"frame": 8, "data": b"x"}, bytes(8), p.ErrorCode.INVALID_FIELD),
        ({"frame": -1}, None, p.ErrorCode.INVALID_FIELD),
    ],
)
def test_a_raw_frame_that_does_not_fit_its_message_is_refused(image: dict[str, Any], frame: Any, code: p.ErrorCode) -> None:
    wire = {"type": "generate", "job_id": "j", "prompt": "x", "image": {"width": 2, "height": 1, "data": b"", **image}}
    message = p.decode_client_message(msgpack.packb(wire, use_bin_type=True))
    frames = [frame] if frame is not None else []
    assert p.frames_following(message) == len(frames)
    with pytest.raises(p.ProtocolError) as caught:
        p.join_frames(message, frames)
    assert caught.value.code is code and caught.value.field is not None and caught.value.field.startswith("image.")


def test_an_unreadable_message_says_how_many_raw_frames_follow_it() -> None:
    wire = {"type": "generate", "job_id": "j", "image": {"width": 2, "height": 1, "data": b"", "frame": 8}, "mask": {"frame": 2}}
    with pytest.raises(p.ProtocolError) as caught:
        p.decode_client_message(msgpack.packb(wire, use_bin_type=True))  # no prompt
    assert caught.value.field == "prompt" and caught.value.frames == 2
    with pytest.raises(p.ProtocolError) as caught:
        p.decode_client_message(msgpack.packb({"type": "generate", "timings": {"frame": 3}}, use_bin_type=True))
    assert caught.value.frames == 0  # only images and masks carry frames
