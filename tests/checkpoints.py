"""Write a diffusers Stable Diffusion folder out as one original-layout (LDM / CompVis) checkpoint.

The inverse of diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint`` and ``convert_open_clip_checkpoint`` (diffusers/loaders/single_file_utils.py),
so that tests can load a single-file checkpoint the way users' downloads are loaded. It covers the SD 1.x
layout (CLIP text encoder), SD 2.x (OpenCLIP text encoder) and SDXL (both, under ``conditioner.embedders``):
``DownBlock2D`` / ``CrossAttnDownBlock2D`` UNets with a cross-attention mid block, and KL autoencoders.

``shrunk_configs`` writes small copies of the shipped configurations (bridge/configs): the same
architecture keys with small widths, so CI can build, save and load checkpoints of every family.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = {
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
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


def _plain_text_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in state.items()}


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model in OpenCLIP's layout: fused q/k/v, ``resblocks``, a transposed projection."""
    fixed = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    renames = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    state = _plain_text_keys(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", key):
            layer, param = m[1], m[2]
            parts = [state[f"text_model.encoder.layers.{layer}.self_attn.{x}_proj.{param}"] for x in "qkv"]
            out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat(parts)
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            if re.match(r"self_attn\.[kv]_proj", m[2]):
                continue
            rest = m[2]
            for old, new in renames.items():
                rest = rest.replace(old, new)
            out[f"{prefix}transformer.resblocks.{m[1]}.{rest}"] = value
        elif not key.endswith("position_ids"):
            raise KeyError(f"no OpenCLIP name for {key}")
    return out


def _config(folder: Path) -> dict[str, object]:
    return dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))


def diffusers_to_ldm(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of the diffusers folder's UNet, VAE and text encoder(s) in the original layout of its family."""
    unet = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    vae = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    text = load_file(str(folder / "text_encoder" / "model.safetensors"))
    out = {**unet_to_ldm(unet, _config(folder / "unet")), **vae_to_ldm(vae, _config(folder / "vae"))}
    if (folder / "text_encoder_2").is_dir():  # SDXL: CLIP ViT-L and OpenCLIP ViT-bigG under conditioner.embedders
        text_2 = load_file(str(folder / "text_encoder_2" / "model.safetensors"))
        out.update({"conditioner.embedders.0.transformer." + k: v for k, v in _plain_text_keys(text).items()})
        out.update(open_clip_to_ldm(text_2, "conditioner.embedders.1.model."))
    elif _config(folder / "text_encoder").get("hidden_act") == "gelu":  # SD 2.x: OpenCLIP ViT-H
        out.update(open_clip_to_ldm(text, "cond_stage_model.model."))
    else:
        out.update(text_encoder_to_ldm(text))
    return out


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


def _shrink_unet(config: dict[str, object]) -> dict[str, object]:
    xl = "addition_embed_type" in config
    small: dict[str, object] = {
        **config,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "attention_head_dim": [2, 4] if isinstance(config["attention_head_dim"], list) else 4,
    }
    if xl:
        small.update(
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            transformer_layers_per_block=[1, 2],
            cross_attention_dim=32 + 48,  # the two text encoders' widths, told apart by diffusers as in the real ones
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,
        )
    else:
        small.update(
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
            cross_attention_dim=32,
        )
    return small


def shrunk_configs(shipped: Path, target: Path) -> Path:
    """Small copies of the shipped config folders: same keys and layout, small widths; returns ``target``."""
    for family in sorted(path for path in shipped.iterdir() if path.is_dir()):
        shutil.copytree(family, target / family.name)
        for path in (target / family.name).rglob("config.json"):
            config = json.loads(path.read_text(encoding="utf-8"))
            component = path.parent.name
            if component == "unet":
                config = _shrink_unet(config)
            elif component == "vae":
                config.update(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8)
            elif component.startswith("text_encoder"):
                width = 48 if component == "text_encoder_2" else 32
                config.update(hidden_size=width, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
            path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return target


def write_family_checkpoint(config: Path, checkpoint: Path, scratch: Path, *, inpaint: bool = False, seed: int = 0) -> None:
    """Random weights in the architecture of the diffusers config folder ``config`` (a shrunk shipped one), saved as
    the single-file ``checkpoint`` in its family's original layout; ``scratch`` holds the intermediate diffusers folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    folder = scratch / checkpoint.stem
    unet_config = _config(config / "unet")
    if inpaint:
        unet_config["in_channels"] = 9
    UNet2DConditionModel.from_config(unet_config).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(_config(config / "vae")).save_pretrained(folder / "vae")
    for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        if (config / name).is_dir():
            settings: dict[str, Any] = _config(config / name)
            settings.pop("architectures", None)
            cls(CLIPTextConfig(**settings)).save_pretrained(folder / name)
    save_file({k: v.contiguous() for k, v in diffusers_to_ldm(folder).items()}, str(checkpoint))
