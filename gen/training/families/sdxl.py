"""Fine-tuning Stable Diffusion XL: two CLIP encoders (per-token features of both, pooled from the second),
micro-conditioning on each image's original size and crop (the time ids of `train_text_to_image_sdxl.py`),
and the folder's own noise-prediction objective (epsilon or v, Min-SNR and offset noise as for SD 1.x)."""

from __future__ import annotations

import torch

from gen.training.families import TrainingFamily


class SDXL(TrainingFamily):
    name = "sdxl"
    pipeline = "StableDiffusionXLPipeline"
    backbone = "unet"
    encoders = ("text_encoder", "text_encoder_2")
    trainable_encoders = ("text_encoder", "text_encoder_2")
    lora_targets = ("to_k", "to_q", "to_v", "to_out.0")  # train_text_to_image_lora_sdxl.py / train_dreambooth_lora_sdxl.py

    def encode(self, captions):
        embeds, _, pooled, _ = self.pipe.encode_prompt(**self.prompts(captions), device=self.device(), do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled": pooled}

    def unconditional(self, embeds, dropped):
        """With `force_zeros_for_empty_prompt` (SDXL base's setting), stock sampling's unconditional branch is all
        zeros, per-token and pooled, not the empty caption's encoding: dropped rows are trained on what it feeds."""
        if not self.pipe.config.get("force_zeros_for_empty_prompt", False) or not dropped.any():
            return embeds
        keep = (~dropped).to(embeds["prompt_embeds"].device)
        return {k: v * keep.reshape(-1, *[1] * (v.ndim - 1)).to(v.dtype) if k in ("prompt_embeds", "pooled") else v for k, v in embeds.items()}

    def device(self):
        encoder = self.pipe.text_encoder_2 if self.pipe.text_encoder_2 is not None else self.pipe.text_encoder
        return encoder.device

    def backbone_inputs(self, embeds, batch):
        """Time ids per row: (original height, width) + (crop top, left) + (target height, width), through the
        pipeline's `_get_add_time_ids`, which also checks their width against the UNet's."""
        size = self.config.resolution
        pooled = embeds["pooled"]
        originals = batch.get("original_size")
        crops = batch.get("crop_top_left")
        rows = []
        for i in range(len(pooled)):
            original = tuple(int(v) for v in originals[i]) if originals is not None else (size, size)
            crop = tuple(int(v) for v in crops[i]) if crops is not None else (0, 0)
            rows.append(self.pipe._get_add_time_ids(original, crop, (size, size), dtype=pooled.dtype, text_encoder_projection_dim=int(pooled.shape[-1])))
        time_ids = torch.cat(rows).to(pooled.device)
        return {"encoder_hidden_states": embeds["prompt_embeds"], "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}

    def loss(self, model, latents, inputs, generator, noise_scheduler):
        from gen.training.objectives import diffusion_loss

        config = self.config
        return diffusion_loss(
            model,
            noise_scheduler,
            latents,
            inputs,
            generator,
            noise_scheduler.config.prediction_type,
            config.snr_gamma,
            latents.shape[1],
            config.noise_offset,
        )
