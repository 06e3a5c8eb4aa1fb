"""Stable Diffusion 1.x/2.x: a UNet over [uncond; cond] in one call (LCM UNets take the scale as an embedding
instead, unguided), guidance rescale, IP-Adapter embeddings in `added_cond_kwargs`."""

from gen.pipelines.stock_loop import Family

FAMILY = Family(
    backbone="unet",
    guidance=lambda pipe, a: (pipe.guidance_scale, pipe.guidance_rescale),
    negative_tensors={"negative_prompt_embeds": ("encoder_hidden_states",)},
    legacy_callback="kwargs",
)
