"""`steer(pipe)`: the same diffusers pipeline, its denoising run through gen's loop, with hooks.

    >>> pipe = steer(StableDiffusionPipeline.from_pretrained(...))
    >>> out = pipe("a photo of a cat", num_inference_steps=30, hooks=[CADS()])
    >>> out.images, out.nfe, out.reward_calls

`steer(pipe)` returns an instance of a subclass of the pipeline's own class (so `isinstance(out, type(pipe))`
and it is a `DiffusionPipeline`) that shares the pipeline's state: its components, scheduler, config and
progress-bar settings are the same objects. Its `__call__` shows the stock signature plus `hooks` and
`trace`; it stays steered through `.to()`, `save_pretrained` (which writes the stock class name) and
`type(pipe).from_pretrained`, offloading and `set_progress_bar_config`.

The stock arguments keep their stock meaning and defaults. SDXL (and its img2img/refiner), Flux, SANA,
PixArt-Σ, Lumina 2, AuraFlow, Qwen-Image and Z-Image run their own stock `__call__` with gen's loop inside it (`gen.pipelines.stock_loop`, one small
family module each in `gen.pipelines.families`). For the older families each adapter below prepares the inputs with the
pipeline's own methods (`check_inputs`, `encode_prompt`, `prepare_latents`, `retrieve_timesteps`), runs
`gen.sample`, and finishes with the pipeline's own decoding and post-processing. Callbacks behave as in the
stock loops: `callback_on_step_end` may return new latents or prompt embeddings, change
`pipe._guidance_scale` (e.g. diffusers' `SDCFGCutoffCallback`) or set `pipe._interrupt`; legacy
`callback`/`callback_steps` are honoured with stock's deprecation warnings where stock deprecates them.
The output is the stock output type with `nfe`, `reward_calls`, `decodes` (per sample) and `trace`
added; `return_dict=False` gives the stock tuple (the counts of the last call are then in
`pipe.last_counts`). With no hooks the result equals the stock pipeline's. One difference by design: gen
passes the generator to `scheduler.step` for DiT and SD3 too (their stock loops draw step noise from the
global RNG), so with a stochastic scheduler those two draw other noise than stock, from the same
distribution.
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
    from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
finally:
    transformers_logging.set_verbosity(_verbosity)
from diffusers.utils import deprecate
from diffusers.utils.torch_utils import randn_tensor

from gen.errors import ArgumentError, ArgumentTypeError
from gen.core.denoiser import Denoiser, DenoiserOutput, guidance_combine
from gen.core.hooks import SamplingHook, check_hooks
from gen.core.sampling import SampleOutput, _step_parameters, sample
from gen.pipelines.callbacks import LegacyCallback, StockCallback, callback_hooks, guided_embeds_read_back, legacy_callbacks, split_branches
from gen.pipelines.families import auraflow, flux, lumina2, pixart_sigma, qwen_image, sana, sdxl, z_image
from gen.pipelines.stock_loop import Family, run_stock


@dataclass
class _Prepared:
    """What an adapter hands to the loop, and how to turn the final latents into the stock output."""

    denoiser: Denoiser
    latents: torch.Tensor
    loop: dict[str, Any]
    finish: Callable[[torch.Tensor], Any]
    hooks: list = dataclasses.field(default_factory=list)


def _pixel_images(x: torch.Tensor) -> torch.Tensor:
    return (x / 2 + 0.5).clamp(0, 1)


def _vae_decoder(vae, shift: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """latents -> images in [0, 1] through the pipeline's VAE (what value-guided transitions score)."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        z = latents / vae.config.scaling_factor
        if shift and vae.config.get("shift_factor") is not None:
            z = z + vae.config.shift_factor
        return _pixel_images(vae.decode(z.to(vae.dtype), return_dict=False)[0].float())

    return decode


def _numpy_images(pipe, images: torch.Tensor, output_type: str):
    if output_type == "pt":
        return images
    images = images.cpu().permute(0, 2, 3, 1).float().numpy()
    return pipe.numpy_to_pil(images) if output_type == "pil" else images


