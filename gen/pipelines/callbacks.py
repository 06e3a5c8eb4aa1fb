"""The stock pipelines' step callbacks, as sampling hooks: `callback_on_step_end` (with the tensors it may
read and replace, guidance changes and `pipe._interrupt`) and the deprecated `callback`/`callback_steps`
(stock warns about it; gen calls it). Shared by `steer` and gen's own pipelines."""

from __future__ import annotations

from typing import Callable

import torch

from gen.core.backbones import PerSample, with_condition
from gen.core.hooks import SamplingHook


def split_branches(stacked: torch.Tensor, guided: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Stock loops hold [uncond; cond] stacked under guidance: (uncond, cond)."""
    return tuple(stacked.chunk(2)) if guided else (None, stacked)


class StockCallback(SamplingHook):
    """`callback_on_step_end` as the stock loops call it, after each step, with the tensors they expose; what
    it returns (latents, prompt embeddings) and what it changes on the pipeline (guidance scale) takes effect
    for the following steps, as in stock."""

    def __init__(self, pipe, callback, tensor_inputs, tensors: dict[str, torch.Tensor], read_back: Callable | None = None):
        self.pipe, self.callback, self.tensor_inputs, self.tensors = pipe, callback, tensor_inputs, dict(tensors)
        self.read_back = read_back

    def transition(self, state, ctx):
        new = ctx.proceed(state)
        values = {**self.tensors, "latents": new.x}
        guided_before = getattr(self.pipe, "do_classifier_free_guidance", None)
        scale_before = getattr(self.pipe, "_guidance_scale", None)
        outputs = dict(self.callback(self.pipe, state.step.index, state.step.timestep, {k: values[k] for k in self.tensor_inputs}) or {})
        latents = outputs.pop("latents", new.x)
        self.tensors.update({k: v for k, v in outputs.items() if k in self.tensors})
        if self.read_back is not None and (outputs or getattr(self.pipe, "_guidance_scale", None) != scale_before):
            self.read_back(ctx, self.tensors, self.pipe, guided_before)
        return new if latents is new.x else ctx.next_state(latents)


class LegacyCallback(SamplingHook):
    """The deprecated `callback(step, timestep, latents)` every `callback_steps` steps."""

    def __init__(self, callback, every: int):
        self.callback, self.every = callback, every

    def transition(self, state, ctx):
        new = ctx.proceed(state)
        if state.step.index % self.every == 0:
            self.callback(state.step.index, state.step.timestep, new.x)
        return new


def guided_embeds_read_back(keys: dict, guidance_scale: Callable[[], float] | None = None):
    """After a callback, rebuild the run's branches from the stock loop's tensors (`keys`: stock name -> backbone
    keyword, or a path into nested ones such as ("added_cond_kwargs", "text_embeds")), stacked [uncond; cond]
    while guidance is on; and take the guidance scale (default: the pipeline's `_guidance_scale`), which a
    callback may have changed (a cut-off to 0 leaves only the conditional half, as in stock)."""

    def read_back(ctx, tensors, pipe, guided_before):
        guided = getattr(pipe, "do_classifier_free_guidance", None)
        if guided is None:  # Flux: true CFG is on while the run has an unconditional branch
            guided = ctx.uncond is not None
        cond, uncond = dict(ctx.cond or {}), (dict(ctx.uncond) if ctx.uncond is not None else {})
        for stock_name, key in keys.items():
            value = tensors.get(stock_name)
            if value is None:
                continue
            if isinstance(value, list):  # one entry per sample (Z-Image's captions): the conditional branch's
                cond = with_condition(cond, key, PerSample(value))
                continue
            stacked = value.shape[0] == 2 * ctx.batch_size
            if stacked and not guided:
                value, stacked = value.chunk(2)[1], False
            negative, positive = split_branches(value, stacked)
            cond = with_condition(cond, key, positive)
            if negative is not None:
                uncond = with_condition(uncond, key, negative)
        scale = guidance_scale() if guidance_scale is not None else pipe._guidance_scale
        ctx.update_guidance(cond=cond, uncond=uncond if guided else None, guidance_scale=scale, drop_uncond=not guided)

    return read_back
