"""The built-in tiny model: random weights with a fixed seed, built in code, tokenizer included.

It exists for tests and offline smoke runs: its output is noise. It is saved
once as an ordinary diffusers folder and then loaded through the same
``from_pretrained`` path as a real model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

TINY_MODEL_NAME = "tiny"
TINY_RESOLUTION = 128
_FORMAT_VERSION = 3  # bump when the architecture below changes, so caches are rebuilt


def cache_root() -> Path:
    base = os.environ.get("IMG2IMG_BRIDGE_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    if os.environ.get("IMG2IMG_BRIDGE_CACHE"):
        return Path(base)
    return Path(base) / "img2img-bridge"


def tiny_model_dir(inpaint: bool = False) -> Path:
    name = f"tiny-{'inpaint-' if inpaint else ''}v{_FORMAT_VERSION}"
    return cache_root() / "models" / name


def ensure_tiny_model(inpaint: bool = False) -> Path:
    """Build the tiny model's diffusers folder unless it is already cached; return its path."""
    return cached_folder(tiny_model_dir(inpaint), lambda staging: save_tiny_model(staging, inpaint=inpaint))


def cached_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, built by ``build`` into a staging folder and renamed into place unless a model_index.json is there."""
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, as CLIP's tokenizer expects."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _tokenizer_files() -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE vocabulary with no merges: every character is a token."""
    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, []


def save_tiny_model(path: Path, *, inpaint: bool = False) -> None:
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab, merges = _tokenizer_files()
    tmp = path / "_tokenizer_src"
    tmp.mkdir(parents=True)
    (tmp / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(tmp / "vocab.json"), merges=str(tmp / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=9 if inpaint else 4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)  # type: ignore[attr-defined]
    shutil.rmtree(tmp)
    # a tiny autoencoder beside it, found the way a real model's TAESD folder is found
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    taesd.save_pretrained(path / "taesd")  # type: ignore[attr-defined]
    (path / "img2img_bridge.json").write_text(
        json.dumps({"test_model": True, "kind": "sd-turbo", "resolution": TINY_RESOLUTION}), encoding="utf-8"
    )
