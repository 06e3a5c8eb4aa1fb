"""Stable Diffusion XL: text-to-image, img2img and the refiner (`strength`, `denoising_start`/`_end`), LCM-style
UNets, IP-Adapters. One UNet call over [uncond; cond]; pooled text embeddings and size/crop time ids ride in
`added_cond_kwargs`; the VAE may carry a latent mean/std and need float32 to decode (`force_upcast`)."""

import torch

from gen.pipelines.stock_loop import Family, vae_decoder


def _decode(pipe, a):
    vae = pipe.vae
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")

    def to_vae_latents(latents):
        if mean is None or std is None:
            return latents / vae.config.scaling_factor
        m, s = (torch.tensor(v).view(1, -1, 1, 1).to(latents.device, latents.dtype) for v in (mean, std))
        return latents * s / vae.config.scaling_factor + m

    decode = vae_decoder(pipe, to_vae_latents)

    def upcast_decode(latents):
        if not (vae.dtype == torch.float16 and vae.config.force_upcast):
            return decode(latents)
        vae.to(dtype=torch.float32)  # as stock: the fp16 SDXL VAE overflows
        try:
            return decode(latents)
        finally:
            vae.to(dtype=torch.float16)

    return upcast_decode


FAMILY = Family(
    backbone="unet",
    guidance=lambda pipe, a: (pipe.guidance_scale, pipe.guidance_rescale),
    decode=_decode,
    callback_tensors={
        "prompt_embeds": ("encoder_hidden_states",),
        "add_text_embeds": ("added_cond_kwargs", "text_embeds"),
        "add_time_ids": ("added_cond_kwargs", "time_ids"),
    },
    negative_tensors={
        "negative_prompt_embeds": ("encoder_hidden_states",),
        "negative_pooled_prompt_embeds": ("added_cond_kwargs", "text_embeds"),
        "negative_add_time_ids": ("added_cond_kwargs", "time_ids"),
    },
    legacy_callback="kwargs",
)
