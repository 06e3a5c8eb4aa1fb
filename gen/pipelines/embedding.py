"""`EmbeddingToImagePipeline`: images from self-supervised image embeddings (Graikos et al., CVPR 2024).

The backbone is conditioned on one embedding per image, as a single cross-attention token after a linear
projection (UNet2DConditionModel's ``encoder_hid_proj``, or PixArt's caption projection). It was trained
with the embedding dropped (zeroed) 10% of the time, so classifier-free guidance against the zero
embedding works.

    >>> pipe = gen.zoo.load("ihc-patches")
    >>> out = pipe(embeddings=e, guidance_scale=2.0)            # generate from embeddings (B, D)
    >>> out = pipe(images=patches, num_images_per_embedding=4)  # variations of real images
"""

from __future__ import annotations

import torch

from gen.errors import ArgumentError
from gen.core.backbones import Backbone
from gen.pipelines.base import GenPipeline
from gen.pipelines.images import to_unit_tensor


def images_to_tensor(images, name: str = "images") -> torch.Tensor:
    """`PipelineImageInput` -> float tensor (B, C, H, W) in [0, 1] (see gen.pipelines.images)."""
    return to_unit_tensor(images, name)


class EmbeddingToImagePipeline(GenPipeline):
    """Components: ``unet`` (UNet2DConditionModel with encoder_hid_proj) or ``transformer`` (PixArt-style),
    ``scheduler``, optional ``vae``, and the image embedder the model was trained with (used for `images=`):
    ``image_encoder`` (gen's `PatchEncoder`, or a transformers image model with its ``feature_extractor``),
    diffusers' names for them, so `.components`, `.to()`, offloading and `save_pretrained` include it.
    Config ``embedder`` is the embedder's spec ("zoo:patch-encoder", a folder, a hub id;
    see gen.embedders.load_embedder): a pipeline saved without an ``image_encoder`` loads it from there on
    first use, on the pipeline's device and in its dtype."""

    model_cpu_offload_seq = "image_encoder->unet->transformer->vae"
    _optional_components = [*GenPipeline._optional_components, "image_encoder", "feature_extractor"]

    def __init__(
        self,
        scheduler,
        unet=None,
        transformer=None,
        vae=None,
        image_encoder=None,
        feature_extractor=None,
        embedder: str = "zoo:patch-encoder",
        embedder_pooling: str = "cls",
        guidance_scale: float = 1.0,
        num_inference_steps: int = 50,
    ):
        super().__init__()
        if (unet is None) == (transformer is None):
            raise ArgumentError("unet, transformer: pass exactly one backbone.")
        self.register_modules(
            unet=unet, transformer=transformer, vae=vae, scheduler=scheduler, image_encoder=image_encoder, feature_extractor=feature_extractor
        )
        # the sampling defaults saved with the model (the zoo's chose them by measurement)
        self.register_to_config(embedder=embedder, embedder_pooling=embedder_pooling, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps)
        self._callable_embedder = None

    @classmethod
    def _get_signature_types(cls):
        from gen.embedders import PatchEncoder

        types = super()._get_signature_types()
        types.update(image_encoder=(PatchEncoder, type(None)))  # transformers models are carried by from_pipe whatever their class
        return types

    def sampling_defaults(self, guidance_scale, num_inference_steps) -> tuple:
        """The call's values, or the ones saved with the model where the call gives None."""
        return (
            self.config.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale,
            self.config.get("num_inference_steps", 50) if num_inference_steps is None else num_inference_steps,
        )

    @property
    def embedding_width(self) -> int:
        config = self.backbone.config
        if getattr(self, "unet", None) is not None:
            return config.encoder_hid_dim or config.cross_attention_dim
        return config.caption_channels

    @property
    def tile_size(self) -> int:
        """The side, in pixels, of what the backbone generates at once."""
        size = self.backbone.config.sample_size
        return (size if isinstance(size, int) else size[0]) * self.vae_scale_factor

    @property
    def embedder(self):
        """The image embedder: the ``image_encoder`` component (loaded from config ``embedder`` if the folder
        had none), or a callable given to `set_embedder`."""
        from gen.embedders import TransformersEmbedder, load_embedder

        if self._callable_embedder is not None:
            return self._callable_embedder
        if getattr(self, "image_encoder", None) is None:
            embedder = load_embedder(self.config.embedder, pooling=self.config.get("embedder_pooling", "cls"))
            self._register_embedder(embedder)
            # nn.Module.to: diffusers' ModelMixin.to warns about float32-kept modules even when there are none
            torch.nn.Module.to(self.image_encoder, self._execution_device, self.backbone.dtype)
        if hasattr(self.image_encoder, "embed_images"):
            return self.image_encoder
        return TransformersEmbedder(self.image_encoder, self.feature_extractor, self.config.get("embedder_pooling", "cls"))

    def set_embedder(self, embedder) -> None:
        """Use another embedder (it must produce this model's embedding width): a spec, a `PatchEncoder` or
        `TransformersEmbedder` (registered as components, so saved with the pipeline), or any callable
        images -> (B, D) (used as given; it is not a component and is not saved)."""
        from gen.embedders import load_embedder

        embedder = load_embedder(embedder)
        if embedder.width != self.embedding_width:
            raise ArgumentError(
                f"embedder: produces width {embedder.width} but the model was trained on width {self.embedding_width}; use the embedder it was trained with."
            )
        if isinstance(embedder, torch.nn.Module) or hasattr(embedder, "processor"):
            self._callable_embedder = None
            self._register_embedder(embedder)
        else:
            self._callable_embedder = embedder

    def _register_embedder(self, embedder) -> None:
        if isinstance(embedder, torch.nn.Module):
            self.register_modules(image_encoder=embedder, feature_extractor=None)
        elif hasattr(embedder, "processor"):  # a TransformersEmbedder: diffusers' image_encoder + feature_extractor pair
            self.register_modules(image_encoder=embedder.model, feature_extractor=embedder.processor)
            self.register_to_config(embedder_pooling=embedder.pooling)
        else:
            raise ArgumentError(f"embedder: {type(embedder).__name__} is not a model gen can hold as a component; pass it to set_embedder.")

    def check_embeddings(self, embeddings, name: str = "embeddings") -> torch.Tensor:
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
            raise ArgumentError(
                f"{name}: expected a (batch, {self.embedding_width}) tensor, got {tuple(getattr(embeddings, 'shape', ())) or type(embeddings).__name__}."
            )
        if embeddings.shape[1] != self.embedding_width:
            raise ArgumentError(
                f"{name}: width {embeddings.shape[1]} does not match the model's {self.embedding_width}; embed with the encoder the model was trained on."
            )
        if not torch.isfinite(embeddings).all():
            raise ArgumentError(f"{name}: contains NaN or infinite values.")
        return embeddings.float()

    def embed(self, images) -> torch.Tensor:
        """Embeddings of images (any size; the embedder resizes) in [0, 1]."""
        return self.embedder.embed_images(images_to_tensor(images))

    @torch.no_grad()
    def __call__(
        self,
        embeddings: torch.Tensor | None = None,
        images=None,
        *,
        num_images_per_embedding: int = 1,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        generator=None,
        eta: float | None = None,
        latents: torch.Tensor | None = None,
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
        """Generate from `embeddings` (B, D), or make variations of `images` (embedded first)."""
        guidance_scale, num_inference_steps = self.sampling_defaults(guidance_scale, num_inference_steps)
        hooks = self.check_common(num_inference_steps, output_type, hooks, guidance_scale)
        if (embeddings is None) == (images is None):
            raise ArgumentError("embeddings, images: pass exactly one of them.")
        if not isinstance(num_images_per_embedding, int) or num_images_per_embedding < 1:
            raise ArgumentError(f"num_images_per_embedding: must be an integer >= 1, got {num_images_per_embedding!r}.")
        if images is not None:
            images = images_to_tensor(images)
            if self.embedder.width != self.embedding_width:
                raise ArgumentError(f"embedder: width {self.embedder.width} does not match the model's {self.embedding_width}.")
            embeddings = self.embedder.embed_images(images)
            if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or embeddings.shape[0] != images.shape[0]:
                raise ArgumentError(
                    f"embedder: returned {tuple(getattr(embeddings, 'shape', ())) or type(embeddings).__name__} for {images.shape[0]} images; "
                    "an embedder must return one (batch, width) row per image."
                )
        embeddings = self.check_embeddings(embeddings).repeat_interleave(num_images_per_embedding, dim=0)
        embeddings = embeddings.to(self._execution_device, self.backbone.dtype)
        latents = self.prepare_latents(len(embeddings), None, None, generator, latents)
        backbone = Backbone(self.backbone)
        return self.generate(
            latents,
            backbone.embedding_condition(embeddings),
            backbone.embedding_condition(torch.zeros_like(embeddings)),
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
