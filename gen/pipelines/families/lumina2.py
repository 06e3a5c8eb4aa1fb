"""Lumina 2: one transformer call per branch (conditional first); its time runs from 0 to 1 and it predicts
the negated velocity (both in the backbone spec). Guidance stops after `cfg_trunc_ratio` of the steps, and
`cfg_normalization` rescales the guided output to the conditional output's norm."""

from gen.core.denoiser import Unguided, renormalised_combine
from gen.core.hooks import SamplingHook
from gen.pipelines.stock_loop import Family, vae_decoder


class GuidanceWindow(SamplingHook):
    """Classifier-free guidance only while (step + 1) / steps <= ratio; the conditional branch alone after."""

    def __init__(self, ratio: float):
        self.ratio = ratio

    def denoiser(self, step, current):
        return Unguided(current) if (step.index + 1) / step.num_steps > self.ratio else current


FAMILY = Family(
    separate_branches=True,
    decode=lambda pipe, a: vae_decoder(pipe, lambda z: z / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor),
    guidance_rule=lambda pipe, a: renormalised_combine if a["cfg_normalization"] else None,
    hooks=lambda pipe, a: [GuidanceWindow(a["cfg_trunc_ratio"])],
)
