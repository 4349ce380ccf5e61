"""What differs between model families (SD 1.x/2.x and SDXL): prompt encoding, extra conditioning, previews, VAE.

One small object per family; the engine asks it, and never branches on the family itself.
"""

from __future__ import annotations

from typing import Any


class Family:
    """SD 1.x / 2.x: one text encoder, no extra conditioning."""

    name = "sd"
    taesd_repo = "madebyollin/taesd"
    # latent → RGB projection of the predicted clean image (rows: latent channels), for approximate previews
    latent_rgb: tuple[list[list[float]], list[float]] = (
        [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
        [0.0, 0.0, 0.0],
    )

    def upcast_vae(self, pipe: Any, half: bool) -> bool:
        """Whether the VAE must run in float32; SD 1.x/2.x VAEs run in float16 whatever force_upcast says."""
        return False

    def encode_prompt(self, pipe: Any, prompt: str, negative: str, device: Any, do_cfg: bool) -> tuple[Any, ...]:
        """The text conditioning, negative first when ``do_cfg`` (the UNet sees [uncond, cond])."""
        import torch

        pos, neg = pipe.encode_prompt(prompt, device, 1, do_cfg, negative_prompt=negative or None)
        return (torch.cat([neg, pos]) if do_cfg else pos,)

    def added_conditions(
        self, pipe: Any, embeds: tuple[Any, ...], height: int, width: int, do_cfg: bool, dtype: Any
    ) -> dict[str, Any] | None:
        return None


class XLFamily(Family):
    """SDXL: two text encoders, pooled text embeddings and size/crop time ids."""

    name = "sdxl"
    taesd_repo = "madebyollin/taesdxl"
    latent_rgb = (
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
        [0.1084, -0.0175, -0.0011],
    )

    def upcast_vae(self, pipe: Any, half: bool) -> bool:
        # SDXL's VAE overflows in float16 unless its config says otherwise (diffusers' SDXL pipelines do the same)
        return half and bool(getattr(pipe.vae.config, "force_upcast", False))

    def encode_prompt(self, pipe: Any, prompt: str, negative: str, device: Any, do_cfg: bool) -> tuple[Any, ...]:
        import torch

        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg, negative_prompt=negative or None
        )
        if do_cfg:
            return torch.cat([neg, pos]), torch.cat([neg_pooled, pooled])
        return pos, pooled

    def added_conditions(
        self, pipe: Any, embeds: tuple[Any, ...], height: int, width: int, do_cfg: bool, dtype: Any
    ) -> dict[str, Any] | None:
        import torch

        if getattr(pipe.config, "requires_aesthetics_score", False):
            pos_ids, neg_ids = [height, width, 0, 0, 6.0], [height, width, 0, 0, 2.5]
        else:
            pos_ids = neg_ids = [height, width, 0, 0, height, width]
        ids = [neg_ids, pos_ids] if do_cfg else [pos_ids]
        time_ids = torch.tensor(ids, device=embeds[0].device, dtype=dtype)
        return {"text_embeds": embeds[1], "time_ids": time_ids}


FAMILIES: dict[str, Family] = {"sd": Family(), "sdxl": XLFamily()}


def family_of(pipe: Any) -> Family:
    return FAMILIES["sdxl" if "XL" in type(pipe).__name__ else "sd"]
