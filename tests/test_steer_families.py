"""`steer(pipe)` is a drop-in for the families it runs through the stock call itself (SDXL and its img2img /
refiner, Flux, SANA, PixArt-Σ, Lumina 2, AuraFlow, Qwen-Image, Z-Image): every parameter of each stock `__call__` is exercised, stock vs steered, on
tiny models with the same generator, and the outputs must be identical (or both raise the same exception
type). A parameter the stock signature gains without a case here fails, as in test_steer_conformance."""

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    AuraFlowPipeline,
    FluxPipeline,
    Lumina2Pipeline,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    QwenImagePipeline,
    SanaPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    ZImagePipeline,
)
from diffusers.callbacks import SDXLCFGCutoffCallback
from test_steer_conformance import CASES as CONFORMANCE_CASES
from test_steer_conformance import (
    PIL_IMAGE,
    assert_every_parameter_has_a_case,
    assert_stock_and_steered_agree,
    gens,
    interrupt_at,
    legacy_callback,
    parametrized,
    swap_prompt_at,
    zero_latents_at,
)

from gen import testing as tiny

PIXART_ALPHA_CASES = CONFORMANCE_CASES[PixArtAlphaPipeline][2]
g = torch.Generator().manual_seed(11)
XL_EMBEDS, XL_POOLED = torch.randn(2, 16, 2 * tiny.TEXT_WIDTH, generator=g), torch.randn(2, tiny.TEXT_WIDTH, generator=g)
XL_NEGATIVE, XL_NEGATIVE_POOLED = torch.randn(2, 16, 2 * tiny.TEXT_WIDTH, generator=g), torch.randn(2, tiny.TEXT_WIDTH, generator=g)
FLUX_EMBEDS, FLUX_POOLED = torch.randn(2, 8, tiny.TEXT_WIDTH, generator=g), torch.randn(2, tiny.TEXT_WIDTH, generator=g)
IMAGE = torch.rand(2, 3, 16, 16, generator=g)


def euler_sdxl():
    return tiny.sdxl_pipeline(EulerDiscreteScheduler_(num_train_timesteps=1000))


def EulerDiscreteScheduler_(**config):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", **config)