def _stock_eta(scheduler, eta):
    """Stock pipelines pass eta only to schedulers whose step takes it (prepare_extra_step_kwargs)."""
    return eta if "eta" in _step_parameters(type(scheduler)) else None


class _LastStepDenoised(SamplingHook):
    """PixArt's one-step convention: the final state is the scheduler's denoised output."""

    def transition(self, state, ctx):
        if not ctx.is_last:
            return ctx.proceed(state)
        result = ctx.scheduler.step(state.model_output, state.step.timestep, state.x, return_dict=False)
        return ctx.next_state(result[1])


# -- adapters: one per stock pipeline family ------------------------------------------------------------------------
def _unconditional(pipe, a: dict) -> _Prepared:
    unet = pipe.unet
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = a["batch_size"]
    if "eta" in a and not 0.0 <= a["eta"] <= 1.0:
        raise ArgumentError(f"`eta` should be between 0 and 1 (inclusive), but received {a['eta']}. ")
    latents = randn_tensor((batch, unet.config.in_channels, *size), generator=a["generator"], device=pipe._execution_device, dtype=unet.dtype)
    loop = dict(num_inference_steps=a["num_inference_steps"], generator=a["generator"], eta=_stock_eta(pipe.scheduler, a.get("eta")), decode=_pixel_images,
                step_kwargs={"use_clipped_model_output": a["use_clipped_model_output"]} if a.get("use_clipped_model_output") is not None else None)

    def finish(x):
        images = _numpy_images(pipe, _pixel_images(x), a["output_type"])
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
        decode=_vae_decoder(pipe.vae),
    )

    def finish(x):
        samples = pipe.vae.decode(1 / pipe.vae.config.scaling_factor * x).sample  # in the VAE's dtype, as stock
        images = _numpy_images(pipe, (samples / 2 + 0.5).clamp(0, 1), a["output_type"])
        return ImagePipelineOutput(images=images) if a["return_dict"] else (images,)

    return _Prepared(Denoiser(model, pipe.scheduler), latents, loop, finish)


