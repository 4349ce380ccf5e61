"""Single-file checkpoints (ComfyUI / A1111 ``.safetensors``): what they are, and their configs without network.

A checkpoint holds weights only. The architecture is read from its tensor
names and shapes (the safetensors header: no weights are read), and the
configuration diffusers needs is assembled from the small files shipped in
``bridge/configs`` plus a CLIP tokenizer built from the BPE vocabulary that
the ``open_clip_torch`` package ships, so nothing is fetched from the Hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from .recipes import Traits
from .tiny_model import cache_root, cached_folder

CONFIGS = Path(__file__).parent / "configs"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_FIX = "pip install --no-deps open_clip_torch"
_MAX_HEADER = 100 * 1024 * 1024  # a real checkpoint's header is a few hundred kB
_FORMAT_VERSION = 1  # bump when the assembled folders change, so caches are rebuilt

_IN_CONV = "model.diffusion_model.input_blocks.0.0.weight"
_SDXL_PREFIX = "conditioner.embedders.1.model."
_OPEN_CLIP_PREFIX = "cond_stage_model.model."


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``message`` names the file and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Architecture:
    """Which shipped configuration fits a checkpoint, and how it is varied."""

    base: str  # folder under bridge/configs: sd15, sd2 or sdxl
    inpaint: bool
    v_prediction: bool

    @property
    def name(self) -> str:
        return self.base + ("-inpaint" if self.inpaint else "") + ("-v" if self.v_prediction else "")


def read_header(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape, from a ``.safetensors`` header (bounded; no weights are read)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path.name}: not a safetensors file (it is {len(raw)} bytes long)")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                raise CheckpointError(f"{path.name}: not a safetensors file (its header claims {length} bytes)")
            header = fh.read(length)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise CheckpointError(f"{path.name}: cannot be read ({exc.strerror or exc})") from exc
    try:
        table = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name}: not a safetensors file (its header is not JSON)") from exc
    if len(header) != length or not isinstance(table, dict):
        raise CheckpointError(f"{path.name}: not a safetensors file (the header is cut short)")
    shapes: dict[str, list[int]] = {}
    end = 0
    for name, entry in table.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        shapes[name] = list(entry.get("shape", []))
        offsets = entry.get("data_offsets", [0, 0])
        end = max(end, int(offsets[1]) if isinstance(offsets, list) and len(offsets) == 2 else 0)
    if 8 + length + end > size:
        raise CheckpointError(f"{path.name}: the file is truncated ({size} bytes, its header needs {8 + length + end}); download it again")
    return shapes


def traits_of(path: Path, shapes: dict[str, list[int]]) -> Traits:
    """What a checkpoint is, from its tensor names and shapes."""
    if _IN_CONV not in shapes:
        raise CheckpointError(
            f"{path.name}: no Stable Diffusion UNet in it (no {_IN_CONV}); "
            "the bridge runs SD 1.x, SD 2.x and SDXL checkpoints, not LoRAs, VAEs or other architectures"
        )
    xl = any(name.startswith(_SDXL_PREFIX) for name in shapes)
    cross = next(
        (shape[-1] for name, shape in shapes.items() if name.startswith("model.diffusion_model.") and name.endswith("attn2.to_k.weight")),
        768,
    )
    if not xl and any(name.startswith(_OPEN_CLIP_PREFIX) for name in shapes):
        cross = 1024  # an OpenCLIP ViT-H text encoder makes it SD 2.x: its width is 1024 in every published checkpoint
    in_channels = shapes[_IN_CONV][1] if len(shapes[_IN_CONV]) > 1 else 4
    family = "sdxl" if xl else "sd"
    # weights cannot tell SD 2.x's 768 v-prediction models from its 512 epsilon ones: take 2.1-768 as diffusers does
    v = not xl and cross == 1024 and in_channels == 4
    return Traits(
        name=path.name,
        family=family,
        in_channels=in_channels,
        sample_size=128 if xl else (96 if v else 64),
        cross_attention_dim=cross,
        prediction_type="v_prediction" if v else "epsilon",
    )


def architecture(traits: Traits) -> Architecture:
    if traits.family == "sdxl":
        base = "sdxl"
    elif traits.cross_attention_dim == 1024:
        base = "sd2"
    else:
        base = "sd15"
    return Architecture(base=base, inpaint=traits.inpaint, v_prediction=traits.prediction_type == "v_prediction")


def config_folder(arch: Architecture) -> Path:
    """A diffusers config folder (configs and tokenizers, no weights) for ``arch``, assembled once in the cache."""
    merges = _clip_merges() if not (_assembled(arch) / "model_index.json").exists() else []
    return cached_folder(_assembled(arch), lambda staging: _assemble(arch, staging, merges))


def _assembled(arch: Architecture) -> Path:
    return cache_root() / "configs" / f"{arch.name}-v{_FORMAT_VERSION}"


def _assemble(arch: Architecture, staging: Path, merges: list[tuple[str, str]]) -> None:
    shutil.copytree(CONFIGS / arch.base, staging, dirs_exist_ok=True)
    unet = staging / "unet" / "config.json"
    config = json.loads(unet.read_text(encoding="utf-8"))
    if arch.inpaint:
        config["in_channels"] = 9
    if arch.v_prediction:
        config["sample_size"] = 96
        config["upcast_attention"] = True
        _patch(staging / "scheduler" / "scheduler_config.json", prediction_type="v_prediction")
        _patch(staging / "vae" / "config.json", sample_size=768)
    unet.write_text(json.dumps(config, indent=2), encoding="utf-8")
    vocab = _vocab(merges)
    for tokenizer in staging.glob("tokenizer*"):
        (tokenizer / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (tokenizer / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")


def _patch(path: Path, **values: object) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(values)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def vocabulary_file() -> Path | None:
    """The CLIP BPE vocabulary shipped by open_clip_torch, found without importing it (it would import torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / VOCAB_FILE
        if candidate.is_file():
            return candidate
    return None


def _clip_merges() -> list[tuple[str, str]]:
    source = vocabulary_file()
    if source is None:
        raise CheckpointError(f"single-file checkpoints need the CLIP tokenizer vocabulary, which is missing: run '{VOCAB_FIX}'")
    lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    # as OpenAI's CLIP tokenizer reads it: 49152 - 256 - 2 merges after the header line
    return [(a, b) for a, b in (line.split() for line in lines[1 : 49152 - 256 - 2 + 1])]


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}
