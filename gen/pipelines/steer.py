"""`steer(pipe)`: the same diffusers pipeline, its denoising run through gen's loop, with hooks.

    >>> pipe = steer(StableDiffusionPipeline.from_pretrained(...))
    >>> out = pipe("a photo of a cat", num_inference_steps=30, hooks=[CADS()])
    >>> out.images, out.nfe, out.reward_calls

`steer(pipe)` returns an instance of a subclass of the pipeline's own class (so `isinstance(out, type(pipe))`
and it is a `DiffusionPipeline`) that shares the pipeline's state: its components, scheduler, config and
progress-bar settings are the same objects. Its `__call__` shows the stock signature plus `hooks` and
`trace`; it stays steered through `.to()`, `save_pretrained` (which writes the stock class name) and
`type(pipe).from_pretrained`, offloading and `set_progress_bar_config`.

The stock arguments keep their stock meaning and defaults. Every family but two runs its own stock
`__call__` with gen's loop inside it (`gen.pipelines.stock_loop`; one small module each in
`gen.pipelines.families`): Stable Diffusion 1.x/2.x (LCM UNets included), SDXL (and its img2img/refiner), SD3,
PixArt-α and -Σ, Flux, SANA, Lumina 2, AuraFlow, Qwen-Image and Z-Image. The unconditional DDPM/DDIM pipelines
and DiT, whose loops carry their state differently (DiT steps a duplicated [cond; uncond] batch), keep the two
adapters below, which prepare the inputs as those pipelines do and run `gen.sample`. Callbacks behave as in the
stock loops: `callback_on_step_end` may return new latents or prompt embeddings, change
`pipe._guidance_scale` (e.g. diffusers' `SDCFGCutoffCallback`) or set `pipe._interrupt`; legacy
`callback`/`callback_steps` are honoured with stock's deprecation warnings where stock deprecates them.
The output is the stock output type with `nfe`, `reward_calls`, `decodes` (per sample) and `trace`
added; `return_dict=False` gives the stock tuple (the counts of the last call are then in
`pipe.last_counts`). With no hooks the result equals the stock pipeline's. One difference by design: gen
passes the generator to `scheduler.step` where the step takes one, also where a stock loop does not (DiT, SD3,
Flux and the other flow-matching loops draw step noise from the global RNG), so with a stochastic scheduler
those draw other noise than stock, from the same distribution.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
import transformers.utils.logging as transformers_logging

# Importing these pipelines imports transformers' image processors, which print a notice about torchvision
# when it is absent; it concerns processors gen does not use, so `import gen.pipelines` stays quiet.
_verbosity = transformers_logging.get_verbosity()
transformers_logging.set_verbosity_error()
try:
    from diffusers import (
        AuraFlowPipeline,
        DDIMPipeline,
        DDPMPipeline,
        DiTPipeline,
        FluxPipeline,
        LLaDA2Pipeline,
        Lumina2Pipeline,
        PixArtAlphaPipeline,
        PixArtSigmaPipeline,
        QwenImagePipeline,
        SanaPipeline,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        ZImagePipeline,
    )
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
finally:
    transformers_logging.set_verbosity(_verbosity)
from diffusers.utils.torch_utils import randn_tensor

from gen.errors import ArgumentError, ArgumentTypeError
from gen.core.denoiser import Denoiser
from gen.core.hooks import check_hooks
from gen.core.sampling import SampleOutput, sample
from gen.core.schedulers import step_parameters
from gen.pipelines.families import auraflow, flux, lumina2, pixart_alpha, pixart_sigma, qwen_image, sana, sd3, sdxl, stable_diffusion, z_image
from gen.pipelines.stock_loop import Family, method_signature, pixel_images, run_stock, vae_decoder

TOKENS = "tokens"  # the adapter of masked-diffusion pipelines: hooks on token states (gen.discrete.steering)


@dataclass
class _Prepared:
    """What an adapter hands to the loop, and how to turn the final latents into the stock output."""

    denoiser: Denoiser
    latents: torch.Tensor
    loop: dict[str, Any]
    finish: Callable[[torch.Tensor], Any]
    hooks: list = dataclasses.field(default_factory=list)


def _numpy_images(pipe, images: torch.Tensor, output_type: str):
    if output_type == "pt":
        return images
    images = images.cpu().permute(0, 2, 3, 1).float().numpy()
    return pipe.numpy_to_pil(images) if output_type == "pil" else images


def _stock_eta(scheduler, eta):
    """Stock pipelines pass eta only to schedulers whose step takes it (prepare_extra_step_kwargs)."""
    return eta if "eta" in step_parameters(type(scheduler)) else None


# -- adapters: one per stock pipeline family ------------------------------------------------------------------------
def _unconditional(pipe, a: dict) -> _Prepared:
    unet = pipe.unet
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = a["batch_size"]
    if "eta" in a and not 0.0 <= a["eta"] <= 1.0:
        raise ArgumentError(f"`eta` should be between 0 and 1 (inclusive), but received {a['eta']}. ")
    latents = randn_tensor((batch, unet.config.in_channels, *size), generator=a["generator"], device=pipe._execution_device, dtype=unet.dtype)
    loop = dict(
        num_inference_steps=a["num_inference_steps"],
        generator=a["generator"],
        eta=_stock_eta(pipe.scheduler, a.get("eta")),
        decode=pixel_images,
        step_kwargs={"use_clipped_model_output": a["use_clipped_model_output"]} if a.get("use_clipped_model_output") is not None else None,
    )

    def finish(x):
        images = _numpy_images(pipe, pixel_images(x), a["output_type"])
        return ImagePipelineOutput(images=images) if a["return_dict"] else (images,)

    return _Prepared(Denoiser(unet, pipe.scheduler), latents, loop, finish)


def _dit(pipe, a: dict) -> _Prepared:
    model = pipe.transformer
    device = pipe._execution_device
    batch = len(a["class_labels"])  # as stock: a bare int is a TypeError
    labels = torch.tensor(a["class_labels"], device=device).reshape(-1)
    size = model.config.sample_size
    latents = randn_tensor((batch, model.config.in_channels, size, size), generator=a["generator"], device=device, dtype=model.dtype)
    null = torch.full_like(labels, 1000)  # DiTPipeline's null class
    loop = dict(
        num_inference_steps=a["num_inference_steps"],
        cond={"class_labels": labels},
        uncond={"class_labels": null},
        guidance_scale=a["guidance_scale"],
        generator=a["generator"],
        decode=vae_decoder(pipe),
    )

    def finish(x):
        samples = pipe.vae.decode(1 / pipe.vae.config.scaling_factor * x).sample  # in the VAE's dtype, as stock
        images = _numpy_images(pipe, (samples / 2 + 0.5).clamp(0, 1), a["output_type"])
        return ImagePipelineOutput(images=images) if a["return_dict"] else (images,)

    return _Prepared(Denoiser(model, pipe.scheduler), latents, loop, finish)


# Most specific first: subclasses of these (e.g. gen's own pipelines) are matched by isinstance. A `Family`
# runs the stock call itself with gen's loop inside it (gen.pipelines.stock_loop); a function re-derives it.
_ADAPTERS: list[tuple[type, Callable | Family]] = [
    (DDIMPipeline, _unconditional),
    (DDPMPipeline, _unconditional),
    (DiTPipeline, _dit),
    (StableDiffusionPipeline, stable_diffusion.FAMILY),
    (PixArtAlphaPipeline, pixart_alpha.FAMILY),
    (StableDiffusion3Pipeline, sd3.FAMILY),
    (StableDiffusionXLPipeline, sdxl.FAMILY),
    (StableDiffusionXLImg2ImgPipeline, sdxl.FAMILY),
    (FluxPipeline, flux.FAMILY),
    (SanaPipeline, sana.FAMILY),
    (PixArtSigmaPipeline, pixart_sigma.FAMILY),
    (Lumina2Pipeline, lumina2.FAMILY),
    (AuraFlowPipeline, auraflow.FAMILY),
    (QwenImagePipeline, qwen_image.FAMILY),
    (ZImagePipeline, z_image.FAMILY),
    (LLaDA2Pipeline, TOKENS),
]
SUPPORTED = tuple(cls for cls, _ in _ADAPTERS)


@functools.lru_cache(maxsize=None)
def _with_counts(output_class: type) -> type:
    """The stock output dataclass extended with gen's counts (isinstance of the stock class still holds)."""
    return dataclasses.make_dataclass(
        f"Steered{output_class.__name__}",
        [("nfe", float, 0.0), ("reward_calls", float, 0.0), ("decodes", float, 0.0), ("trace", Any, None)],
        bases=(output_class,),
    )