def _stable_diffusion(pipe, a: dict) -> _Prepared:
    kwargs = dict(a.get("kwargs") or {})
    unet = pipe.unet
    height, width = a["height"], a["width"]
    if not height or not width:  # stock: either missing resets both to the UNet's size
        size = unet.config.sample_size
        height, width = ((size, size) if isinstance(size, int) else tuple(size)[:2])
        height, width = height * pipe.vae_scale_factor, width * pipe.vae_scale_factor
    pipe.check_inputs(
        a["prompt"], height, width, kwargs.get("callback_steps"), a["negative_prompt"], a["prompt_embeds"], a["negative_prompt_embeds"],
        a["ip_adapter_image"], a["ip_adapter_image_embeds"], a["callback_on_step_end_tensor_inputs"],
    )
    legacy = legacy_callbacks(kwargs)
    pipe._guidance_scale, pipe._guidance_rescale = a["guidance_scale"], a["guidance_rescale"]
    pipe._clip_skip, pipe._cross_attention_kwargs, pipe._interrupt = a["clip_skip"], a["cross_attention_kwargs"], False
    prompt = a["prompt"]
    batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else a["prompt_embeds"].shape[0]
    device = pipe._execution_device
    attention = a["cross_attention_kwargs"]
    embeds, negative = pipe.encode_prompt(
        prompt, device, a["num_images_per_prompt"], pipe.do_classifier_free_guidance, a["negative_prompt"],
        prompt_embeds=a["prompt_embeds"], negative_prompt_embeds=a["negative_prompt_embeds"],
        lora_scale=attention.get("scale") if attention else None, clip_skip=pipe.clip_skip,
    )
    guided = pipe.do_classifier_free_guidance
    n = batch * a["num_images_per_prompt"]
    image_embeds = None
    if a["ip_adapter_image"] is not None or a["ip_adapter_image_embeds"] is not None:
        image_embeds = pipe.prepare_ip_adapter_image_embeds(a["ip_adapter_image"], a["ip_adapter_image_embeds"], device, n, guided)
    timesteps, _ = retrieve_timesteps(pipe.scheduler, a["num_inference_steps"], device, a["timesteps"], a["sigmas"])
    latents = pipe.prepare_latents(n, unet.config.in_channels, height, width, embeds.dtype, device, a["generator"], a["latents"])
    cond: dict = {"encoder_hidden_states": embeds}
    uncond: dict | None = {"encoder_hidden_states": negative} if guided else None
    if image_embeds is not None:  # each adapter's embeddings are stacked [uncond; cond] under guidance
        halves = [split_branches(e, guided) for e in image_embeds]
        cond["added_cond_kwargs"] = {"image_embeds": [c for _, c in halves]}
        if guided:
            uncond["added_cond_kwargs"] = {"image_embeds": [u for u, _ in halves]}
    if unet.config.time_cond_proj_dim is not None:
        scale = torch.tensor(a["guidance_scale"] - 1).repeat(n)
        cond["timestep_cond"] = pipe.get_guidance_scale_embedding(scale, embedding_dim=unet.config.time_cond_proj_dim).to(device=device, dtype=latents.dtype)
    if attention is not None:
        cond["cross_attention_kwargs"] = attention
    pipe._num_timesteps = len(timesteps)
    decode = _vae_decoder(pipe.vae)
    loop = dict(
        timesteps=timesteps,
        cond=cond,
        uncond=uncond,
        guidance_scale=a["guidance_scale"] if guided else 1.0,  # an LCM UNet takes the scale as an embedding instead
        guidance_rescale=a["guidance_rescale"],
        generator=a["generator"],
        eta=_stock_eta(pipe.scheduler, a["eta"]),
        decode=decode,
        interrupt=lambda: pipe._interrupt,
    )
    stock_embeds = torch.cat([negative, embeds]) if guided else embeds
    hooks = callback_hooks(pipe, a, {"prompt_embeds": stock_embeds, "negative_prompt_embeds": negative},
                            guided_embeds_read_back({"prompt_embeds": "encoder_hidden_states"})) + legacy

    def finish(x):
        if a["output_type"] == "latent":
            image, nsfw = x, None
        else:
            image = pipe.vae.decode(x / pipe.vae.config.scaling_factor, return_dict=False, generator=a["generator"])[0]
            image, nsfw = pipe.run_safety_checker(image, device, embeds.dtype)
        denormalize = [True] * image.shape[0] if nsfw is None else [not flagged for flagged in nsfw]
        image = pipe.image_processor.postprocess(image, output_type=a["output_type"], do_denormalize=denormalize)
        pipe.maybe_free_model_hooks()
        return StableDiffusionPipelineOutput(images=image, nsfw_content_detected=nsfw) if a["return_dict"] else (image, nsfw)

    return _Prepared(Denoiser(unet, pipe.scheduler), latents, loop, finish, hooks)


