"""What gen's own pipelines share: the backbone (``unet`` or ``transformer``), an optional VAE, latents,
decoding, post-processing and the output with its counts. Each pipeline file adds only how its
condition is prepared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from gen.core.backbones import Condition, supported_backbones
from gen.core.denoiser import Denoiser
from gen.core.hooks import check_hooks
from gen.core.sampling import SampleOutput, check_steps, sample

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


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
    optionally ``vae``, and call `generate` from their ``__call__``."""

    _optional_components = ["unet", "transformer", "vae"]

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
        size = self.backbone.config.sample_size
        default = (size, size) if isinstance(size, int) else tuple(size)
        f = self.vae_scale_factor
        return ((height // f) if height else default[0], (width // f) if width else default[1])

    def prepare_latents(self, batch: int, height: int | None, width: int | None, generator, latents=None) -> torch.Tensor:
        if latents is not None:
            return latents.to(self._execution_device, self.backbone.dtype)
        shape = (batch, self.backbone.config.in_channels, *self.latent_size(height, width))
        x = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.backbone.dtype)
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

    def postprocess(self, images: torch.Tensor, output_type: str):
        if output_type == "pt":
            return images
        array = images.cpu().permute(0, 2, 3, 1).float().numpy()
        return to_pil(array) if output_type == "pil" else array

    @staticmethod
    def check_common(num_inference_steps, output_type, hooks, guidance_scale) -> list:
        check_steps(num_inference_steps, None)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
            raise ValueError(f"guidance_scale: must be a number >= 0, got {guidance_scale!r}.")
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
        **extra_output,
    ):
        result: SampleOutput = sample(
            denoiser or self.denoiser(),
            latents,
            num_inference_steps=num_inference_steps,
            cond=cond,
            uncond=uncond,
            guidance_scale=guidance_scale,
            generator=generator,
            eta=eta,
            hooks=hooks,
            decode=self.decode,
            trace=trace,
            progress_bar=self.progress_bar,
        )
        images = result.samples if output_type == "latent" else self.postprocess(self.decode(result.samples), output_type)
        self.maybe_free_model_hooks()
        output = (output_class or GenPipelineOutput)(
            images=images, nfe=result.nfe, reward_calls=result.reward_calls, decodes=result.decodes, trace=result.trace, **extra_output
        )
        return output if return_dict else (images, output)


def to_pil(array: np.ndarray) -> list[PIL.Image.Image]:
    """(B, H, W, C) floats in [0, 1] -> PIL images; one channel gives grayscale."""
    array = (array * 255).round().astype("uint8")
    if array.shape[-1] == 1:
        return [PIL.Image.fromarray(a[..., 0], mode="L") for a in array]
    return [PIL.Image.fromarray(a) for a in array]
