"""Fine-tuning Stable Diffusion 3: three encoders (CLIP-L and CLIP-G, per-token and pooled; T5, per-token up to
--max-sequence-length), a rectified-flow objective with SD3's timestep densities and loss weightings
(`train_dreambooth_lora_sd3.py`; default density logit-normal, as there), latents shifted and scaled."""

from __future__ import annotations

from gen.training.families import TrainingFamily
from gen.training.objectives import flow_matching_loss


class SD3(TrainingFamily):
    name = "sd3"
    pipeline = "StableDiffusion3Pipeline"
    encoders = ("text_encoder", "text_encoder_2", "text_encoder_3")
    trainable_encoders = ("text_encoder", "text_encoder_2")
    lora_targets = ("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v")
    flow_matching = True
    default_weighting = "logit_normal"
    default_sequence_length = 256  # StableDiffusion3Pipeline's
    t5_tokenizer = "tokenizer_3"

    def has_t5(self):
        return self.pipe.text_encoder_3 is not None

    def resolution_multiple(self):
        return self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size

    def encode(self, captions):
        device = next(e for e in (getattr(self.pipe, n) for n in self.present)).device
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            **self.prompts(captions), device=device, do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length()
        )
        return {"prompt_embeds": embeds, "pooled": pooled}

    def backbone_inputs(self, embeds, batch):
        return {"encoder_hidden_states": embeds["prompt_embeds"], "pooled_projections": embeds["pooled"]}

    def loss(self, model, latents, inputs, generator, noise_scheduler):
        def predict(noisy, timesteps):
            return model(hidden_states=noisy, timestep=timesteps, **inputs, return_dict=False)[0]

        return flow_matching_loss(predict, latents, noise_scheduler, generator, self.config, self.default_weighting)