def _pixart(pipe, a: dict) -> _Prepared:
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN,
        ASPECT_RATIO_512_BIN,
        ASPECT_RATIO_1024_BIN,
    )

    if "mask_feature" in (a.get("kwargs") or {}):
        deprecate("mask_feature", "1.0.0", "The use of `mask_feature` is deprecated. It is no longer used in any computation and that doesn't affect the end "
                  "results. It will be removed in a future version.", standard_warn=False)
    model = pipe.transformer
    height = a["height"] or model.config.sample_size * pipe.vae_scale_factor
    width = a["width"] or model.config.sample_size * pipe.vae_scale_factor
    bins = {128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_256_BIN}
    binning = a["use_resolution_binning"]
    if binning:
        if model.config.sample_size not in bins:
            raise ArgumentError("Invalid sample size")  # stock's own message
        original = (height, width)
        height, width = pipe.image_processor.classify_height_width_bin(height, width, ratios=bins[model.config.sample_size])
    pipe.check_inputs(
        a["prompt"], height, width, a["negative_prompt"], a["callback_steps"], a["prompt_embeds"], a["negative_prompt_embeds"],
        a["prompt_attention_mask"], a["negative_prompt_attention_mask"],
    )
    prompt = a["prompt"]
    batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else a["prompt_embeds"].shape[0]
    device = pipe._execution_device
    guided = a["guidance_scale"] > 1.0
    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        prompt, guided, negative_prompt=a["negative_prompt"], num_images_per_prompt=a["num_images_per_prompt"],
        device=device, prompt_embeds=a["prompt_embeds"], negative_prompt_embeds=a["negative_prompt_embeds"],
        prompt_attention_mask=a["prompt_attention_mask"], negative_prompt_attention_mask=a["negative_prompt_attention_mask"],
        clean_caption=a["clean_caption"], max_sequence_length=a["max_sequence_length"],
    )
    timesteps, steps = retrieve_timesteps(pipe.scheduler, a["num_inference_steps"], device, a["timesteps"], a["sigmas"])
    n = batch * a["num_images_per_prompt"]
    latents = pipe.prepare_latents(n, model.config.in_channels, height, width, embeds.dtype, device, a["generator"], a["latents"])
    added = {"resolution": None, "aspect_ratio": None}
    if model.config.sample_size == 128:
        added = {
            "resolution": torch.tensor([height, width]).repeat(n, 1).to(dtype=embeds.dtype, device=device),
            "aspect_ratio": torch.tensor([float(height / width)]).repeat(n, 1).to(dtype=embeds.dtype, device=device),
        }
    if hasattr(pipe.scheduler, "set_begin_index"):
        pipe.scheduler.set_begin_index(0)
    loop = dict(
        timesteps=timesteps,
        cond={"encoder_hidden_states": embeds, "encoder_attention_mask": mask, "added_cond_kwargs": added},
        uncond={"encoder_hidden_states": negative, "encoder_attention_mask": negative_mask, "added_cond_kwargs": added} if guided else None,
        guidance_scale=a["guidance_scale"],
        generator=a["generator"],
        eta=_stock_eta(pipe.scheduler, a["eta"]),
        decode=_vae_decoder(pipe.vae),
    )

    def finish(x):
        if a["output_type"] == "latent":
            image = x
        else:
            image = pipe.vae.decode(x / pipe.vae.config.scaling_factor, return_dict=False)[0]
            if binning:
                image = pipe.image_processor.resize_and_crop_tensor(image, original[1], original[0])
            image = pipe.image_processor.postprocess(image, output_type=a["output_type"])
        pipe.maybe_free_model_hooks()
        return ImagePipelineOutput(images=image) if a["return_dict"] else (image,)

    hooks = [_LastStepDenoised()] if steps == 1 else []
    if a["callback"] is not None:  # ordinary arguments of PixArt-α's call (no deprecation there)
        hooks.append(LegacyCallback(a["callback"], a["callback_steps"]))
    return _Prepared(Denoiser(model, pipe.scheduler), latents, loop, finish, hooks)


class _SkipLayerGuidance(SamplingHook):
    """SD3's skip-layer guidance: inside the step window, add scale * (cond - cond with `layers` skipped),
    one more (conditional, unguided) transformer call per sample, as the stock loop makes it."""

    def __init__(self, layers, scale: float, start: float, stop: float, cond: dict):
        self.layers, self.scale, self.start, self.stop, self.cond = list(layers), scale, start, stop, cond

    def denoiser(self, step, current):
        if not step.index > step.num_steps * self.start or not step.index < step.num_steps * self.stop:
            return current
        return _SkipLayerDenoiser(current, self)


class _SkipLayerDenoiser(Denoiser):
    def __init__(self, inner: Denoiser, guidance: _SkipLayerGuidance):
        self.__dict__.update(inner.__dict__)
        self._inner, self._guidance = inner, guidance

    def __call__(self, x, t, cond=None, uncond=None, guidance_scale=1.0, guidance_rescale=0.0):
        if uncond is None or guidance_scale <= 1:
            return self._inner(x, t, cond=cond)
        eps_uncond, eps_cond, _ = self._inner.branches(x, t, cond, uncond)
        guided = guidance_combine(eps_uncond, eps_cond, guidance_scale, guidance_rescale)
        skipped = self._inner.forward(x, t, {**self._guidance.cond, "skip_layers": self._guidance.layers})
        output = guided + (eps_cond - skipped) * self._guidance.scale
        return DenoiserOutput(output=output, evaluations=3 * x.shape[0], x0_fn=lambda: self.x0(x, output, t))