def _xl_common(img2img: bool) -> dict:
    """The cases SDXL's text-to-image and img2img calls share."""
    return {
        "prompt": [
            (
                "string",
                dict(prompt="a blue dog"),
                None,
                *(["stock crashes (RuntimeError) on 1 prompt for 2 images; gen names the mismatch"] if img2img else []),
            ),
            ("none without embeddings", dict(prompt=None), None),
        ],
        "prompt_2": [("other words", dict(prompt_2="a green cat"), None)],
        "num_inference_steps": [("five", dict(num_inference_steps=5), None)],
        "timesteps": [("custom on Euler", dict(timesteps=[999, 600, 300, 50], num_inference_steps=None), euler_sdxl)],
        "sigmas": [("custom on Euler", dict(sigmas=[8.0, 3.0, 1.0, 0.3], num_inference_steps=None), euler_sdxl)],
        "denoising_end": [("0.6 (a refiner finishes)", dict(denoising_end=0.6), None)],
        "guidance_scale": [
            ("unguided", dict(guidance_scale=1.0), None),
            ("strong", dict(guidance_scale=9.0), None),
            ("LCM UNet (scale as an embedding)", dict(guidance_scale=6.0), lambda: tiny.sdxl_pipeline(time_cond_proj_dim=8, cls=CLS[img2img])),
        ],
        "negative_prompt": [("string", dict(negative_prompt="blue"), None)],
        "negative_prompt_2": [("string", dict(negative_prompt="blue", negative_prompt_2="green"), None)],
        "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
        "eta": [
            ("ignored by Euler", dict(eta=0.5), None),
            ("on DDIM", dict(eta=0.8), lambda: tiny.sdxl_pipeline(DDIMScheduler(num_train_timesteps=1000), cls=CLS[img2img])),
        ],
        "generator": [
            ("list", dict(generator=gens(2)), None),
            ("stochastic scheduler", dict(generator=gens(2)), lambda: tiny.sdxl_pipeline(EulerAncestralDiscreteScheduler(), cls=CLS[img2img])),
        ],
        "latents": [("given", dict(latents=torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))), None)],
        "prompt_embeds": [("with pooled", dict(prompt=None, prompt_embeds=XL_EMBEDS, pooled_prompt_embeds=XL_POOLED), None)],
        "negative_prompt_embeds": [
            (
                "with pooled",
                dict(
                    prompt=None,
                    prompt_embeds=XL_EMBEDS,
                    pooled_prompt_embeds=XL_POOLED,
                    negative_prompt_embeds=XL_NEGATIVE,
                    negative_pooled_prompt_embeds=XL_NEGATIVE_POOLED,
                ),
                None,
            )
        ],
        "pooled_prompt_embeds": [("missing (refused by stock)", dict(prompt=None, prompt_embeds=XL_EMBEDS), None)],
        "negative_pooled_prompt_embeds": [("missing (refused by stock)", dict(negative_prompt_embeds=XL_NEGATIVE), None)],
        "ip_adapter_image": [("no IP-Adapter loaded", dict(ip_adapter_image=PIL_IMAGE), None)],
        "ip_adapter_image_embeds": [("no IP-Adapter loaded", dict(ip_adapter_image_embeds=[torch.randn(4, 1, 16)]), None)],
        "output_type": [("np", dict(output_type="np"), None), ("pil", dict(output_type="pil"), None), ("latent", dict(output_type="latent"), None)],
        "return_dict": [("tuple", dict(return_dict=False), None)],
        "cross_attention_kwargs": [("empty", dict(cross_attention_kwargs={}), None)],
        "guidance_rescale": [("0.7", dict(guidance_rescale=0.7), None)],
        "original_size": [("32x24", dict(original_size=(32, 24)), None)],
        "crops_coords_top_left": [("(4, 2)", dict(crops_coords_top_left=(4, 2)), None)],
        "target_size": [("24x24", dict(target_size=(24, 24)), None)],
        "negative_original_size": [("8x8", dict(negative_original_size=(8, 8)), None)],
        "negative_crops_coords_top_left": [("(1, 1)", dict(negative_crops_coords_top_left=(1, 1)), None)],
        "negative_target_size": [("8x8", dict(negative_target_size=(8, 8)), None)],
        "clip_skip": [("one", dict(clip_skip=1), None)],
        "callback_on_step_end": [
            ("replaces latents", dict(callback_on_step_end=zero_latents_at(1)), None),
            ("interrupts", dict(callback_on_step_end=interrupt_at(1)), None),
            ("cuts guidance (SDXLCFGCutoffCallback)", dict(callback_on_step_end=SDXLCFGCutoffCallback(cutoff_step_ratio=0.4)), None),
        ],
        "callback_on_step_end_tensor_inputs": [
            (
                "prompt embeddings read back",
                dict(callback_on_step_end=swap_prompt_at(0), callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]),
                None,
            ),
            ("unknown input", dict(callback_on_step_end_tensor_inputs=["nope"]), None),
        ],
        "kwargs": [("legacy callback", dict(callback=legacy_callback, callback_steps=2), None), ("unknown keyword", dict(not_an_argument=3), None)],
    }


CLS = {False: StableDiffusionXLPipeline, True: StableDiffusionXLImg2ImgPipeline}
XL_BASE = dict(prompt=["a cat", "a red dog"], num_inference_steps=4, guidance_scale=5.0, output_type="pt")

