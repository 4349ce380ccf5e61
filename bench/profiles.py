"""What each benchmark profile runs: models, job settings, sizes and repetitions."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class JobSettings:
    """One img2img request, the same for the raw pipeline, the engine and the round trip."""

    side: int
    steps: int
    strength: float
    guidance: float
    seed: int = 1
    prompt: str = "a red fox in the snow, oil painting"
    preview_every: int = 0
    preview_max: int = 256
    live: bool = False

    @property
    def denoising_steps(self) -> int:
        return max(1, min(int(self.steps * self.strength), self.steps))

    def with_previews(self, every: int = 1) -> JobSettings:
        return replace(self, preview_every=every)


@dataclass(frozen=True)
class ModelCase:
    """A model to compare on: ``job`` a whole job, ``live`` a live-painting frame (either may be left out).

    The case that has a ``live`` frame also runs the profile's memory checks:
    ``vram_frames`` live frames through the websocket, and a job that runs out of memory.
    """

    name: str  # "tiny", or an architecture from bench/architectures.py
    job: JobSettings | None
    live: JobSettings | None


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    models: tuple[ModelCase, ...]
    job_rounds: int
    transport_sides: tuple[int, ...]
    transport_rounds: int
    # variants over the vendored pure-Python client: "client patches|server patches"
    transport_variants: tuple[str, ...]
    native_variants: tuple[str, ...]
    bare_stack: bool
    memory_variants: tuple[str, ...]
    encoding_sides: tuple[int, ...] = (256, 512, 2048)
    live_rounds: int = 15
    vram_frames: int = 20
    variation_rounds: int = 5

    def quick(self) -> Profile:
        """The CI smoke run: every kind of measurement once or twice, on 512² and 4096² layers only."""
        return replace(
            self,
            name=self.name + "-quick",
            job_rounds=2,
            live_rounds=2,
            vram_frames=3,
            variation_rounds=1,
            transport_sides=(512, 4096),
            transport_rounds=1,
            transport_variants=(SHIPPED, SOCKET),
            native_variants=(SHIPPED,),
            bare_stack=False,
            memory_variants=(SHIPPED, SOCKET),
            encoding_sides=(512,),
        )


SHIPPED = "shipped|shipped"
#: the lower bound of what masking costs: not RFC 6455 (see client_patches)
ZERO_MASK = "socket+zero-mask|shipped"
#: the pixels through the websocket, as to a remote bridge (the shipped client on the same machine hands them over in shared memory)
SOCKET = "socket|shipped"
#: the websocket with the pixels inside msgpack, as before raw frames (see client_patches)
SOCKET_MSGPACK = "socket+msgpack-pixels|shipped"
#: the websocket read with websockets' own stream reader, as before ``client.LargeFrameReader`` (see client_patches)
SOCKET_STOCK_READER = "socket+stock-reader|shipped"
#: progress events on every step, as before they were throttled (see server_patches)
EVERY_PROGRESS = "shipped|progress-every-step"

CPU = Profile(
    name="cpu",
    device="cpu",
    models=(
        ModelCase(
            name="tiny",
            job=JobSettings(side=128, steps=20, strength=0.75, guidance=7.0),
            live=JobSettings(side=512, steps=8, strength=0.5, guidance=7.0, preview_every=1, live=True),
        ),
    ),
    job_rounds=15,
    transport_sides=(512, 2048, 4096),
    transport_rounds=7,
    transport_variants=(SHIPPED, SOCKET, SOCKET_STOCK_READER, SOCKET_MSGPACK, ZERO_MASK),
    native_variants=(SHIPPED, SOCKET, SOCKET_MSGPACK),
    bare_stack=True,
    memory_variants=(SHIPPED, SOCKET, SOCKET_STOCK_READER, SOCKET_MSGPACK),
)

#: the issue's GPU goals: a quality job on SD 1.5 and a one-step live frame on sd-turbo, both 512²
GPU = Profile(
    name="gpu",
    device="cuda",
    models=(
        ModelCase(
            name="sd15",
            job=JobSettings(side=512, steps=30, strength=0.6, guidance=7.5),
            live=None,
        ),
        ModelCase(
            name="sd-turbo",
            job=None,
            # sd-turbo's model card for img2img: 2 steps x strength 0.5 = one denoising step, guidance off
            live=JobSettings(side=512, steps=2, strength=0.5, guidance=0.0, live=True),
        ),
    ),
    job_rounds=7,
    live_rounds=30,
    vram_frames=1000,
    # the transport is CPU work, measured in full by the CPU profile: here only a check on this machine
    transport_sides=(512, 4096),
    transport_rounds=3,
    transport_variants=(SHIPPED, SOCKET),
    native_variants=(SHIPPED,),
    bare_stack=False,
    memory_variants=(SHIPPED, SOCKET),
)

PROFILES = {"cpu": CPU, "gpu": GPU}
