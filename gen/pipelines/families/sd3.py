"""Stable Diffusion 3: an MMDiT over [uncond; cond] in one call, flow matching, pooled text projections; VAE
latents shifted. Skip-layer guidance adds, inside its step window, scale * (cond - cond with the layers
skipped): one more conditional call per sample, as the stock loop makes it."""

from gen.core.denoiser import Denoiser, DenoiserOutput, guidance_combine
from gen.core.hooks import SamplingHook
from gen.pipelines.stock_loop import Family, vae_decoder


class SkipLayerGuidance(SamplingHook):
    def __init__(self, layers, scale: float, start: float, stop: float):
        self.layers, self.scale, self.start, self.stop = list(layers), scale, start, stop

    def denoiser(self, step, current):
        inside = step.index > step.num_steps * self.start and step.index < step.num_steps * self.stop
        return _SkipLayerDenoiser(current, self) if inside else current


class _SkipLayerDenoiser(Denoiser):
    def __init__(self, inner: Denoiser, guidance: SkipLayerGuidance):
        self.__dict__.update(inner.__dict__)
        self._inner, self._guidance = inner, guidance

    def __call__(self, x, t, cond=None, uncond=None, guidance_scale=1.0, guidance_rescale=0.0):
        if uncond is None or guidance_scale <= 1:
            return self._inner(x, t, cond=cond)
        eps_uncond, eps_cond, _ = self._inner.branches(x, t, cond, uncond)
        guided = guidance_combine(eps_uncond, eps_cond, guidance_scale, guidance_rescale)
        skipped = self._inner.forward(x, t, {**cond, "skip_layers": self._guidance.layers})
        output = guided + (eps_cond - skipped) * self._guidance.scale
        return DenoiserOutput(output=output, evaluations=3 * x.shape[0], x0_fn=lambda: self.x0(x, output, t))


def _hooks(pipe, a):
    if a["skip_guidance_layers"] is None:
        return []
    return [SkipLayerGuidance(a["skip_guidance_layers"], a["skip_layer_guidance_scale"], a["skip_layer_guidance_start"], a["skip_layer_guidance_stop"])]


FAMILY = Family(
    guidance=lambda pipe, a: (pipe.guidance_scale, 0.0),
    decode=lambda pipe, a: vae_decoder(pipe, lambda z: z / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor),
    callback_tensors={"prompt_embeds": ("encoder_hidden_states",), "pooled_prompt_embeds": ("pooled_projections",)},
    hooks=_hooks,
)
