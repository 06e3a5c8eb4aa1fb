"""What gen's own pipelines share: the backbone (``unet`` or ``transformer``), an optional VAE, latents,
decoding, post-processing and the output with its counts. Each pipeline file adds only how its
condition is prepared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from gen.errors import ArgumentError
from gen.core.backbones import Backbone, Condition, supported_backbones
from gen.core.denoiser import Denoiser
from gen.core.hooks import check_hooks
from gen.core.sampling import SampleOutput, check_generator, check_guidance_scale, check_steps, sample
from gen.pipelines.loading import STUB_MODULE, stub_source

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class _EmptyFloat32ListFilter:
    """diffusers 0.42's ModelMixin.to warns "should be kept in float32: []" on every dtype cast, also for a
    model with no such module (its list defaults to [] where the check expects None); gen casts in from_pipe,
    so every large-image run printed it twice. Only that empty-list form is dropped; a real list still warns."""

    def filter(self, record) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def _quiet_empty_float32_warning() -> None:
    from diffusers.utils import logging

    logger = logging.get_logger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _EmptyFloat32ListFilter) for f in logger.filters):
        logger.addFilter(_EmptyFloat32ListFilter())


_quiet_empty_float32_warning()


@dataclass
class GenPipelineOutput(BaseOutput):
    """Images (PIL list, numpy or torch, or raw latents for output_type="latent") and what they cost per
    sample: backbone evaluations (nfe), reward evaluations, decodes; plus the optional per-step trace."""

    images: Any
    nfe: float
    reward_calls: float = 0.0
    decodes: float = 0.0
    trace: list | None = None


class GenPipeline(DiffusionPipeline):
    """Base for gen's pipelines. Subclasses register ``unet`` or ``transformer``, ``scheduler`` and
    optionally ``vae``, and call `generate` from their ``__call__``.

    Saved folders record their class the diffusers way for custom pipelines: model_index.json's
    ``_class_name`` is ``["gen_pipeline", "<Class>"]`` and the folder holds a one-line gen_pipeline.py that
    imports the class from gen, so ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``
    loads it; ``<Class>.from_pretrained(folder)`` never imports that file (nor any other of the folder's):
    it finds the class by name in gen."""

    _optional_components = ["unet", "transformer", "vae"]
    _callback_tensor_inputs = ["latents"]
    _guidance_scale, _interrupt, _num_timesteps = 1.0, False, 0
    last_counts: dict | None = None

    def save_pretrained(self, save_directory, *args, **kwargs):
        import json
        from pathlib import Path

        from gen.io import write_json, write_text

        super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        index = json.loads((folder / "model_index.json").read_text())
        index["_class_name"] = [STUB_MODULE, type(self).__name__]
        write_text(folder / f"{STUB_MODULE}.py", stub_source(type(self).__name__))
        write_json(folder / "model_index.json", index)

    def load_lora_weights(self, folder, adapter_scale: float = 1.0) -> None:
        """Load a LoRA that gen's trainer wrote (`--lora-rank`) into the backbone, as diffusers' loader mixins
        do for Stable Diffusion (UNet2DModel and DiT have none)."""
        from gen.core.lora import load_lora

        load_lora(self.backbone, folder, scale=adapter_scale)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' `from_pretrained`, without running any code from the folder: the class is gen's own,
        found by the name model_index.json records (a subclass of `cls` is loaded as itself, so
        ``GenPipeline.from_pretrained(folder)`` gives the saved class), and every component is checked first
        (`gen.pipelines.loading.check_folder`). ``trust_remote_code=True`` is passed on to diffusers as the
        caller's explicit choice."""
        import os
        from pathlib import Path

        from gen.pipelines.loading import check_folder, read_index

        folder = Path(str(pretrained_model_name_or_path))
        if kwargs.get("trust_remote_code") or not folder.is_dir():  # the caller's own choice, or a hub id: stock diffusers decides
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        saved = check_folder(folder, read_index(folder, "pretrained_model_name_or_path"), "pretrained_model_name_or_path")
        target = saved if isinstance(saved, type) and issubclass(saved, cls) else cls
        return super(GenPipeline, target).from_pretrained(os.fspath(pretrained_model_name_or_path), **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """model_index.json with gen's ``["gen_pipeline", Class]`` read as the plain class name, so diffusers'
        loader takes the class from gen (it would otherwise import the folder's gen_pipeline.py)."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        entry = config.get("_class_name") if isinstance(config, dict) else None
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == STUB_MODULE:
            config["_class_name"] = entry[1]
        return loaded

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """diffusers' `from_pipe`, except that without `dtype`/`torch_dtype` the new pipeline keeps the source's
        dtype: stock casts to float32, and since the two share their modules that would also turn the
        source (say an fp16 pipeline on a GPU) into float32 in place."""
        if kwargs.get("dtype") is None and kwargs.get("torch_dtype") is None:
            kwargs["dtype"] = pipeline.dtype
        return super().from_pipe(pipeline, **kwargs)

    @classmethod
    def _get_signature_types(cls):
        # The components are unannotated because any backbone gen.Denoiser supports may fill them;
        # `from_pipe` moves a model component over only when its type is listed here.
        types = super()._get_signature_types()
        backbones = (*supported_backbones(), type(None))
        types.update(unet=backbones, transformer=backbones, vae=(AutoencoderKL, AutoencoderTiny, type(None)))
        return types

    @property
    def backbone(self):
        return self.unet if getattr(self, "unet", None) is not None else self.transformer

    @property
    def vae_scale_factor(self) -> int:
        vae = getattr(self, "vae", None)
        return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1

    def denoiser(self) -> Denoiser:
        return Denoiser(self.backbone, self.scheduler)

    def latent_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        """The latent (or pixel) size for an image of height x width (None: the model's own size)."""
        size = self.backbone.config.sample_size
        default = (size, size) if isinstance(size, int) else tuple(size)
        f = self.vae_scale_factor
        multiple = f * Backbone(self.backbone).spec.spatial_multiple(self.backbone.config)
        for name, value in (("height", height), ("width", width)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < multiple or value % multiple:
                raise ArgumentError(f"{name}: must be a positive multiple of {multiple} (the VAE factor times the backbone's downsampling), got {value!r}.")
        return ((height // f) if height else default[0], (width // f) if width else default[1])

    def prepare_latents(self, batch: int, height: int | None, width: int | None, generator, latents=None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Initial noise for `batch` samples (drawn as diffusers draws it), or the given latents checked and placed;
        in `dtype` (default: the backbone's)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ArgumentError(f"batch_size: must be an integer >= 1, got {batch!r}.")
        dtype = dtype or self.backbone.dtype
        shape = (batch, self.backbone.config.in_channels, *self.latent_size(height, width))
        check_memory(shape, dtype, self._execution_device)
        check_generator(generator, batch)
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
                raise ArgumentError(f"latents: expected a tensor of shape {shape}, got {tuple(getattr(latents, 'shape', ())) or type(latents).__name__}.")
            return latents.to(self._execution_device, dtype)
        x = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)
        return x * self.scheduler.init_noise_sigma

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (through the VAE where there is one)."""
        vae = getattr(self, "vae", None)
        if vae is not None:
            z = latents / vae.config.scaling_factor
            if vae.config.get("shift_factor") is not None:
                z = z + vae.config.shift_factor
            latents = vae.decode(z.to(vae.dtype), return_dict=False)[0].float()
        return (latents / 2 + 0.5).clamp(0, 1)

    @property
    def image_processor(self) -> VaeImageProcessor:
        """diffusers' image processor for this pipeline's outputs (and inputs; see gen.pipelines.images)."""
        return VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_resize=False)

    def postprocess(self, images: torch.Tensor, output_type: str):
        """Decoded images in [0, 1] -> `output_type`, as stock pipelines do it (VaeImageProcessor.postprocess)."""
        return self.image_processor.postprocess(images, output_type=output_type, do_denormalize=[False] * len(images))

    def check_common(self, num_inference_steps, output_type, hooks, guidance_scale) -> list:
        check_steps(num_inference_steps, None)
        most = self.scheduler.config.get("num_train_timesteps")
        if most and num_inference_steps > most:
            raise ArgumentError(f"num_inference_steps: {num_inference_steps} is more than the scheduler's {most} training timesteps; use at most {most}.")
        if output_type not in OUTPUT_TYPES:
            raise ArgumentError(f"output_type: must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        check_guidance_scale(guidance_scale)
        return check_hooks(hooks)

    def generate(
        self,
        latents: torch.Tensor,
        cond: Condition | None,
        uncond: Condition | None,
        *,
        guidance_scale: float,
        num_inference_steps: int,
        generator,
        eta: float | None,
        hooks: list,
        trace: bool,
        output_type: str,
        return_dict: bool,
        denoiser: Denoiser | None = None,
        output_class: type | None = None,
        timesteps=None,
        sigmas=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
        callback_tensors: dict | None = None,
        guider=None,
        **extra_output,
    ):
        """Run the loop and finish: decode, post-process, the output with its counts. Stock conventions:
        custom `timesteps`/`sigmas` (where the scheduler takes them, via diffusers' retrieve_timesteps),
        `callback_on_step_end` with the tensors in `_callback_tensor_inputs` (it may replace them, change
        `pipe._guidance_scale` or set `pipe._interrupt`), `return_dict=False` giving `(images,)` (the counts
        are then in `pipe.last_counts`)."""
        from gen.pipelines.callbacks import StockCallback

        self._guidance_scale, self._interrupt = guidance_scale, False
        callbacks = []
        if callback_on_step_end is not None:
            inputs = list(getattr(callback_on_step_end, "tensor_inputs", None) or callback_on_step_end_tensor_inputs)
            unknown = sorted(set(inputs) - set(self._callback_tensor_inputs))
            if unknown:
                raise ArgumentError(f"callback_on_step_end_tensor_inputs: {unknown} are not among {self._callback_tensor_inputs} for {type(self).__name__}.")
            callbacks.append(StockCallback(self, callback_on_step_end, inputs, callback_tensors or {}, _scale_read_back))
        schedule = dict(num_inference_steps=num_inference_steps)
        if timesteps is not None or sigmas is not None:
            from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

            try:
                schedule = dict(timesteps=retrieve_timesteps(self.scheduler, None, latents.device, timesteps, sigmas)[0])
            except ValueError as err:
                raise ArgumentError(f"timesteps, sigmas: {err}") from None
        self._num_timesteps = len(schedule.get("timesteps", ())) or num_inference_steps
        result: SampleOutput = sample(
            denoiser or self.denoiser(),
            latents,
            cond=cond,
            uncond=uncond,
            guidance_scale=guidance_scale,
            generator=generator,
            eta=eta,
            hooks=callbacks + list(hooks),
            guider=guider,
            decode=self.decode,
            trace=trace,
            progress_bar=self.progress_bar,
            interrupt=lambda: self._interrupt,
            **schedule,
        )
        images = result.samples if output_type == "latent" else self.postprocess(self.decode(result.samples), output_type)
        self.maybe_free_model_hooks()
        counts = dict(nfe=result.nfe, reward_calls=result.reward_calls, decodes=result.decodes, trace=result.trace)
        self.last_counts = counts
        output = (output_class or GenPipelineOutput)(images=images, **counts, **extra_output)
        return output if return_dict else (images,)

    # what stock pipelines expose to their callbacks
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt


def _scale_read_back(ctx, tensors, pipe, guided_before) -> None:
    """After a callback on a gen pipeline: a changed guidance scale takes effect for the next steps."""
    ctx.update_guidance(guidance_scale=pipe._guidance_scale, drop_uncond=not pipe.do_classifier_free_guidance)


def check_memory(shape: tuple, dtype: torch.dtype, device, buffers: int = 8) -> None:
    """Refuse, before allocating, a request whose canvas buffers alone (latents, noise, outputs: about
    `buffers` copies) would take more than half the free memory."""
    from gen.core.tiling import free_memory

    need = buffers * torch.finfo(dtype).bits // 8
    for size in shape:
        need *= size
    free = free_memory(torch.device(device))
    if need > free // 2:
        raise ArgumentError(
            f"batch_size, height, width: {tuple(shape)} latents need about {need / 2**30:.1f} GiB of buffers, more than half the "
            f"{free / 2**30:.1f} GiB free; ask for fewer or smaller images."
        )
