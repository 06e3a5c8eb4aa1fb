"""SANA: a linear-attention transformer over a deep-compression VAE's latents, flow matching with DPM-Solver;
the loop casts the input to the model's dtype and the prediction to float32 (see the backbone spec)."""

from gen.pipelines.stock_loop import Family

FAMILY = Family(
    guidance=lambda pipe, a: (a["guidance_scale"], 0.0),  # the stock loop combines with its argument, not pipe.guidance_scale
    callback_tensors={"prompt_embeds": ("encoder_hidden_states",)},
    negative_tensors={"negative_prompt_embeds": ("encoder_hidden_states",)},
)
