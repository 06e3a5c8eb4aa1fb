"""`ClassConditionalPipeline`: class-conditional generation (UNet class tables or DiT), with CFG and hooks."""

from __future__ import annotations

import torch

from gen.errors import ArgumentError
from gen.pipelines.base import GenPipeline


class ClassConditionalPipeline(GenPipeline):
    """Generate images of given classes.

    Components: ``unet`` (UNet2DModel with a class table of num_classes + 1 rows) or ``transformer``
    (DiTTransformer2DModel), ``scheduler``, optional ``vae`` for latent models. The last class row is the
    null class used for classifier-free guidance (trained with condition dropout).

    Example:
        >>> pipe = gen.zoo.load("digits")
        >>> out = pipe(class_labels=[3, 3, 7], guidance_scale=2.0, num_inference_steps=50,
        ...            generator=torch.Generator().manual_seed(0))
        >>> out.images, out.nfe
    """

    model_cpu_offload_seq = "unet->transformer->vae"

    def __init__(self, scheduler, unet=None, transformer=None, vae=None, num_classes: int | None = None, class_names: list[str] | None = None):
        super().__init__()
        if (unet is None) == (transformer is None):
            raise ArgumentError("unet, transformer: pass exactly one backbone.")
        self.register_modules(unet=unet, transformer=transformer, vae=vae, scheduler=scheduler)
        if num_classes is None:
            num_classes = unet.config.num_class_embeds - 1 if unet is not None else transformer.config.num_embeds_ada_norm
        self.register_to_config(num_classes=num_classes, class_names=class_names)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def check_labels(self, class_labels, batch_size: int | None) -> torch.Tensor:
        if class_labels is None:
            if not isinstance(batch_size, int) or batch_size < 1:
                raise ArgumentError(f"batch_size: with class_labels=None (unconditional) pass batch_size >= 1, got {batch_size!r}.")
            return torch.full((batch_size,), self.null_class, dtype=torch.long)
        try:
            labels = torch.as_tensor(class_labels).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentError(f"class_labels: expected integer classes (a list or tensor), got {class_labels!r}.") from None
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.numel() == 0:
            raise ArgumentError(f"class_labels: expected a non-empty list of integer classes, got {class_labels!r}.")
        if batch_size is not None and batch_size != labels.numel():
            raise ArgumentError(f"batch_size: {batch_size!r} does not match the {labels.numel()} class_labels; leave batch_size unset (one image per label).")
        if labels.min() < 0 or labels.max() >= self.config.num_classes:
            raise ArgumentError(f"class_labels: classes must lie in [0, {self.config.num_classes}), got {labels.tolist()}.")
        return labels.long()

    @torch.no_grad()
    def __call__(
        self,
        class_labels: list[int] | torch.Tensor | None = None,
        *,
        batch_size: int | None = None,
        guidance_scale: float = 1.0,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float | None = None,
        latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
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
        """Generate one image per entry of class_labels (None: batch_size unconditional samples).

        guidance_scale > 1 runs classifier-free guidance against the null class. eta is passed to the
        scheduler's step where it takes one (DDIM: 0 deterministic, 1 DDPM-like). Returns
        `GenPipelineOutput` (images, nfe, reward_calls, decodes, trace).
        """
        hooks = self.check_common(num_inference_steps, output_type, hooks, guidance_scale)
        labels = self.check_labels(class_labels, batch_size).to(self._execution_device)
        latents = self.prepare_latents(len(labels), height, width, generator, latents)
        null = torch.full_like(labels, self.null_class)
        return self.generate(
            latents,
            {"class_labels": labels},
            {"class_labels": null},
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
