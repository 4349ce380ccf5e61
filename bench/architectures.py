"""Full-size SD 1.5 and sd-turbo architectures with random weights, built offline for the GPU profile.

The dicts hold the keys of the published ``config.json`` files
(runwayml/stable-diffusion-v1-5, stabilityai/sd-turbo) that set the amount of
work; they were written down from those files, not downloaded. Weights are
random (seeded), so outputs are noise; the tokenizer is byte-level like the
tiny model's, with the text encoder's embedding kept at the real 49408 tokens.
Each model is saved as an ordinary diffusers folder (fp16) with a random
TAESD beside it, and then loaded through ``bridge.models.load`` like any model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

_SD_BLOCKS = {
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "in_channels": 4,
    "out_channels": 4,
    "norm_num_groups": 32,
    "norm_eps": 1e-05,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "sample_size": 64,
}

SD15_UNET: dict[str, Any] = {**_SD_BLOCKS, "attention_head_dim": 8, "cross_attention_dim": 768}
SD_TURBO_UNET: dict[str, Any] = {
    **_SD_BLOCKS,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}

SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

# openai/clip-vit-large-patch14's text tower
SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "layer_norm_eps": 1e-05,
}
# OpenCLIP ViT-H/14's text tower as SD 2.x ships it: 23 of its 24 layers
SD_TURBO_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 512,
    "layer_norm_eps": 1e-05,
}

_BETAS: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}
SD15_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    **_BETAS,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "clip_sample": False,
}
SD_TURBO_SCHEDULER: dict[str, Any] = {"_class_name": "EulerDiscreteScheduler", **_BETAS, "timestep_spacing": "trailing"}

ARCHITECTURES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "sd15": (SD15_UNET, SD15_TEXT, SD15_SCHEDULER),
    "sd-turbo": (SD_TURBO_UNET, SD_TURBO_TEXT, SD_TURBO_SCHEDULER),
}
_FORMAT_VERSION = 2  # bump when a config above changes, so cached folders are rebuilt


def model_dir(cache: Path, name: str) -> Path:
    return cache / "bench-models" / f"{name}-random-v{_FORMAT_VERSION}"


def ensure_model(cache: Path, name: str, device: str) -> Path:
    """Build ``name``'s random-weight diffusers folder under ``cache`` unless it is there; return it."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    target = model_dir(cache, name)
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _save(name, staging, device)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _byte_level_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)


def _save(name: str, path: Path, device: str) -> None:
    import diffusers
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_config, text_config, scheduler_config = ARCHITECTURES[name]
    tokenizer = _byte_level_tokenizer(path / "_tokenizer_src")
    torch.manual_seed(0)
    # initialising ~1.2 G parameters is several times faster on the GPU than on the CPU
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(SD_VAE)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **text_config,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id,
            )
        )
        taesd: Any = AutoencoderTiny()
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(dtype=torch.float16)
    pipe.save_pretrained(path)
    taesd.to(dtype=torch.float16).save_pretrained(path / "taesd")
    shutil.rmtree(path / "_tokenizer_src")
