"""PixArt-α: like PixArt-Σ, plus its one-step convention: with a single step the final latents are the
scheduler's denoised output (the second item of its step's tuple), not the stepped state."""

from gen.core.hooks import SamplingHook
from gen.pipelines.stock_loop import Family


class OneStepDenoised(SamplingHook):
    def transition(self, state, ctx):
        if state.step.num_steps != 1:
            return ctx.proceed(state)
        result = ctx.scheduler.step(state.model_output, state.step.timestep, state.x, return_dict=False)
        return ctx.next_state(result[1])


FAMILY = Family(callback_tensors={}, legacy_callback="arguments", hooks=lambda pipe, a: [OneStepDenoised()])
