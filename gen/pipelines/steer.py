"""`steer(pipe)`: run an existing diffusers pipeline through gen's loop, with hooks.

    >>> pipe = StableDiffusionPipeline.from_pretrained(...)
    >>> out = steer(pipe)("a photo of a cat", num_inference_steps=30, hooks=[CADS()])
    >>> out.images, out.nfe, out.reward_calls

The stock arguments keep their stock meaning and defaults. Each adapter prepares the inputs with the
pipeline's own methods (`check_inputs`, `encode_prompt`, `prepare_latents`, `retrieve_timesteps`), runs
`gen.sample`, and finishes with the pipeline's own decoding and post-processing, so the output is the
stock output type, with `nfe`, `reward_calls`, `decodes` (per sample) and `trace` added.
With no hooks the result equals the stock pipeline's. One difference by design: gen passes the
generator to `scheduler.step` for DiT and SD3 too (their stock loops draw step noise from the global
RNG), so with a stochastic scheduler those two draw other noise than stock, from the same distribution.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import (
    DDIMPipeline,
    DDPMPipeline,
    DiTPipeline,
    PixArtAlphaPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
)
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor

from gen.core.denoiser import Denoiser
from gen.core.hooks import SamplingHook, check_hooks
from gen.core.sampling import SampleOutput, sample


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


def _refuse(args: dict, names: tuple[str, ...], pipeline: str) -> None:
    """A clear error for stock arguments (None by default) that gen's loop does not reproduce."""
    for name in names:
        if args.get(name) is not None:
            raise ValueError(f"{name}: not supported by gen.pipelines.steer for {pipeline} yet; leave it unset.")


class _StockCallback(SamplingHook):
    """`callback_on_step_end` as the stock loops call it: after each step, may replace the latents."""

    def __init__(self, pipe, callback, tensor_inputs, tensors: dict[str, torch.Tensor]):
        self.pipe, self.callback, self.tensor_inputs, self.tensors = pipe, callback, tensor_inputs, tensors

    def transition(self, state, ctx):
        new = ctx.proceed(state)
        values = {**self.tensors, "latents": new.x}
        result = self.callback(self.pipe, state.step.index, state.step.timestep, {k: values[k] for k in self.tensor_inputs})
        latents = (result or {}).get("latents", new.x)
        return new if latents is new.x else ctx.next_state(latents)


class _LastStepDenoised(SamplingHook):
    """PixArt's one-step convention: the final state is the scheduler's denoised output."""

    def transition(self, state, ctx):
        if not ctx.is_last:
            return ctx.proceed(state)
        result = ctx.scheduler.step(state.model_output, state.step.timestep, state.x, return_dict=False)
        return ctx.next_state(result[1])


def _callback_hooks(pipe, args, tensors) -> list:
    callback = args.get("callback_on_step_end")
    if callback is None:
        return []
    inputs = getattr(callback, "tensor_inputs", None) or args.get("callback_on_step_end_tensor_inputs") or ["latents"]
    return [_StockCallback(pipe, callback, inputs, tensors)]


# -- adapters: one per stock pipeline family ------------------------------------------------------------------------
def _unconditional(pipe, a: dict) -> _Prepared:
    unet = pipe.unet
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = a["batch_size"]
    if isinstance(a["generator"], list) and len(a["generator"]) != batch:
        raise ValueError(f"generator: {len(a['generator'])} generators for batch_size={batch}; pass one per image.")
    latents = randn_tensor((batch, unet.config.in_channels, *size), generator=a["generator"], device=pipe._execution_device, dtype=unet.dtype)
    loop = dict(num_inference_steps=a["num_inference_steps"], generator=a["generator"], eta=a.get("eta"), decode=_pixel_images)

    def finish(x):
        images = _numpy_images(pipe, _pixel_images(x), a["output_type"])
        return ImagePipelineOutput(images=images) if a["return_dict"] else (images,)

    return _Prepared(Denoiser(unet, pipe.scheduler), latents, loop, finish)


def _dit(pipe, a: dict) -> _Prepared:
    model = pipe.transformer
    device = pipe._execution_device
    labels = torch.tensor(a["class_labels"], device=device).reshape(-1)
    batch = len(labels)
    size = model.config.sample_size
    latents = randn_tensor((batch, model.config.in_channels, size, size), generator=a["generator"], device=device, dtype=model.dtype)
    null = torch.full_like(labels, model.config.num_embeds_ada_norm)
    decode = _vae_decoder(pipe.vae)
    loop = dict(
        num_inference_steps=a["num_inference_steps"],
        cond={"class_labels": labels},
        uncond={"class_labels": null},
        guidance_scale=a["guidance_scale"],
        generator=a["generator"],
        decode=decode,
    )

    def finish(x):
        samples = pipe.vae.decode(1 / pipe.vae.config.scaling_factor * x).sample  # in the VAE's dtype, as stock
        images = _numpy_images(pipe, (samples / 2 + 0.5).clamp(0, 1), a["output_type"])
        return ImagePipelineOutput(images=images) if a["return_dict"] else (images,)

    return _Prepared(Denoiser(model, pipe.scheduler), latents, loop, finish)


