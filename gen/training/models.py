"""Backbones the trainer builds from a few visible options (EDM2-style: every knob on the command line).

| backbone | condition        | model                                                        |
|----------|------------------|--------------------------------------------------------------|
| unet     | none             | UNet2DModel                                                  |
| unet     | class            | UNet2DModel, class table of num_classes + 1 rows (last: null) |
| unet     | text             | UNet2DConditionModel, cross-attention on the text encoder's states |
| unet     | embedding        | UNet2DConditionModel, linear projection (encoder_hid_proj) then cross-attention; with |
|          |                  | embedding_in_time also projected into the time embedding (class_embed_type "projection") |
| dit      | class            | DiTTransformer2DModel (its null class is num_classes)        |
| dit      | text / embedding | PixArtTransformer2DModel (caption projection then cross-attention) |
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel, UNet2DModel

from gen.errors import ArgumentError

BACKBONES = ("unet", "dit")
CONDITIONS = ("none", "class", "text", "embedding")


@dataclass
class Architecture:
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 2
    attention_levels: tuple[int, ...] = (1, 2)
    attention_head_dim: int = 8
    cross_attention_dim: int = 64
    dit_layers: int = 4
    dit_heads: int = 4
    dit_head_dim: int = 16
    patch_size: int = 2
    norm_num_groups: int = 0  # 0: the largest count leaving >= 4 channels per group (see _groups)
    embedding_in_time: bool = False
    embedding_tokens: bool = False  # project the embedding to 32 cross-attention tokens (image_proj) instead of one


def _groups(channels: tuple[int, ...]) -> int:
    """The largest GroupNorm group count (up to 32) dividing every level's channels with >= 4 channels per
    group. One channel per group would normalise away each channel's spatial mean before the output
    convolution, so the model could not predict the noise's per-sample mean: samples would take their
    global colour from the initial noise."""
    common = math.gcd(*channels)
    return next(g for g in (32, 16, 8, 4, 2, 1) if common % g == 0 and common // g >= 4 or g == 1)


def build_backbone(
    backbone: str,
    condition: str,
    *,
    sample_size: int,
    channels: int,
    arch: Architecture,
    num_classes: int | None = None,
    condition_width: int | None = None,
    learn_sigma: bool = False,
):
    """A freshly initialised backbone; see the module docstring for which class each pair gives."""
    if backbone not in BACKBONES:
        raise ArgumentError(f"backbone: one of {BACKBONES}, got {backbone!r}.")
    if condition not in CONDITIONS:
        raise ArgumentError(f"condition: one of {CONDITIONS}, got {condition!r}.")
    if condition == "class" and not num_classes:
        raise ArgumentError("condition: 'class' needs labels; the data gave none (add a 'label' to metadata.jsonl).")
    if condition in ("text", "embedding") and not condition_width:
        raise ArgumentError(f"condition: {condition!r} needs an encoder width; none was found.")
    out_channels = channels * 2 if learn_sigma else channels
    if backbone == "dit":
        if condition == "none":
            raise ArgumentError("backbone: DiT needs a condition; use --backbone unet for unconditional models.")
        if condition == "class":
            return DiTTransformer2DModel(
                num_attention_heads=arch.dit_heads,
                attention_head_dim=arch.dit_head_dim,
                in_channels=channels,
                out_channels=out_channels,
                num_layers=arch.dit_layers,
                sample_size=sample_size,
                patch_size=arch.patch_size,
                num_embeds_ada_norm=num_classes,
            )
        return PixArtTransformer2DModel(
            num_attention_heads=arch.dit_heads,
            attention_head_dim=arch.dit_head_dim,
            in_channels=channels,
            out_channels=out_channels,
            num_layers=arch.dit_layers,
            sample_size=sample_size,
            patch_size=arch.patch_size,
            caption_channels=condition_width,
            cross_attention_dim=arch.dit_heads * arch.dit_head_dim,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
            num_embeds_ada_norm=1000,
            activation_fn="gelu-approximate",
            attention_bias=True,
        )
    levels = len(arch.block_out_channels)
    attend = set(arch.attention_levels)
    bad = [a for a in attend if not 0 <= a < levels]
    if bad:
        raise ArgumentError(f"attention_levels: {bad} outside 0..{levels - 1} for {levels} levels.")
    common = dict(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=out_channels,
        block_out_channels=tuple(arch.block_out_channels),
        layers_per_block=arch.layers_per_block,
        norm_num_groups=arch.norm_num_groups or _groups(tuple(arch.block_out_channels)),
        attention_head_dim=arch.attention_head_dim,
    )
    if condition in ("none", "class"):
        down = tuple("AttnDownBlock2D" if i in attend else "DownBlock2D" for i in range(levels))
        up = tuple("AttnUpBlock2D" if levels - 1 - i in attend else "UpBlock2D" for i in range(levels))
        return UNet2DModel(down_block_types=down, up_block_types=up, num_class_embeds=num_classes + 1 if condition == "class" else None, **common)
    down = tuple("CrossAttnDownBlock2D" if i in attend else "DownBlock2D" for i in range(levels))
    up = tuple("CrossAttnUpBlock2D" if levels - 1 - i in attend else "UpBlock2D" for i in range(levels))
    extra = {}
    if condition == "embedding":
        extra = dict(
            encoder_hid_dim=condition_width,
            encoder_hid_dim_type="image_proj" if arch.embedding_tokens else "text_proj",
            cross_attention_dim=arch.cross_attention_dim,
        )
        if arch.embedding_in_time:
            extra.update(class_embed_type="projection", projection_class_embeddings_input_dim=condition_width)
    else:
        extra = dict(cross_attention_dim=condition_width)
    common["attention_head_dim"] = arch.attention_head_dim
    return UNet2DConditionModel(down_block_types=down, up_block_types=up, **extra, **common)
