"""Steer a stock pipeline by running its own `__call__`, with gen's loop in place of its denoising loop.

The stock code prepares everything (input checks, prompt encoding, micro-conditioning, latents, timesteps,
img2img's noised image latents) and finishes everything (decoding, upcasting, watermark, post-processing,
offload), so every stock argument keeps its stock effect without gen re-deriving it. During the call:

1. The backbone is a `_Probe`: the first step's backbone calls are recorded, not run (a zero tensor is
   returned), with every argument exactly as the stock loop built it.
2. At the first `scheduler.step`, the state x_T and the schedule are known; the recorded calls become gen's
   `cond`/`uncond` (the two halves of a [uncond; cond] batch, or one call per branch), and `sample()` runs
   the whole denoising with the hooks, calling the real backbone with those arguments.
3. That step returns gen's final latents; the pipeline's interrupt flag makes the stock loop skip its other
   iterations (a pipeline without one runs them on 1x1 placeholders and gets the final latents at its last
   step), and the stock code decodes them.

A family (`gen/pipelines/families/`) says only what the recorded calls cannot: how the branches are laid out,
the guidance scale and rule, how to decode latents for a reward, which callback tensors are which conditions,
and hooks for the stock loop's own logic (a guidance window, SD3's skip-layer guidance).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from gen.core.denoiser import Denoiser
from gen.errors import ArgumentError
from gen.core.sampling import SampleOutput, sample
from gen.core.backbones import Backbone, PerSample, condition_at, unwrap
from gen.pipelines.callbacks import LegacyCallback, StockCallback, guided_embeds_read_back

Path = tuple[str, ...]


@functools.lru_cache(maxsize=None)
def method_signature(function) -> inspect.Signature:
    """The signature of a method as called on an instance (its first parameter dropped), computed once per
    function: inspecting a pipeline's `__call__` costs a quarter of a millisecond every time."""
    signature = inspect.signature(function)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def pixel_images(x: torch.Tensor) -> torch.Tensor:
    """VAE output in [-1, 1] -> images in [0, 1]."""
    return (x / 2 + 0.5).clamp(0, 1)


def vae_decoder(pipe, to_vae_latents: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """latents -> images in [0, 1] through the pipeline's VAE; `to_vae_latents` undoes the family's scaling
    (default: divide by the VAE's scaling factor)."""
    vae = pipe.vae

    def decode(latents: torch.Tensor) -> torch.Tensor:
        z = to_vae_latents(latents) if to_vae_latents is not None else latents / vae.config.scaling_factor
        return pixel_images(vae.decode(z.to(vae.dtype), return_dict=False)[0].float())

    return decode


@dataclass(frozen=True)
class Family:
    """What steering one stock pipeline family needs beyond its own `__call__`.

    Args:
        backbone: the pipeline attribute holding the denoiser model.
        separate_branches: the stock loop calls the backbone once per branch, conditional first (Flux's and
            Qwen-Image's true CFG), instead of once over [uncond; cond].
        guidance: (pipe, stock arguments) -> (guidance scale, guidance rescale) of the run.
        decode: (pipe, stock arguments) -> latents -> images in [0, 1], for rewards.
        callback_tensors: `callback_on_step_end` tensor name -> the backbone argument it is (a path into nested
            dicts), held as the stock loop holds it (stacked [uncond; cond] under guidance, unless
            `stacked_callback_tensors` is False: the conditional branch's); replaced values are read back.
        negative_tensors: tensor name -> argument path, read from the unconditional branch (not read back).
        legacy_callback: where the deprecated `callback`/`callback_steps` come from: "kwargs" (SDXL),
            "arguments" (PixArt-Σ's own parameters) or None.
        guidance_rule: (pipe, stock arguments) -> the `Denoiser`'s guidance_rule, or None for plain CFG.
        hooks: (pipe, stock arguments) -> hooks the stock loop's own logic needs (a guidance window).
    """

    backbone: str = "transformer"
    separate_branches: bool = False
    guidance: Callable[[Any, dict], tuple[float, float]] = lambda pipe, a: (a["guidance_scale"], 0.0)
    decode: Callable[[Any, dict], Callable] = lambda pipe, a: vae_decoder(pipe)
    callback_tensors: dict[str, Path] = field(default_factory=lambda: {"prompt_embeds": ("encoder_hidden_states",)})
    negative_tensors: dict[str, Path] = field(default_factory=dict)
    stacked_callback_tensors: bool = True
    legacy_callback: str | None = None
    guidance_rule: Callable[[Any, dict], Callable | None] = lambda pipe, a: None
    hooks: Callable[[Any, dict], list] = lambda pipe, a: []


class _Probe:
    """Stands in for the backbone during the stock call: records the first step's calls and returns zeros
    shaped like the model's output for its input."""

    def __init__(self, model):
        signature = method_signature(type(unwrap(model)).forward)  # a torch.compile'd model: its module's
        object.__setattr__(self, "_signature", signature)
        object.__setattr__(self, "_first", next(iter(signature.parameters)))
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "recording", True)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)

    def __call__(self, *args, **kwargs):
        if self.recording:
            self.calls.append(self._signature.bind(*args, **kwargs).arguments)
        x = args[0] if args else kwargs[self._first]
        if isinstance(x, list):  # one tensor per sample in and out (Z-Image)
            zeros = [torch.zeros_like(v) for v in x]
        else:
            shape = list(x.shape)
            out_channels = self._model.config.get("out_channels")
            if x.ndim == 4 and out_channels:
                shape[1] = out_channels
            zeros = torch.zeros(shape, dtype=x.dtype, device=x.device)
        return (zeros,) if kwargs.get("return_dict", True) is False else Transformer2DModelOutput(sample=zeros)


