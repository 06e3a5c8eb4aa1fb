"""Fine-tuning Flux: CLIP (pooled) and T5 (per-token, up to --max-sequence-length) prompts, latents shifted,
scaled and packed 2x2 as the pipeline packs them, position ids for text and image, the guidance-embedding
value of guidance-distilled models (--guidance-scale; 3.5 by default, as `train_dreambooth_lora_flux.py`),
and the rectified-flow objective (default density uniform, weighting none, as there)."""

from __future__ import annotations

import torch

from gen.training.families import TrainingFamily
from gen.training.objectives import flow_matching_loss

DEFAULT_GUIDANCE = 3.5  # train_dreambooth_lora_flux.py's --guidance_scale


class Flux(TrainingFamily):
    name = "flux"
    pipeline = "FluxPipeline"
    encoders = ("text_encoder", "text_encoder_2")
    trainable_encoders = ("text_encoder",)
    lora_targets = (  # train_dreambooth_lora_flux.py's default --lora_layers
        "attn.to_k",
        "attn.to_q",
        "attn.to_v",
        "attn.to_out.0",
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.0.proj",
        "ff_context.net.2",
    )
    flow_matching = True
    default_weighting = "none"
    default_sequence_length = 512  # FluxPipeline's
    t5_tokenizer = "tokenizer_2"

    def has_t5(self):
        return self.pipe.text_encoder_2 is not None

    def guidance_embedded(self):
        return bool(self.pipe.transformer.config.get("guidance_embeds"))

    def resolution_multiple(self):
        return self.pipe.vae_scale_factor * 2  # latents are packed in 2x2 patches

    def encode(self, captions):
        device = next(e for e in (getattr(self.pipe, n) for n in self.present)).device
        embeds, pooled, text_ids = self.pipe.encode_prompt(**self.prompts(captions), device=device, max_sequence_length=self.max_sequence_length())
        # text_ids are one (tokens, 3) table for the batch; repeated per row here so the caption cache can keep rows
        return {"prompt_embeds": embeds, "pooled": pooled, "text_ids": text_ids[None].expand(len(embeds), *text_ids.shape)}

    def backbone_inputs(self, embeds, batch):
        return {"encoder_hidden_states": embeds["prompt_embeds"], "pooled_projections": embeds["pooled"], "txt_ids": embeds["text_ids"][0]}

    def loss(self, model, latents, inputs, generator, noise_scheduler):
        from diffusers import FluxPipeline

        batch, channels, height, width = latents.shape
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, latents.device, latents.dtype)
        guidance = None
        if self.guidance_embedded():
            value = self.config.guidance_scale if self.config.guidance_scale is not None else DEFAULT_GUIDANCE
            guidance = torch.full((batch,), float(value), device=latents.device)
        scale = self.pipe.vae_scale_factor

        def predict(noisy, timesteps):
            packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
            out = model(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance, img_ids=image_ids, **inputs, return_dict=False)[0]
            return FluxPipeline._unpack_latents(out, height * scale, width * scale, scale)

        return flow_matching_loss(predict, latents, noise_scheduler, generator, self.config, self.default_weighting)