class SteeredPipeline:
    """Mixed in front of a stock pipeline class by `steer`: `isinstance(pipe, SteeredPipeline)` tells a
    steered pipeline; `last_counts` holds the counts of its latest call."""

    last_counts: dict | None = None


def _adapter_for(cls: type) -> Callable:
    for stock, adapter in _ADAPTERS:
        if issubclass(cls, stock):
            return adapter
    names = ", ".join(c.__name__ for c in SUPPORTED)
    raise ArgumentTypeError(f"pipe: steer() supports {names}; got {cls.__name__}.")


def _run(pipe, adapter, args, kwargs, hooks, trace):
    hooks = check_hooks(hooks)
    stock_call = super(type(pipe), pipe).__call__
    try:
        bound = method_signature(stock_call.__func__).bind(*args, **kwargs)
    except TypeError as err:
        raise ArgumentTypeError(f"{type(pipe).__name__}.__call__: {err}") from None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    var_keyword = next((p.name for p in method_signature(stock_call.__func__).parameters.values() if p.kind is p.VAR_KEYWORD), None)
    if var_keyword is not None:
        arguments["kwargs"] = arguments.pop(var_keyword, {})
    if adapter == TOKENS:
        from gen.discrete.steering import TokenSteering, check_candidate_memory, check_token_hooks

        check_token_hooks(hooks, arguments, pipe)
        check_candidate_memory(hooks, arguments, pipe)
        stock, counts = TokenSteering(pipe, stock_call, bound, hooks, trace).run()
        return _with_counts_of(pipe, stock, counts)
    _check_common_arguments(pipe, arguments, stock_checks_callbacks=isinstance(adapter, Family))
    if isinstance(adapter, Family):
        if "callback_on_step_end_tensor_inputs" in bound.arguments:  # as resolved from a PipelineCallback
            bound.arguments["callback_on_step_end_tensor_inputs"] = arguments["callback_on_step_end_tensor_inputs"]
        stock, counts = run_stock(pipe, adapter, stock_call, bound, hooks, trace)
        return _with_counts_of(pipe, stock, counts)
    prepared = adapter(pipe, arguments)
    generator, rows = prepared.loop.get("generator"), prepared.latents.shape[0]
    if isinstance(generator, list) and len(generator) > rows:  # stock draws with the first `rows` of a longer list
        prepared.loop["generator"] = generator[:rows]
    result: SampleOutput = sample(
        prepared.denoiser, prepared.latents, hooks=prepared.hooks + hooks, trace=trace, progress_bar=pipe.progress_bar, **prepared.loop
    )
    stock = prepared.finish(result.samples)
    counts = {"nfe": result.nfe, "reward_calls": result.reward_calls, "decodes": result.decodes, "trace": result.trace}
    return _with_counts_of(pipe, stock, counts)