CASES = {
    StableDiffusionXLPipeline: (
        tiny.sdxl_pipeline,
        XL_BASE,
        {
            **_xl_common(False),
            "height": [("24", dict(height=24), None), ("not a multiple of 8", dict(height=20), None)],
            "width": [("32", dict(width=32), None)],
        },
    ),
    StableDiffusionXLImg2ImgPipeline: (
        lambda: tiny.sdxl_pipeline(cls=StableDiffusionXLImg2ImgPipeline),
        dict(XL_BASE, image=IMAGE, strength=0.6),
        {
            **_xl_common(True),
            "image": [
                ("PIL", dict(image=PIL_IMAGE.resize((16, 16)), prompt="a cat"), None),
                ("latents (4 channels)", dict(image=torch.randn(2, 4, 8, 8)), None),
            ],
            "strength": [("1.0", dict(strength=1.0), None), ("0.3", dict(strength=0.3), None), ("out of range", dict(strength=1.5), None)],
            "denoising_start": [("0.5 (the refiner's half)", dict(denoising_start=0.5), None)],
            "aesthetic_score": [("7 on the refiner", dict(aesthetic_score=7.0, prompt="a cat", image=IMAGE[:1]), lambda: tiny.sdxl_pipeline(refiner=True))],
            "negative_aesthetic_score": [
                ("3 on the refiner", dict(negative_aesthetic_score=3.0, prompt="a cat", image=IMAGE[:1]), lambda: tiny.sdxl_pipeline(refiner=True))
            ],
            "latents": [("ignored by img2img", dict(latents=torch.randn(2, 4, 8, 8)), None)],
        },
    ),
    FluxPipeline: (
        tiny.flux_pipeline,
        dict(prompt=["a cat", "a red dog"], height=16, width=16, num_inference_steps=3, max_sequence_length=8, output_type="pt"),
        {
            "prompt": [("string", dict(prompt="a blue dog"), None), ("none without embeddings", dict(prompt=None), None)],
            "prompt_2": [("other words", dict(prompt_2="a green cat"), None)],
            "negative_prompt": [
                ("with true CFG", dict(negative_prompt=["blue", "green"], true_cfg_scale=3.0), None),
                ("one for the batch", dict(negative_prompt="blue", true_cfg_scale=3.0), None),
                ("without true CFG (unused)", dict(negative_prompt="blue"), None),
            ],
            "negative_prompt_2": [("with true CFG", dict(negative_prompt="blue", negative_prompt_2="red", true_cfg_scale=3.0), None)],
            "true_cfg_scale": [("4 without a negative prompt (unused)", dict(true_cfg_scale=4.0), None)],
            "height": [("32", dict(height=32), None), ("not a multiple of 4", dict(height=18), None)],
            "width": [("24", dict(width=24), None)],
            "num_inference_steps": [("five", dict(num_inference_steps=5), None)],
            "sigmas": [("custom", dict(sigmas=[1.0, 0.6, 0.3]), None)],
            "guidance_scale": [
                ("ignored by schnell-style", dict(guidance_scale=7.0), None),
                ("embedded by dev-style", dict(guidance_scale=5.0), lambda: tiny.flux_pipeline(guidance_embeds=True)),
            ],
            "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
            "generator": [("list", dict(generator=gens(2)), None)],
            "latents": [("given, packed", dict(latents=torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(3))), None)],
            "prompt_embeds": [("with pooled", dict(prompt=None, prompt_embeds=FLUX_EMBEDS, pooled_prompt_embeds=FLUX_POOLED), None)],
            "pooled_prompt_embeds": [("missing (refused by stock)", dict(prompt=None, prompt_embeds=FLUX_EMBEDS), None)],
            "negative_prompt_embeds": [
                (
                    "with pooled and true CFG",
                    dict(negative_prompt_embeds=FLUX_EMBEDS.flip(0), negative_pooled_prompt_embeds=FLUX_POOLED.flip(0), true_cfg_scale=2.0),
                    None,
                )
            ],
            "negative_pooled_prompt_embeds": [("without embeddings (unused)", dict(negative_pooled_prompt_embeds=FLUX_POOLED), None)],
            "ip_adapter_image": [("no IP-Adapter loaded", dict(ip_adapter_image=PIL_IMAGE), None)],
            "ip_adapter_image_embeds": [("no IP-Adapter loaded", dict(ip_adapter_image_embeds=[torch.randn(2, 1, 16)]), None)],
            "negative_ip_adapter_image": [("no IP-Adapter loaded", dict(negative_ip_adapter_image=PIL_IMAGE), None)],
            "negative_ip_adapter_image_embeds": [("no IP-Adapter loaded", dict(negative_ip_adapter_image_embeds=[torch.randn(2, 1, 16)]), None)],
            "output_type": [("np", dict(output_type="np"), None), ("latent", dict(output_type="latent"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
            "joint_attention_kwargs": [("empty", dict(joint_attention_kwargs={}), None)],
            "callback_on_step_end": [
                ("replaces latents", dict(callback_on_step_end=zero_latents_at(1)), None),
                ("interrupts", dict(callback_on_step_end=interrupt_at(1)), None),
            ],
            "callback_on_step_end_tensor_inputs": [
                (
                    "prompt embeddings read back",
                    dict(callback_on_step_end=swap_prompt_at(0), callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]),
                    None,
                )
            ],
            "max_sequence_length": [("12", dict(max_sequence_length=12), None)],
        },
    ),
    SanaPipeline: (
        tiny.sana_pipeline,
        dict(height=32, width=32, num_inference_steps=3, guidance_scale=4.5, use_resolution_binning=False, output_type="pt", **tiny.sana_prompt(2)),
        {
            "prompt": [("string without a text encoder", dict(prompt="a cat"), None)],
            "negative_prompt": [("with embeddings", dict(negative_prompt="blue"), None)],
            "num_inference_steps": [("two", dict(num_inference_steps=2), None)],
            "timesteps": [("custom", dict(timesteps=[999, 500, 100], num_inference_steps=None), None)],
            "sigmas": [("custom", dict(sigmas=[1.0, 0.6, 0.3]), None)],
            "guidance_scale": [
                ("unguided", dict(guidance_scale=1.0), None),
                (
                    "on DPM-Solver with flow sigmas",
                    dict(guidance_scale=4.5),
                    lambda: tiny.sana_pipeline(DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")),
                ),
            ],
            "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
            "height": [("64", dict(height=64), None)],
            "width": [("64", dict(width=64), None)],
            "eta": [("ignored by flow Euler", dict(eta=0.5), None)],
            "generator": [
                ("list", dict(generator=gens(2)), None),
                (
                    "stochastic sampling",
                    dict(generator=gens(2)),
                    lambda: tiny.sana_pipeline(FlowMatchEulerDiscreteScheduler(shift=7.0, stochastic_sampling=True)),
                ),
            ],
            "latents": [("given", dict(latents=torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))), None)],
            "prompt_embeds": [("other embeddings", dict(prompt_embeds=tiny.sana_prompt(2, seed=4)["prompt_embeds"]), None)],
            "prompt_attention_mask": [("masked tail", dict(prompt_attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]] * 2)), None)],
            "negative_prompt_embeds": [("other embeddings", dict(negative_prompt_embeds=tiny.sana_prompt(2, seed=5)["negative_prompt_embeds"]), None)],
            "negative_prompt_attention_mask": [("masked tail", dict(negative_prompt_attention_mask=torch.tensor([[1, 1, 0, 0, 0, 0]] * 2)), None)],
            "output_type": [("np", dict(output_type="np"), None), ("latent", dict(output_type="latent"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
            "clean_caption": [("off", dict(clean_caption=False), None)],
            "use_resolution_binning": [("on, no bins for this size", dict(use_resolution_binning=True), None)],
            "attention_kwargs": [("empty", dict(attention_kwargs={}), None)],
            "callback_on_step_end": [
                ("replaces latents", dict(callback_on_step_end=zero_latents_at(1)), None),
                ("interrupts", dict(callback_on_step_end=interrupt_at(1)), None),
            ],
            "callback_on_step_end_tensor_inputs": [
                (
                    "prompt embeddings read back",
                    dict(callback_on_step_end=swap_prompt_at(0), callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]),
                    None,
                )
            ],
            "max_sequence_length": [("60", dict(max_sequence_length=60), None)],
            "complex_human_instruction": [("none", dict(complex_human_instruction=None), None)],
        },
    ),
    # PixArt-Σ takes PixArt-α's parameters: α's cases, on Σ's default DPM-Solver, and a few of its own
    PixArtSigmaPipeline: (
        tiny.pixart_sigma_pipeline,
        dict(num_inference_steps=3, guidance_scale=4.0, use_resolution_binning=False, output_type="pt", **tiny.pixart_prompt(2)),
        {
            name: cases
            + {
                "num_inference_steps": [("five", dict(num_inference_steps=5), None)],
                "timesteps": [("custom on DPM-Solver", dict(timesteps=[90, 50, 10], num_inference_steps=None), None)],
                "eta": [("on DDIM", dict(eta=0.6), lambda: tiny.pixart_sigma_pipeline(DDIMScheduler(num_train_timesteps=100, clip_sample=False)))],
            }.get(name, [])
            for name, cases in PIXART_ALPHA_CASES.items()
        },
    ),
}


