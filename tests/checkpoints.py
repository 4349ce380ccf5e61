"""Write a diffusers Stable Diffusion folder out as one original-layout (LDM / CompVis) checkpoint.

The inverse of diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint`` and
``convert_ldm_clip_checkpoint`` (diffusers/loaders/single_file_utils.py), so that tests can load a
single-file checkpoint the way users' downloads are loaded. It covers what the SD 1.x layout holds:
``DownBlock2D`` / ``CrossAttnDownBlock2D`` UNets with a cross-attention mid block, and KL autoencoders.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_FIXED = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _split(key: str, names: dict[str, str]) -> str:
    """Rename the leading module of ``key`` (e.g. ``conv1.weight``) through ``names``."""
    module, _, param = key.rpartition(".")
    if module not in names:
        raise KeyError(f"no LDM name for {key}")
    return f"{names[module]}.{param}"


def unet_key(key: str, layers_per_block: int, attention_up_blocks: set[int]) -> str:
    """The LDM name of one diffusers UNet weight."""
    module, _, param = key.rpartition(".")
    if module in _UNET_FIXED:
        return f"{_UNET_FIXED[module]}.{param}"
    per_block = layers_per_block + 1
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * per_block + layer
        return f"input_blocks.{index}.0.{_split(rest, _UNET_RESNET)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"input_blocks.{1 + int(m[1]) * per_block + layers_per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_split(m[2], _UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per_block + layer
        return f"output_blocks.{index}.0.{_split(rest, _UNET_RESNET)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        block = int(m[1])
        # the upsampler follows the last resnet, and its attention when the block has one
        slot = 2 if block in attention_up_blocks else 1
        return f"output_blocks.{block * per_block + layers_per_block}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet weight {key}")


def vae_key(key: str, num_blocks: int) -> str:
    """The LDM name of one diffusers AutoencoderKL weight."""
    module, _, param = key.rpartition(".")
    if module in _VAE_FIXED:
        return f"{_VAE_FIXED[module]}.{param}"
    if re.fullmatch(r"(encoder|decoder)\.conv_(in|out)|(post_)?quant_conv", module):
        return key
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    # the decoder's up blocks are numbered from the bottom in the original layout
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_split(m[2], _VAE_ATTENTION)}"
    raise KeyError(f"no LDM name for VAE weight {key}")


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, object]) -> dict[str, torch.Tensor]:
    layers = int(config["layers_per_block"])  # type: ignore[call-overload]
    up_types = list(config["up_block_types"])  # type: ignore[call-overload]
    with_attention = {i for i, kind in enumerate(up_types) if "CrossAttn" in kind}
    return {UNET_PREFIX + unet_key(k, layers, with_attention): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, object]) -> dict[str, torch.Tensor]:
    blocks = len(config["up_block_types"])  # type: ignore[arg-type]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = vae_key(key, blocks)
        # the original attention projections are 1×1 convolutions
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + name] = value
    return out


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # CLIPTextModel lost its ``text_model.`` level in transformers 5; the original layout keeps it
    return {CLIP_PREFIX + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


def _config(folder: Path) -> dict[str, object]:
    return dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))


def diffusers_to_ldm(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of the diffusers folder's UNet, VAE and text encoder in the original layout."""
    unet = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    vae = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    text = load_file(str(folder / "text_encoder" / "model.safetensors"))
    return {
        **unet_to_ldm(unet, _config(folder / "unet")),
        **vae_to_ldm(vae, _config(folder / "vae")),
        **text_encoder_to_ldm(text),
    }


def copy_configs(folder: Path, target: Path) -> None:
    """Copy the pipeline's configuration files (no weights): what ``from_single_file(config=...)`` reads."""
    target.mkdir(parents=True)
    shutil.copy2(folder / "model_index.json", target / "model_index.json")
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (target / component).mkdir()
        for path in (folder / component).iterdir():
            if path.suffix in (".json", ".txt"):
                shutil.copy2(path, target / component / path.name)


def write_single_file(folder: Path, checkpoint: Path) -> Path:
    """Save ``folder`` as the ``.safetensors`` ``checkpoint`` with its configs beside it, as the bridge expects them."""
    save_file({k: v.contiguous() for k, v in diffusers_to_ldm(folder).items()}, str(checkpoint))
    config = checkpoint.with_suffix("")
    copy_configs(folder, config)
    return config