def _with_counts_of(pipe, stock, counts: dict):
    pipe.last_counts = counts
    if isinstance(stock, tuple):
        return stock
    fields = {f.name: getattr(stock, f.name) for f in dataclasses.fields(stock)}
    return _with_counts(type(stock))(**fields, **counts)


def _check_common_arguments(pipe, a: dict, stock_checks_callbacks: bool = False) -> None:
    """Arguments every stock loop fails on with a raw torch error (or none): named here, before any work.
    Only inputs stock cannot run are refused; a `PipelineCallback`'s tensor names are taken as stock takes
    them (they replace `callback_on_step_end_tensor_inputs`) and checked as stock checks them, unless the
    stock call that runs next checks them itself."""
    from gen.errors import require_int

    for name in ("batch_size", "num_images_per_prompt"):
        if a.get(name) is not None:
            require_int(a[name], name, minimum=1)
    latents = a.get("latents")
    if isinstance(latents, torch.Tensor):
        backbone = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if backbone is not None and latents.is_floating_point() and latents.dtype != backbone.dtype and latents.dtype == torch.float64:
            raise ArgumentError(
                f"latents: float64 latents for a {str(backbone.dtype).replace('torch.', '')} {type(backbone).__name__}; "
                f"pass latents.to({str(backbone.dtype)})."
            )
    callback = a.get("callback_on_step_end")
    if callback is not None and getattr(callback, "tensor_inputs", None) is not None and "callback_on_step_end_tensor_inputs" in a:
        a["callback_on_step_end_tensor_inputs"] = callback.tensor_inputs
    if stock_checks_callbacks:
        return
    names = a.get("callback_on_step_end_tensor_inputs")
    allowed = getattr(pipe, "_callback_tensor_inputs", None)
    if callback is not None and names is not None and allowed is not None and not all(k in allowed for k in names):
        raise ArgumentError(f"`callback_on_step_end_tensor_inputs` has to be in {allowed}, but found {[k for k in names if k not in allowed]}")


