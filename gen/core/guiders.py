"""diffusers' guiders (`diffusers.guiders`: CFG with rescale and a window, adaptive projected guidance, CFG-Zero*,
tangential CFG, frequency-decoupled, perturbed attention, smoothed energy, skip layer, ...) as gen's guidance rule.

    >>> from diffusers.guiders import AdaptiveProjectedGuidance
    >>> out = sample(den, x, num_inference_steps=20, cond=cond, uncond=uncond, guider=AdaptiveProjectedGuidance(guidance_scale=7.0))
    >>> steer(pipe)("a cat", guidance_scale=7.0, guider=AdaptiveProjectedGuidance(guidance_scale=7.0))

Each step is run as diffusers' modular pipelines run it: the guider's state is set (step, number of steps,
timestep), it prepares one batch per prediction it needs (the conditional branch, the unconditional one, a
perturbed conditional one, ...), each is evaluated as its own backbone call between the guider's
`prepare_models` and `cleanup_models` (where PAG, SEG and SLG put their attention hooks), and its `forward`
combines the predictions. The guider's own scale applies; the run only has to provide the unconditional branch
(a stock pipeline does when its guidance_scale is above 1). NFE counts every branch evaluated.
"""

from __future__ import annotations

from gen.core import prediction
from gen.core.denoiser import Denoiser, DenoiserOutput
from gen.core.hooks import SamplingHook
from gen.errors import ArgumentError, ArgumentTypeError


class UseGuider(SamplingHook):
    """A denoiser hook: every step evaluated and combined by a diffusers guider (see the module docstring)."""

    def __init__(self, guider):
        if not (hasattr(guider, "prepare_inputs") and hasattr(guider, "set_state") and hasattr(guider, "forward")):
            raise ArgumentTypeError(f"guider: expected a diffusers guider (diffusers.guiders, e.g. ClassifierFreeGuidance(...)), got {type(guider).__name__}.")
        self.guider = guider

    def validate(self, run) -> None:
        needs_uncond = "pred_uncond" in (self.guider._input_predictions or [])
        if needs_uncond and run.uncond is None:
            raise ArgumentError(
                f"guider: {type(self.guider).__name__} needs the unconditional branch, but this run has none; give uncond= to sample(), "
                "or a guidance_scale above 1 to a stock pipeline so it prepares one (the guider's own scale applies)."
            )

    def denoiser(self, step, current: Denoiser) -> Denoiser:
        return _GuidedDenoiser(current, self.guider, step)

    def __repr__(self) -> str:
        return f"UseGuider({type(self.guider).__name__})"


class _GuidedDenoiser(Denoiser):
    """The step's denoiser with the guider's branches and combination in place of gen's CFG."""

    def __init__(self, inner: Denoiser, guider, step):
        self.__dict__.update(inner.__dict__)
        self._inner, self._guider, self._step = inner, guider, step

    def __call__(self, x, t, cond=None, uncond=None, guidance_scale=1.0, guidance_rescale=0.0) -> DenoiserOutput:
        guider = self._guider
        guider.set_state(step=self._step.index, num_inference_steps=self._step.num_steps, timestep=t)
        x_in = prediction.model_input(self.scheduler, x, t)
        batches = guider.prepare_inputs({"gen_branch": ("cond", "uncond")})
        evaluations = 0
        for batch in batches:
            condition = cond if batch.gen_branch == "cond" else uncond
            guider.prepare_models(self.model)
            try:
                batch.noise_pred = self.backbone.split_variance(self._inner.forward(x_in, t, condition))[0]
            finally:
                guider.cleanup_models(self.model)
            evaluations += x.shape[0]
        output = guider(batches).pred
        return DenoiserOutput(output=output, evaluations=evaluations, x0_fn=lambda: self.x0(x, output, t))