def _sd3(pipe, a: dict) -> _Prepared:
    from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    model = pipe.transformer
    height = a["height"] or pipe.default_sample_size * pipe.vae_scale_factor
    width = a["width"] or pipe.default_sample_size * pipe.vae_scale_factor
    pipe.check_inputs(
        a["prompt"], a["prompt_2"], a["prompt_3"], height, width,
        negative_prompt=a["negative_prompt"], negative_prompt_2=a["negative_prompt_2"], negative_prompt_3=a["negative_prompt_3"],
        prompt_embeds=a["prompt_embeds"], negative_prompt_embeds=a["negative_prompt_embeds"],
        pooled_prompt_embeds=a["pooled_prompt_embeds"], negative_pooled_prompt_embeds=a["negative_pooled_prompt_embeds"],
        callback_on_step_end_tensor_inputs=a["callback_on_step_end_tensor_inputs"], max_sequence_length=a["max_sequence_length"],
    )
    pipe._guidance_scale, pipe._clip_skip = a["guidance_scale"], a["clip_skip"]
    pipe._joint_attention_kwargs, pipe._interrupt = a["joint_attention_kwargs"], False
    pipe._skip_layer_guidance_scale = a["skip_layer_guidance_scale"]
    prompt = a["prompt"]
    batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else a["prompt_embeds"].shape[0]
    device = pipe._execution_device
    attention = a["joint_attention_kwargs"]
    guided = pipe.do_classifier_free_guidance
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompt, prompt_2=a["prompt_2"], prompt_3=a["prompt_3"], negative_prompt=a["negative_prompt"],
        negative_prompt_2=a["negative_prompt_2"], negative_prompt_3=a["negative_prompt_3"], do_classifier_free_guidance=guided,
        prompt_embeds=a["prompt_embeds"], negative_prompt_embeds=a["negative_prompt_embeds"],
        pooled_prompt_embeds=a["pooled_prompt_embeds"], negative_pooled_prompt_embeds=a["negative_pooled_prompt_embeds"],
        device=device, clip_skip=pipe.clip_skip, num_images_per_prompt=a["num_images_per_prompt"],
        max_sequence_length=a["max_sequence_length"], lora_scale=attention.get("scale") if attention else None,
    )
    n = batch * a["num_images_per_prompt"]
    latents = pipe.prepare_latents(n, model.config.in_channels, height, width, embeds.dtype, device, a["generator"], a["latents"])
    scheduler_kwargs = {}
    mu = a["mu"]
    if pipe.scheduler.config.get("use_dynamic_shifting", None) and mu is None:
        seq = (latents.shape[2] // model.config.patch_size) * (latents.shape[3] // model.config.patch_size)
        config = pipe.scheduler.config
        mu = calculate_shift(seq, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5), config.get("max_shift", 1.16))
    if mu is not None:
        scheduler_kwargs["mu"] = mu
    timesteps, steps = retrieve_timesteps(pipe.scheduler, a["num_inference_steps"], device, sigmas=a["sigmas"], **scheduler_kwargs)
    pipe._num_timesteps = len(timesteps)
    if (a["ip_adapter_image"] is not None and pipe.is_ip_adapter_active) or a["ip_adapter_image_embeds"] is not None:
        # as stock: the embeddings ride in joint_attention_kwargs, stacked [uncond; cond] like the guided batch
        image_embeds = pipe.prepare_ip_adapter_image_embeds(a["ip_adapter_image"], a["ip_adapter_image_embeds"], device, n, guided)
        pipe._joint_attention_kwargs = {**(attention or {}), "ip_adapter_image_embeds": image_embeds}
        attention = pipe._joint_attention_kwargs
    cond = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
    if attention is not None:
        cond["joint_attention_kwargs"] = attention
    loop = dict(
        timesteps=timesteps,
        cond=cond,
        uncond={"encoder_hidden_states": negative, "pooled_projections": negative_pooled} if guided else None,
        guidance_scale=a["guidance_scale"],
        generator=a["generator"],
        decode=_vae_decoder(pipe.vae, shift=True),
        interrupt=lambda: pipe._interrupt,
    )
    hooks = []
    if a["skip_guidance_layers"] is not None and guided:
        hooks.append(_SkipLayerGuidance(a["skip_guidance_layers"], a["skip_layer_guidance_scale"], a["skip_layer_guidance_start"], a["skip_layer_guidance_stop"], cond))
    stock_embeds = torch.cat([negative, embeds]) if guided else embeds
    stock_pooled = torch.cat([negative_pooled, pooled]) if guided else pooled
    hooks += callback_hooks(pipe, a, {"prompt_embeds": stock_embeds, "pooled_prompt_embeds": stock_pooled},
                             guided_embeds_read_back({"prompt_embeds": "encoder_hidden_states", "pooled_prompt_embeds": "pooled_projections"}))

    def finish(x):
        if a["output_type"] == "latent":
            image = x
        else:
            z = x / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
            image = pipe.image_processor.postprocess(pipe.vae.decode(z, return_dict=False)[0], output_type=a["output_type"])
        pipe.maybe_free_model_hooks()
        return StableDiffusion3PipelineOutput(images=image) if a["return_dict"] else (image,)

    return _Prepared(Denoiser(model, pipe.scheduler), latents, loop, finish, hooks)


