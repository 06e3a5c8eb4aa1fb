"""Flux (dev and schnell): a transformer over packed (batch, tokens, channels) latents. Guidance-distilled
models take the guidance scale as an embedding (one call per sample); `true_cfg_scale` with a negative prompt
adds a second call per sample, conditional first. Latents are unpacked and shifted for the VAE."""

from gen.pipelines.stock_loop import Family, vae_decoder


def _decode(pipe, a):
    height = a["height"] or pipe.default_sample_size * pipe.vae_scale_factor
    width = a["width"] or pipe.default_sample_size * pipe.vae_scale_factor
    vae = pipe.vae
    return vae_decoder(pipe, lambda z: pipe._unpack_latents(z, height, width, pipe.vae_scale_factor) / vae.config.scaling_factor + vae.config.shift_factor)


FAMILY = Family(
    separate_branches=True,
    guidance=lambda pipe, a: (a["true_cfg_scale"], 0.0),
    decode=_decode,
    callback_tensors={"prompt_embeds": ("encoder_hidden_states",)},
)