def _stable_diffusion(pipe, a: dict) -> _Prepared:
    _refuse(a, ("ip_adapter_image", "ip_adapter_image_embeds"), "StableDiffusionPipeline")
    if a.get("kwargs"):
        raise ValueError(f"{sorted(a['kwargs'])}: deprecated callback arguments are not supported; use callback_on_step_end.")
    unet = pipe.unet
    height = a["height"] or unet.config.sample_size * pipe.vae_scale_factor
    width = a["width"] or unet.config.sample_size * pipe.vae_scale_factor
    pipe.check_inputs(
        a["prompt"], height, width, None, a["negative_prompt"], a["prompt_embeds"], a["negative_prompt_embeds"],
        None, None, a["callback_on_step_end_tensor_inputs"],
    )
    pipe._guidance_scale, pipe._guidance_rescale = a["guidance_scale"], a["guidance_rescale"]
    pipe._clip_skip, pipe._cross_attention_kwargs, pipe._interrupt = a["clip_skip"], a["cross_attention_kwargs"], False
    prompt = a["prompt"]
    batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else a["prompt_embeds"].shape[0]
    device = pipe._execution_device
    attention = a["cross_attention_kwargs"]
    embeds, negative = pipe.encode_prompt(
        prompt, device, a["num_images_per_prompt"], pipe.do_classifier_free_guidance, a["negative_prompt"],
        prompt_embeds=a["prompt_embeds"], negative_prompt_embeds=a["negative_prompt_embeds"],
        lora_scale=attention.get("scale") if attention else None, clip_skip=a["clip_skip"],
    )
    timesteps, _ = retrieve_timesteps(pipe.scheduler, a["num_inference_steps"], device, a["timesteps"], a["sigmas"])
    n = batch * a["num_images_per_prompt"]
    latents = pipe.prepare_latents(n, unet.config.in_channels, height, width, embeds.dtype, device, a["generator"], a["latents"])
    cond: dict = {"encoder_hidden_states": embeds}
    if unet.config.time_cond_proj_dim is not None:
        scale = torch.tensor(a["guidance_scale"] - 1).repeat(n)
        cond["timestep_cond"] = pipe.get_guidance_scale_embedding(scale, embedding_dim=unet.config.time_cond_proj_dim).to(device=device, dtype=latents.dtype)
    if attention is not None:
        cond["cross_attention_kwargs"] = attention
    guided = pipe.do_classifier_free_guidance
    pipe._num_timesteps = len(timesteps)
    decode = _vae_decoder(pipe.vae)
    loop = dict(
        timesteps=timesteps,
        cond=cond,
        uncond={"encoder_hidden_states": negative} if guided else None,
        guidance_scale=a["guidance_scale"],
        guidance_rescale=a["guidance_rescale"],
        generator=a["generator"],
        eta=a["eta"],
        decode=decode,
    )
    stock_embeds = torch.cat([negative, embeds]) if guided else embeds
    hooks = _callback_hooks(pipe, a, {"prompt_embeds": stock_embeds, "negative_prompt_embeds": negative})

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

    _refuse(a, ("callback",), "PixArtAlphaPipeline")
    model = pipe.transformer
    height = a["height"] or model.config.sample_size * pipe.vae_scale_factor
    width = a["width"] or model.config.sample_size * pipe.vae_scale_factor
    bins = {128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_256_BIN}
    binning = a["use_resolution_binning"]
    if binning:
        if model.config.sample_size not in bins:
            raise ValueError(
                f"use_resolution_binning: PixArt bins exist for sample sizes {sorted(bins)}, not "
                f"{model.config.sample_size}; pass use_resolution_binning=False."
            )
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
    decode = _vae_decoder(pipe.vae)
    loop = dict(
        timesteps=timesteps,
        cond={"encoder_hidden_states": embeds, "encoder_attention_mask": mask, "added_cond_kwargs": added},
        uncond={"encoder_hidden_states": negative, "encoder_attention_mask": negative_mask, "added_cond_kwargs": added} if guided else None,
        guidance_scale=a["guidance_scale"],
        generator=a["generator"],
        eta=a["eta"],
        decode=decode,
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
    return _Prepared(Denoiser(model, pipe.scheduler), latents, loop, finish, hooks)


def _sd3(pipe, a: dict) -> _Prepared:
    from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    _refuse(a, ("ip_adapter_image", "ip_adapter_image_embeds", "skip_guidance_layers"), "StableDiffusion3Pipeline")
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
        device=device, clip_skip=a["clip_skip"], num_images_per_prompt=a["num_images_per_prompt"],
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
    timesteps, _ = retrieve_timesteps(pipe.scheduler, a["num_inference_steps"], device, sigmas=a["sigmas"], **scheduler_kwargs)
    pipe._num_timesteps = len(timesteps)
    cond = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
    if attention is not None:
        cond["joint_attention_kwargs"] = attention
    decode = _vae_decoder(pipe.vae, shift=True)
    loop = dict(
        timesteps=timesteps,
        cond=cond,
        uncond={"encoder_hidden_states": negative, "pooled_projections": negative_pooled} if guided else None,
        guidance_scale=a["guidance_scale"],
        generator=a["generator"],
        decode=decode,
    )
    stock_embeds = torch.cat([negative, embeds]) if guided else embeds
    stock_pooled = torch.cat([negative_pooled, pooled]) if guided else pooled
    hooks = _callback_hooks(pipe, a, {"prompt_embeds": stock_embeds, "pooled_prompt_embeds": stock_pooled})

    def finish(x):
        if a["output_type"] == "latent":
            image = x
        else:
            z = x / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
            image = pipe.image_processor.postprocess(pipe.vae.decode(z, return_dict=False)[0], output_type=a["output_type"])
        pipe.maybe_free_model_hooks()
        return StableDiffusion3PipelineOutput(images=image) if a["return_dict"] else (image,)

    return _Prepared(Denoiser(model, pipe.scheduler), latents, loop, finish, hooks)


# Most specific first: subclasses of these (e.g. gen's own pipelines) are matched by isinstance.
_ADAPTERS: list[tuple[type, Callable]] = [
    (DDIMPipeline, _unconditional),
    (DDPMPipeline, _unconditional),
    (DiTPipeline, _dit),
    (StableDiffusionPipeline, _stable_diffusion),
    (PixArtAlphaPipeline, _pixart),
    (StableDiffusion3Pipeline, _sd3),
]


@functools.lru_cache(maxsize=None)
def _with_counts(output_class: type) -> type:
    """The stock output dataclass extended with gen's counts (isinstance of the stock class still holds)."""
    return dataclasses.make_dataclass(
        f"Steered{output_class.__name__}",
        [("nfe", float, 0.0), ("reward_calls", float, 0.0), ("decodes", float, 0.0), ("trace", Any, None)],
        bases=(output_class,),
    )


class SteeredPipeline:
    """A diffusers pipeline whose denoising runs through `gen.sample` (see `steer`)."""

    def __init__(self, pipe):
        for cls, adapter in _ADAPTERS:
            if isinstance(pipe, cls):
                self.pipe, self._adapter = pipe, adapter
                return
        names = ", ".join(cls.__name__ for cls, _ in _ADAPTERS)
        raise TypeError(f"pipe: steer() supports {names}; got {type(pipe).__name__}.")

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    @torch.no_grad()
    def __call__(self, *args, hooks=(), trace: bool = False, **kwargs):
        """The stock call, with `hooks` (gen.SamplingHook list) and `trace` added."""
        hooks = check_hooks(hooks)
        try:
            bound = inspect.signature(self.pipe.__call__).bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{type(self.pipe).__name__} arguments: {err}") from None
        bound.apply_defaults()
        prepared = self._adapter(self.pipe, dict(bound.arguments))
        result: SampleOutput = sample(
            prepared.denoiser,
            prepared.latents,
            hooks=prepared.hooks + hooks,
            trace=trace,
            progress_bar=self.pipe.progress_bar,
            **prepared.loop,
        )
        stock = prepared.finish(result.samples)
        counts = {"nfe": result.nfe, "reward_calls": result.reward_calls, "decodes": result.decodes, "trace": result.trace}
        if isinstance(stock, tuple):
            return (*stock, counts)
        fields = {f.name: getattr(stock, f.name) for f in dataclasses.fields(stock)}
        return _with_counts(type(stock))(**fields, **counts)


def steer(pipe) -> SteeredPipeline:
    """Wrap a DDPM, DDIM, DiT, Stable Diffusion, PixArt-α or SD3 pipeline so its call takes `hooks=[...]`."""
    return SteeredPipeline(pipe)