def _call_signature(cls: type) -> inspect.Signature:
    """The stock __call__'s signature with keyword-only `hooks` and `trace` before any **kwargs."""
    signature = inspect.signature(cls.__call__)
    params = list(signature.parameters.values())
    extra = [
        inspect.Parameter("hooks", inspect.Parameter.KEYWORD_ONLY, default=(), annotation="Sequence[SamplingHook]"),
        inspect.Parameter("trace", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool),
        inspect.Parameter("guider", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="diffusers.guiders.BaseGuidance | None"),
    ]
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    return signature.replace(parameters=params[:at] + extra + params[at:])


@functools.lru_cache(maxsize=None)
def steered_class(cls: type) -> type:
    """The steered subclass of a stock pipeline class (same name, so save_pretrained writes the stock name)."""
    adapter = _adapter_for(cls)

    def __call__(self, *args, hooks=(), trace: bool = False, guider=None, **kwargs):
        if guider is not None and adapter == TOKENS:
            raise ArgumentError("guider: diffusers' guiders combine image predictions; a masked-diffusion pipeline takes none.")
        if guider is not None:  # a diffusers guider evaluates and combines the branches (gen.core.guiders)
            from gen.core.guiders import UseGuider

            hooks = [*check_hooks(hooks), UseGuider(guider)]
        with torch.no_grad():
            return _run(self, adapter, args, kwargs, hooks, trace)

    __call__.__signature__ = _call_signature(cls)
    __call__.__doc__ = f"{cls.__name__}'s call, run through gen's loop: the stock arguments, plus `hooks` (gen.SamplingHook list), `trace` and `guider` (a diffusers guider).\n\n{cls.__call__.__doc__ or ''}"
    return type(cls.__name__, (SteeredPipeline, cls), {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__})


def steer(pipe):
    """The pipeline, steerable: an instance of a subclass of its own class sharing all its state, whose call
    takes `hooks=[...]` and `trace=` (see the module docstring). DDPM, DDIM, DiT, Stable Diffusion, PixArt-α,
    SD3, SDXL (text-to-image, img2img), Flux, SANA, PixArt-Σ, Lumina 2, AuraFlow, Qwen-Image and Z-Image
    pipelines (and their subclasses) are supported, and the masked-diffusion LLaDA2Pipeline, whose hooks act on
    token states (gen.discrete.steering)."""
    if isinstance(pipe, SteeredPipeline):
        return pipe
    cls = steered_class(type(pipe))
    steered = object.__new__(cls)
    object.__setattr__(steered, "__dict__", pipe.__dict__)  # one state: components, config, progress-bar settings
    return steered
