"""Qwen-Image: a transformer over packed latents of a causal video VAE (one frame). `true_cfg_scale` with a
negative prompt adds a second call per sample (conditional first), and the guided output is rescaled to the
conditional output's norm; the VAE takes a latent mean and std."""

import torch

from gen.core.denoiser import renormalised_combine
from gen.pipelines.stock_loop import Family, pixel_images


def _decode(pipe, a):
    height = a["height"] or pipe.default_sample_size * pipe.vae_scale_factor
    width = a["width"] or pipe.default_sample_size * pipe.vae_scale_factor
    vae = pipe.vae

    def decode(latents):
        z = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor).to(vae.dtype)
        mean, std = (torch.tensor(v).view(1, vae.config.z_dim, 1, 1, 1).to(z.device, z.dtype) for v in (vae.config.latents_mean, vae.config.latents_std))
        return pixel_images(vae.decode(z * std + mean, return_dict=False)[0][:, :, 0].float())

    return decode


FAMILY = Family(
    separate_branches=True,
    guidance=lambda pipe, a: (a["true_cfg_scale"], 0.0),
    guidance_rule=lambda pipe, a: renormalised_combine,
    decode=_decode,
)