def _embedding_cases(flow_schedulers: bool = True) -> dict:
    """Cases shared by the families tested with precomputed T5/Gemma-like prompt embeddings and masks."""
    return {
        "prompt": [("string without a text encoder", dict(prompt="a cat"), None)],
        "negative_prompt": [("with embeddings", dict(negative_prompt="blue"), None)],
        "num_inference_steps": [("two", dict(num_inference_steps=2), None), ("five", dict(num_inference_steps=5), None)],
        "sigmas": [("custom", dict(sigmas=[1.0, 0.6, 0.3]), None)],
        "guidance_scale": [("unguided", dict(guidance_scale=1.0), None), ("strong", dict(guidance_scale=9.0), None)],
        "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
        "height": [("32", dict(height=32), None)],
        "width": [("24", dict(width=24), None)],
        "generator": [("list", dict(generator=gens(2)), None)],
        "latents": [("given", dict(latents=torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))), None)],
        "prompt_embeds": [("other embeddings", dict(prompt_embeds=tiny.pixart_prompt(2, seed=4)["prompt_embeds"]), None)],
        "prompt_attention_mask": [("masked tail", dict(prompt_attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]] * 2)), None)],
        "negative_prompt_embeds": [("other embeddings", dict(negative_prompt_embeds=tiny.pixart_prompt(2, seed=5)["negative_prompt_embeds"]), None)],
        "negative_prompt_attention_mask": [("masked tail", dict(negative_prompt_attention_mask=torch.tensor([[1, 1, 0, 0, 0, 0]] * 2)), None)],
        "max_sequence_length": [("60", dict(max_sequence_length=60), None)],
        "output_type": [("np", dict(output_type="np"), None), ("latent", dict(output_type="latent"), None)],
        "return_dict": [("tuple", dict(return_dict=False), None)],
        "attention_kwargs": [("empty", dict(attention_kwargs={}), None)],
        "callback_on_step_end": [
            ("replaces latents", dict(callback_on_step_end=zero_latents_at(1)), None),
            ("interrupts", dict(callback_on_step_end=interrupt_at(1)), None),
        ],
        "callback_on_step_end_tensor_inputs": [
            ("prompt embeddings read back", dict(callback_on_step_end=swap_prompt_at(0), callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]), None)
        ],
    }


