"""`TextToImagePipeline`: text-conditioned generation with any transformers text encoder (pixel or latent,
UNet2DConditionModel or PixArt-style transformer). Also generates non-image samples such as embedding
grids: use output_type="latent" for the raw tensors."""

from __future__ import annotations

import torch
from diffusers.utils import logging

from gen.errors import ArgumentError, require_int
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
        prompt: str | list[str] | None = None,
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
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        hooks=(),
        guider=None,
        trace: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006  (diffusers' signature)
    ):
        """Text (a string, a list, or precomputed `prompt_embeds`) to images. The unconditional branch for
        guidance is the empty prompt (what condition dropout trained), or `negative_prompt(_embeds)`."""
        hooks = self.check_common(num_inference_steps, output_type, hooks, guidance_scale)
        require_int(num_images_per_prompt, "num_images_per_prompt", minimum=1)
        if (prompt is None) == (prompt_embeds is None):
            raise ArgumentError("prompt, prompt_embeds: pass exactly one of them.")
        if prompt_embeds is not None:
            cond_states = self.check_embeds(prompt_embeds, "prompt_embeds")
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else []
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise ArgumentError(f"prompt: expected a string or a non-empty list of strings, got {prompt!r}.")
            cond_states = self.encode_prompt(prompts)
        batch = len(cond_states)
        uncond_states = None
        if guidance_scale > 1:
            if negative_prompt_embeds is not None:
                uncond_states = self.check_embeds(negative_prompt_embeds, "negative_prompt_embeds")
            else:
                negative = negative_prompt if negative_prompt is not None else ""
                negatives = [negative] * batch if isinstance(negative, str) else list(negative) if isinstance(negative, (list, tuple)) else None
                if negatives is None or len(negatives) != batch or not all(isinstance(n, str) for n in negatives):
                    raise ArgumentError(f"negative_prompt: expected a string or {batch} strings (one per prompt), got {negative_prompt!r}.")
                uncond_states = self.encode_prompt(negatives)
            if uncond_states.shape != cond_states.shape:
                raise ArgumentError(f"negative_prompt_embeds: shape {tuple(uncond_states.shape)} differs from the prompt's {tuple(cond_states.shape)}.")
        cond = {"encoder_hidden_states": cond_states.repeat_interleave(num_images_per_prompt, dim=0)}
        uncond = {"encoder_hidden_states": uncond_states.repeat_interleave(num_images_per_prompt, dim=0)} if uncond_states is not None else None
        latents = self.prepare_latents(batch * num_images_per_prompt, height, width, generator, latents)
        return self.generate(
            latents,
            cond,
            uncond,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            generator=generator,
            eta=eta,
            hooks=hooks,
            guider=guider,
            trace=trace,
            output_type=output_type,
            return_dict=return_dict,
            timesteps=timesteps,
            sigmas=sigmas,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

    def check_embeds(self, embeds, name: str) -> torch.Tensor:
        """Precomputed text-encoder states (batch, tokens, width), placed on the pipeline's device and dtype."""
        width = self.text_encoder.config.hidden_size if self.text_encoder is not None else None
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or (width is not None and embeds.shape[-1] != width):
            raise ArgumentError(
                f"{name}: expected a (batch, tokens, {width or 'width'}) tensor from the text encoder, got {tuple(getattr(embeds, 'shape', ())) or type(embeds).__name__}."
            )
        if not torch.isfinite(embeds).all():
            raise ArgumentError(f"{name}: contains NaN or infinite values.")
        return embeds.to(self._execution_device, self.backbone.dtype)