def _condition(arguments: dict, spec) -> dict:
    """A recorded call's arguments without the state, the timestep and return_dict: the backbone condition.
    Dicts are copied (the stock loops mutate theirs between calls, e.g. Flux's IP-Adapter embeddings)."""
    names = list(arguments)
    cond = {k: v for k, v in arguments.items() if k not in (names[0], spec.timestep_argument, "return_dict")}
    extra = cond.pop("kwargs", None)
    cond.update(extra or {})
    return {k: dict(v) if isinstance(v, dict) else PerSample(v) if k in spec.per_sample and isinstance(v, list) else v for k, v in cond.items()}


def _rows(x) -> int:
    return len(x) if isinstance(x, list) else x.shape[0]


def _halves(value, rows: int, name: str = "condition"):
    """(uncond, cond) of a value stacked [uncond; cond] over `rows` rows; values that are not tensors are
    shared by both, as are tensors of another batch the backbone may ignore (SDXL's IP-Adapter embeddings
    without an adapter loaded). A text condition of another batch would fail inside the backbone (stock
    raises a RuntimeError there): named here instead."""
    if isinstance(value, dict):
        pairs = {k: _halves(v, rows, k) for k, v in value.items()}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    if isinstance(value, (list, tuple)) and not isinstance(value, PerSample):
        pairs = [_halves(v, rows, name) for v in value]
        return type(value)(p[0] for p in pairs), type(value)(p[1] for p in pairs)
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] != rows:
        if name in _TEXT_CONDITIONS:
            raise ArgumentError(
                f"{name}: the pipeline prepared it for {value.shape[0]} rows but the latents have {rows // 2} (x2 for guidance); "
                "pass matching batches (as many prompts or embeddings as images, or one for all)."
            )
        return value, value
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return tuple(value.chunk(2))
    if isinstance(value, PerSample):
        return PerSample(value[: rows // 2]), PerSample(value[rows // 2 :])
    return value, value


_TEXT_CONDITIONS = ("encoder_hidden_states", "encoder_attention_mask", "pooled_projections", "text_embeds", "time_ids")


def branches(family: Family, calls: list[dict], batch: int, spec) -> tuple[dict, dict | None]:
    """gen's (cond, uncond) from the first step's recorded backbone calls."""
    if family.separate_branches:
        return _condition(calls[0], spec), (_condition(calls[1], spec) if len(calls) > 1 else None)
    first = calls[0]
    rows = _rows(first[next(iter(first))])
    cond = _condition(first, spec)
    if rows != 2 * batch:
        return cond, None
    first_half, second_half = _halves(cond, rows)
    return (first_half, second_half) if spec.conditional_first else (second_half, first_half)


def _plan(pipe, scheduler, t) -> list:
    """The timesteps the stock loop iterates: from the scheduler's begin index (or t's place), as many as the
    stock call counted in `_num_timesteps` (SDXL's denoising_end stops early), else to the end."""
    grid = list(scheduler.timesteps)
    start = getattr(scheduler, "begin_index", None)
    if start is None:
        start = next(i for i, s in enumerate(grid) if float(s) == float(t))
    length = pipe.__dict__.get("_num_timesteps")
    return grid[start : start + length] if length else grid[start:]


class _Bar:
    """The stock loop's progress bar, advanced by gen's loop; the stock loop's own updates are dropped."""

    def __init__(self, bar):
        self.bar = bar

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, n: int = 1):
        return None


def _no_callback(*args, **kwargs):
    return {}


class _StockCall:
    """One steered call: the stock `__call__` runs with the probe as its backbone, `scheduler.step` and the
    progress bar intercepted, and gen's loop in place of its denoising loop (see the module docstring)."""

    def __init__(self, pipe, family: Family, stock_call, bound: inspect.BoundArguments, hooks: list, trace: bool):
        self.pipe, self.family, self.stock_call, self.bound = pipe, family, stock_call, bound
        self.user_hooks, self.trace = list(hooks), trace
        self.arguments = dict(bound.arguments)
        var_keyword = next((p.name for p in method_signature(stock_call.__func__).parameters.values() if p.kind is p.VAR_KEYWORD), None)
        kwargs = self.arguments.pop(var_keyword, {}) if var_keyword else {}
        # callbacks run after each of gen's steps; stock still checks their arguments and warns where it deprecates
        self.callback, self.callback_hooks = self.arguments.get("callback_on_step_end"), []
        if self.callback is not None:
            bound.arguments["callback_on_step_end"] = None
        legacy = {"kwargs": kwargs, "arguments": bound.arguments}.get(family.legacy_callback, {})
        if legacy.get("callback") is not None:
            self.callback_hooks.append(LegacyCallback(legacy["callback"], legacy.get("callback_steps") or 1))
            legacy["callback"] = _no_callback
        self.model, self.scheduler = getattr(pipe, family.backbone), pipe.scheduler
        self.probe = _Probe(self.model)
        self.has_interrupt = isinstance(getattr(type(pipe), "interrupt", None), property)
        self.result: SampleOutput | None = None
        self.stock_steps, self.stock_length = 0, 0  # the stock loop's steps so far, and how many it takes
        self.bar = None
        self.interrupted = None

    def run(self):
        pipe, scheduler = self.pipe, self.scheduler

        def step(*args, **step_kwargs):
            return self.step(args, step_kwargs)

        step.__signature__ = method_signature(type(scheduler).step)  # stock reads it to decide on eta and generator
        self.intercept = step
        original_bar = pipe.progress_bar

        def progress_bar(iterable=None, total=None):
            if iterable is not None:
                return original_bar(iterable)
            self.bar = original_bar(total=total)
            return _Bar(self.bar)

        saved = {name: pipe.__dict__.get(name, _MISSING) for name in (self.family.backbone, "progress_bar", "_num_timesteps")}
        pipe.__dict__.update({self.family.backbone: self.probe, "progress_bar": progress_bar, "_num_timesteps": None})
        scheduler.__dict__["step"] = step
        try:
            output = self.stock_call(*self.bound.args, **self.bound.kwargs)
        finally:
            scheduler.__dict__.pop("step", None)
            for name, value in saved.items():
                if name == "_num_timesteps" and pipe.__dict__.get(name) is not None:
                    continue  # what the stock call set
                if value is _MISSING:
                    pipe.__dict__.pop(name, None)
                else:
                    pipe.__dict__[name] = value
            if self.interrupted is not None:
                pipe._interrupt = self.interrupted
        counts = {"nfe": 0.0, "reward_calls": 0.0, "decodes": 0.0, "trace": None}
        if self.result is not None:
            counts = {"nfe": self.result.nfe, "reward_calls": self.result.reward_calls, "decodes": self.result.decodes, "trace": self.result.trace}
        return output, counts

    def step(self, args, step_kwargs):
        """`scheduler.step` for the stock loop: at its first step gen's whole loop runs; every step returns its
        final latents (as a tuple, also as the second item: PixArt-α takes [1], the denoised sample, after one
        step)."""
        if self.result is None:
            del self.scheduler.__dict__["step"]  # gen's own steps are the scheduler's
            object.__setattr__(self.probe, "recording", False)
            self.result = self.sample(args, step_kwargs)
            self.scheduler.__dict__["step"] = self.intercept
            if self.has_interrupt:  # the stock loop skips the rest of its iterations
                self.interrupted, self.pipe._interrupt = self.pipe._interrupt, True
        self.stock_steps += 1
        final = self.result.samples
        if not self.has_interrupt and self.stock_steps < self.stock_length and final.ndim > 2:
            # a loop with no interrupt flag runs its other iterations: on a 1x1 placeholder they cost next to nothing
            final = final[(slice(None),) * (final.ndim - 2) + (slice(0, 1),) * 2] if final.ndim == 4 else final[:, :1]
        return (final, final) if step_kwargs.get("return_dict", True) is False else SchedulerOutput(prev_sample=final)

    def sample(self, step_args, step_kwargs) -> SampleOutput:
        pipe, family, a, scheduler = self.pipe, self.family, self.arguments, self.scheduler
        names = list(method_signature(type(scheduler).step).parameters)
        given = {**dict(zip(names, step_args)), **step_kwargs}
        latents, t = given["sample"], given["timestep"]
        batch = latents.shape[0]
        spec = Backbone(self.model).spec
        cond, uncond = branches(family, self.probe.calls, batch, spec)
        scale, rescale = family.guidance(pipe, a)
        generator = a.get("generator")
        if isinstance(generator, list) and len(generator) > batch:  # stock draws with the first `batch` of a longer list
            generator = generator[:batch]
        extra = {k: v for k, v in given.items() if k not in ("model_output", "timestep", "sample", "generator", "eta", "return_dict")}
        hooks = family.hooks(pipe, a) + self.callback_hooks
        if self.callback is not None:
            inputs = getattr(self.callback, "tensor_inputs", None) or a.get("callback_on_step_end_tensor_inputs") or ["latents"]
            held = _condition(self.probe.calls[0], spec) if family.stacked_callback_tensors else cond  # as the stock loop holds them
            tensors = {name: condition_at(held, path) for name, path in family.callback_tensors.items()}
            tensors.update({name: condition_at(uncond or {}, path) for name, path in family.negative_tensors.items()})
            read_back = guided_embeds_read_back(family.callback_tensors, lambda: family.guidance(pipe, a)[0])
            hooks.append(StockCallback(pipe, self.callback, inputs, tensors, read_back))
        bar = self.bar

        def progress(total):
            if bar is not None:
                bar.total = total
                bar.refresh()
            return contextlib.nullcontext(bar)

        plan = _plan(pipe, scheduler, t)
        self.stock_length = len(plan)
        return sample(
            Denoiser(self.model, scheduler, separate_branches=family.separate_branches, guidance_rule=family.guidance_rule(pipe, a)),
            latents,
            timesteps=plan,
            cond=cond,
            uncond=uncond,
            guidance_scale=scale if uncond is not None else 1.0,
            guidance_rescale=rescale if uncond is not None else 0.0,
            generator=generator,
            eta=given.get("eta"),
            hooks=hooks + self.user_hooks,
            decode=family.decode(pipe, a),
            trace=self.trace,
            progress_bar=progress,
            interrupt=(lambda: pipe._interrupt) if self.has_interrupt else None,
            step_kwargs=extra or None,
        )


def run_stock(pipe, family: Family, stock_call, bound: inspect.BoundArguments, hooks: list, trace: bool):
    """The stock call's output with gen's loop as its denoising loop, and gen's counts."""
    return _StockCall(pipe, family, stock_call, bound, hooks, trace).run()


_MISSING = object()