EMBEDDED = dict(height=16, width=16, num_inference_steps=3, guidance_scale=4.0, output_type="pt", **tiny.pixart_prompt(2))
CASES[Lumina2Pipeline] = (
    tiny.lumina2_pipeline,
    EMBEDDED,
    {
        **_embedding_cases(),
        "system_prompt": [("other (unused with embeddings)", dict(system_prompt="You draw."), None)],
        "cfg_trunc_ratio": [
            ("0.5: guidance on the first half", dict(cfg_trunc_ratio=0.5, num_inference_steps=4), None),
            ("0: never guided", dict(cfg_trunc_ratio=0.0), None),
        ],
        "num_images_per_prompt": [
            ("two", dict(num_images_per_prompt=2), None, "stock crashes (RuntimeError) repeating given embeddings; gen names the mismatch")
        ],
        "cfg_normalization": [
            ("on", dict(cfg_normalization=True), None),
            ("on, with a window", dict(cfg_normalization=True, cfg_trunc_ratio=0.6, num_inference_steps=5), None),
        ],
    },
)
CASES[AuraFlowPipeline] = (tiny.auraflow_pipeline, EMBEDDED, _embedding_cases())
QWEN = tiny.qwen_prompt(2)
CASES[QwenImagePipeline] = (
    tiny.qwen_image_pipeline,
    dict(height=32, width=32, num_inference_steps=3, true_cfg_scale=4.0, output_type="pt", **QWEN),
    {
        "prompt": [("string without a text encoder", dict(prompt="a cat"), None)],
        "negative_prompt": [("with embeddings", dict(negative_prompt="blue"), None)],
        "true_cfg_scale": [
            ("1: one branch", dict(true_cfg_scale=1.0), None),
            ("4 without a negative prompt (unused)", dict(negative_prompt_embeds=None), None),
        ],
        "height": [("64", dict(height=64), None)],
        "width": [("48", dict(width=48), None)],
        "num_inference_steps": [("five", dict(num_inference_steps=5), None)],
        "sigmas": [("custom", dict(sigmas=[1.0, 0.6, 0.3]), None)],
        "guidance_scale": [("ignored without guidance embeddings", dict(guidance_scale=5.0), None)],
        "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
        "generator": [("list", dict(generator=gens(2)), None)],
        "latents": [("given, packed", dict(latents=torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(3))), None)],
        "prompt_embeds": [("other embeddings", dict(prompt_embeds=tiny.qwen_prompt(2, seed=4)["prompt_embeds"]), None)],
        "prompt_embeds_mask": [("masked tail", dict(prompt_embeds_mask=torch.tensor([[1, 1, 1, 1, 0, 0]] * 2)), None)],
        "negative_prompt_embeds": [("other embeddings", dict(negative_prompt_embeds=tiny.qwen_prompt(2, seed=5)["negative_prompt_embeds"]), None)],
        "negative_prompt_embeds_mask": [("masked tail", dict(negative_prompt_embeds_mask=torch.tensor([[1, 1, 0, 0, 0, 0]] * 2)), None)],
        "output_type": [("np", dict(output_type="np"), None), ("latent", dict(output_type="latent"), None)],
        "return_dict": [("tuple", dict(return_dict=False), None)],
        "attention_kwargs": [("empty", dict(attention_kwargs={}), None)],
        "callback_on_step_end": [
            ("replaces latents", dict(callback_on_step_end=zero_latents_at(1)), None),
            ("interrupts", dict(callback_on_step_end=interrupt_at(1)), None),
        ],
        "callback_on_step_end_tensor_inputs": [
            ("prompt embeddings read back", dict(callback_on_step_end=swap_prompt_at(0), callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]), None)
        ],
        "max_sequence_length": [("60", dict(max_sequence_length=60), None)],
    },
)