# Most specific first: subclasses of these (e.g. gen's own pipelines) are matched by isinstance. A `Family`
# runs the stock call itself with gen's loop inside it (gen.pipelines.stock_loop); a function re-derives it.
_ADAPTERS: list[tuple[type, Callable | Family]] = [
    (DDIMPipeline, _unconditional),
    (DDPMPipeline, _unconditional),
    (DiTPipeline, _dit),
    (StableDiffusionPipeline, _stable_diffusion),
    (PixArtAlphaPipeline, _pixart),
    (StableDiffusion3Pipeline, _sd3),
    (StableDiffusionXLPipeline, sdxl.FAMILY),
    (StableDiffusionXLImg2ImgPipeline, sdxl.FAMILY),
    (FluxPipeline, flux.FAMILY),
    (SanaPipeline, sana.FAMILY),
    (PixArtSigmaPipeline, pixart_sigma.FAMILY),
    (Lumina2Pipeline, lumina2.FAMILY),
    (AuraFlowPipeline, auraflow.FAMILY),
    (QwenImagePipeline, qwen_image.FAMILY),
    (ZImagePipeline, z_image.FAMILY),
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
        bound = inspect.signature(stock_call).bind(*args, **kwargs)
    except TypeError as err:
        raise ArgumentTypeError(f"{type(pipe).__name__}.__call__: {err}") from None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    var_keyword = next((p.name for p in inspect.signature(stock_call).parameters.values() if p.kind is p.VAR_KEYWORD), None)
    if var_keyword is not None:
        arguments["kwargs"] = arguments.pop(var_keyword, {})
    _check_common_arguments(pipe, arguments)
    if isinstance(adapter, Family):
        for name in ("callback_on_step_end_tensor_inputs",):  # as resolved from a PipelineCallback
            if name in bound.arguments:
                bound.arguments[name] = arguments[name]
        stock, counts = run_stock(pipe, adapter, stock_call, bound, hooks, trace)
        return _with_counts_of(pipe, stock, counts)
    prepared = adapter(pipe, arguments)
    generator, rows = prepared.loop.get("generator"), prepared.latents.shape[0]
    if isinstance(generator, list) and len(generator) > rows:  # stock draws with the first `rows` of a longer list
        prepared.loop["generator"] = generator[:rows]
    result: SampleOutput = sample(prepared.denoiser, prepared.latents, hooks=prepared.hooks + hooks, trace=trace, progress_bar=pipe.progress_bar, **prepared.loop)
    stock = prepared.finish(result.samples)
    counts = {"nfe": result.nfe, "reward_calls": result.reward_calls, "decodes": result.decodes, "trace": result.trace}
    return _with_counts_of(pipe, stock, counts)


def _with_counts_of(pipe, stock, counts: dict):
    pipe.last_counts = counts
    if isinstance(stock, tuple):
        return stock
    fields = {f.name: getattr(stock, f.name) for f in dataclasses.fields(stock)}
    return _with_counts(type(stock))(**fields, **counts)


def _check_common_arguments(pipe, a: dict) -> None:
    """Arguments every stock loop fails on with a raw torch error (or none): named here, before any work.
    Only inputs stock cannot run are refused; a `PipelineCallback`'s tensor names are taken as stock takes
    them (they replace `callback_on_step_end_tensor_inputs`) and checked as stock checks them."""
    from gen.errors import require_int

    for name in ("batch_size", "num_images_per_prompt"):
        if a.get(name) is not None:
            require_int(a[name], name, minimum=1)
    latents = a.get("latents")
    if isinstance(latents, torch.Tensor):
        backbone = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if backbone is not None and latents.is_floating_point() and latents.dtype != backbone.dtype and latents.dtype == torch.float64:
            raise ArgumentError(f"latents: float64 latents for a {str(backbone.dtype).replace('torch.', '')} {type(backbone).__name__}; "
                                f"pass latents.to({str(backbone.dtype)}).")
    callback = a.get("callback_on_step_end")
    if callback is not None and getattr(callback, "tensor_inputs", None) is not None and "callback_on_step_end_tensor_inputs" in a:
        a["callback_on_step_end_tensor_inputs"] = callback.tensor_inputs
    names = a.get("callback_on_step_end_tensor_inputs")
    allowed = getattr(pipe, "_callback_tensor_inputs", None)
    if callback is not None and names is not None and allowed is not None and not all(k in allowed for k in names):
        raise ArgumentError(f"`callback_on_step_end_tensor_inputs` has to be in {allowed}, but found {[k for k in names if k not in allowed]}")


def _call_signature(cls: type) -> inspect.Signature:
    """The stock __call__'s signature with keyword-only `hooks` and `trace` before any **kwargs."""
    signature = inspect.signature(cls.__call__)
    params = list(signature.parameters.values())
    extra = [inspect.Parameter("hooks", inspect.Parameter.KEYWORD_ONLY, default=(), annotation="Sequence[SamplingHook]"),
             inspect.Parameter("trace", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool)]
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    return signature.replace(parameters=params[:at] + extra + params[at:])


@functools.lru_cache(maxsize=None)
def steered_class(cls: type) -> type:
    """The steered subclass of a stock pipeline class (same name, so save_pretrained writes the stock name)."""
    adapter = _adapter_for(cls)

    def __call__(self, *args, hooks=(), trace: bool = False, **kwargs):
        with torch.no_grad():
            return _run(self, adapter, args, kwargs, hooks, trace)

    __call__.__signature__ = _call_signature(cls)
    __call__.__doc__ = f"{cls.__name__}'s call, run through gen's loop: the stock arguments, plus `hooks` (gen.SamplingHook list) and `trace`.\n\n{cls.__call__.__doc__ or ''}"
    return type(cls.__name__, (SteeredPipeline, cls), {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__})


def steer(pipe):
    """The pipeline, steerable: an instance of a subclass of its own class sharing all its state, whose call
    takes `hooks=[...]` and `trace=` (see the module docstring). DDPM, DDIM, DiT, Stable Diffusion, PixArt-α,
    SD3, SDXL (text-to-image, img2img), Flux, SANA, PixArt-Σ, Lumina 2, AuraFlow, Qwen-Image and Z-Image
    pipelines (and their subclasses) are supported."""
    if isinstance(pipe, SteeredPipeline):
        return pipe
    cls = steered_class(type(pipe))
    steered = object.__new__(cls)
    object.__setattr__(steered, "__dict__", pipe.__dict__)  # one state: components, config, progress-bar settings
    return steered
