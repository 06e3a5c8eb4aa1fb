"""`TextToImagePipeline`: text-conditioned generation with any transformers text encoder (pixel or latent,
UNet2DConditionModel or PixArt-style transformer). Also generates non-image samples such as embedding
grids: use output_type="latent" for the raw tensors."""

from __future__ import annotations

import torch
from diffusers.utils import logging

from gen.errors import ArgumentError
from gen.pipelines.base import GenPipeline

logger = logging.get_logger(__name__)


class TextToImagePipeline(GenPipeline):
    """Components: ``tokenizer`` and ``text_encoder`` (transformers; its last hidden state is the condition),
    ``unet`` or ``transformer``, ``scheduler``, optional ``vae``.

    Example:
        >>> pipe = TextToImagePipeline.from_pretrained("out/my-text-model")
        >>> out = pipe("immunohistochemistry tissue", guidance_scale=3.0, num_inference_steps=30)
    """

    model_cpu_offload_seq = "text_encoder->unet->transformer->vae"

    def __init__(self, tokenizer, text_encoder, scheduler, unet=None, transformer=None, vae=None):
        super().__init__()
        if (unet is None) == (transformer is None):
            raise ArgumentError("unet, transformer: pass exactly one backbone.")
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, transformer=transformer, vae=vae, scheduler=scheduler)

    @torch.no_grad()
    def encode_prompt(self, prompt: list[str]) -> torch.Tensor:
        """The text encoder's last hidden state for each prompt (padded to, and cut at, the tokenizer's length;
        a cut prompt is logged, as diffusers' pipelines do)."""
        limit = self.tokenizer.model_max_length
        tokens = self.tokenizer(prompt, padding="max_length", max_length=limit, truncation=True, return_tensors="pt").to(self._execution_device)
        full = self.tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
        if full.shape[-1] > limit:
            removed = self.tokenizer.batch_decode(full[:, limit - 1 : -1])
            logger.warning(f"The following part of your input was truncated because the text encoder can only handle sequences up to {limit} tokens: {removed}")
        hidden = self.text_encoder(**tokens)[0]
        return hidden.to(self.backbone.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 1.0,
        num_inference_steps: int = 50,
        generator=None,
        eta: float | None = None,
        latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        hooks=(),
        trace: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """The unconditional branch for guidance is the empty prompt (what condition dropout trained)."""
        hooks = self.check_common(num_inference_steps, output_type, hooks, guidance_scale)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ArgumentError(f"prompt: expected a string or a non-empty list of strings, got {prompt!r}.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ArgumentError(f"num_images_per_prompt: must be an integer >= 1, got {num_images_per_prompt!r}.")
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negative = negative_prompt if negative_prompt is not None else ""
        negatives = [negative] * len(prompts) if isinstance(negative, str) else [n for n in negative for _ in range(num_images_per_prompt)]
        if len(negatives) != len(prompts):
            raise ArgumentError(f"negative_prompt: {len(negatives)} entries for {len(prompts)} prompts.")
        cond = {"encoder_hidden_states": self.encode_prompt(prompts)}
        uncond = {"encoder_hidden_states": self.encode_prompt(negatives)} if guidance_scale > 1 else None
        latents = self.prepare_latents(len(prompts), height, width, generator, latents)
        return self.generate(
            latents, cond, uncond, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
            generator=generator, eta=eta, hooks=hooks, trace=trace, output_type=output_type, return_dict=return_dict,
        )
