"""Z-Image: a single-stream transformer called on a list of per-sample latents and captions, [prompt; negative]
stacked (conditional first); it predicts the negated velocity. Guidance is cond + s * (cond - uncond), on from
s > 0, optionally clamped to `cfg_normalization` times the conditional output's norm (per sample), and off
once the normalised time passes `cfg_truncation`."""

import torch

from gen.core.denoiser import Unguided
from gen.core.hooks import SamplingHook
from gen.pipelines.stock_loop import Family, vae_decoder


class ZImageGuidance:
    guides_above = 0.0  # ZImagePipeline guides at any scale > 0

    def __init__(self, normalization):
        self.normalization = float(normalization) if normalization else 0.0

    def __call__(self, uncond, cond, scale, rescale):
        guided = cond + scale * (cond - uncond)
        if self.normalization <= 0:
            return guided
        rows = []
        for positive, row in zip(cond, guided):
            limit = torch.linalg.vector_norm(positive) * self.normalization
            norm = torch.linalg.vector_norm(row)
            rows.append(row * (limit / norm) if norm > limit else row)
        return torch.stack(rows)


class Truncation(SamplingHook):
    """No guidance once (1000 - t) / 1000 exceeds the truncation point."""

    def __init__(self, truncation: float):
        self.truncation = truncation

    def denoiser(self, step, current):
        late = float((1000 - torch.as_tensor(step.timestep).float()) / 1000) > self.truncation  # compared as stock: a Python float
        return Unguided(current) if late else current


FAMILY = Family(
    guidance=lambda pipe, a: (pipe.guidance_scale, 0.0),
    guidance_rule=lambda pipe, a: ZImageGuidance(a["cfg_normalization"]),
    hooks=lambda pipe, a: [Truncation(float(a["cfg_truncation"]))] if a["cfg_truncation"] is not None and float(a["cfg_truncation"]) <= 1 else [],
    decode=lambda pipe, a: vae_decoder(pipe, lambda z: z / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor),
    callback_tensors={"prompt_embeds": ("cap_feats",)},
    stacked_callback_tensors=False,  # the stock loop holds the prompt's captions apart from the negative ones
)