def reverse_captions_at(step: int):
    def callback(pipe, i, t, kwargs):
        return {"prompt_embeds": kwargs["prompt_embeds"][::-1]} if i == step else {}

    return callback


CASES[ZImagePipeline] = (
    tiny.z_image_pipeline,
    dict(height=32, width=32, num_inference_steps=3, output_type="pt", **tiny.z_image_prompt(2)),
    {
        "prompt": [("string without a text encoder", dict(prompt="a cat"), None)],
        "height": [("64", dict(height=64), None)],
        "width": [("48", dict(width=48), None)],
        "num_inference_steps": [("five", dict(num_inference_steps=5), None)],
        "sigmas": [("custom", dict(sigmas=[1.0, 0.6, 0.3]), None)],
        "guidance_scale": [
            ("0: unguided", dict(guidance_scale=0.0), None),
            ("0.5: still guided", dict(guidance_scale=0.5), None),
            ("9", dict(guidance_scale=9.0), None),
        ],
        "cfg_normalization": [("1.01 (clamps)", dict(cfg_normalization=1.01), None)],
        "cfg_truncation": [("0.6: guidance early only", dict(cfg_truncation=0.6, num_inference_steps=5), None), ("off (2)", dict(cfg_truncation=2.0), None)],
        "negative_prompt": [("with embeddings", dict(negative_prompt="blue"), None)],
        "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
        "generator": [("list", dict(generator=gens(2)), None)],
        "latents": [("given", dict(latents=torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(3))), None)],
        "prompt_embeds": [("other captions", dict(prompt_embeds=tiny.z_image_prompt(2, seed=4)["prompt_embeds"]), None)],
        "negative_prompt_embeds": [
            ("other captions", dict(negative_prompt_embeds=tiny.z_image_prompt(2, seed=5)["negative_prompt_embeds"]), None),
            ("missing (refused by stock)", dict(prompt=None, negative_prompt_embeds=None), None),
        ],
        "output_type": [("np", dict(output_type="np"), None), ("latent", dict(output_type="latent"), None)],
        "return_dict": [("tuple", dict(return_dict=False), None)],
        "joint_attention_kwargs": [("empty", dict(joint_attention_kwargs={}), None)],
        "callback_on_step_end": [
            ("replaces latents", dict(callback_on_step_end=zero_latents_at(1)), None),
            ("interrupts", dict(callback_on_step_end=interrupt_at(1)), None),
        ],
        "callback_on_step_end_tensor_inputs": [
            ("captions read back", dict(callback_on_step_end=reverse_captions_at(0), callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]), None)
        ],
        "max_sequence_length": [("60", dict(max_sequence_length=60), None)],
    },
)


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_every_stock_parameter_has_a_case(cls):
    assert_every_parameter_has_a_case(CASES, cls)


@pytest.mark.parametrize("cls, parameter, case", parametrized(CASES))
def test_stock_and_steered_agree(cls, parameter, case):
    assert_stock_and_steered_agree(CASES, cls, case)
