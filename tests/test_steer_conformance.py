"""`steer(pipe)` is a drop-in: for each of the six stock pipelines it supports, every parameter of the stock
`__call__` is exercised, stock vs steered, on tiny models with the same generator: the outputs must be
identical, or both must raise the same exception type. A parameter the stock signature gains without a
case here fails `test_every_stock_parameter_has_a_case`, so a diffusers upgrade cannot slip through unseen.

Deliberate departures are cases with a fourth element saying why: where stock returns NaN or crashes on
an input, the steered pipeline raises a ValueError naming the argument.
"""

import dataclasses
import inspect

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDPMPipeline,
    DiTPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PixArtAlphaPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
)
from diffusers.callbacks import SDCFGCutoffCallback

from gen import testing as tiny
from gen.pipelines import SteeredPipeline, steer


def gens(n: int, seed: int = 0) -> list:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def zero_latents_at(step: int):
    def callback(pipe, i, t, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == step else {}

    return callback


def interrupt_at(step: int):
    def callback(pipe, i, t, kwargs):
        if i == step:
            pipe._interrupt = True
        return {}

    return callback


def swap_prompt_at(step: int):
    def callback(pipe, i, t, kwargs):
        return {"prompt_embeds": kwargs["prompt_embeds"].flip(0)} if i == step else {}

    return callback


seen_legacy: list = []


def legacy_callback(step, t, latents):
    seen_legacy.append(step)


PIL_IMAGE = PIL.Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype("uint8"))
g = torch.Generator().manual_seed(7)
SD_EMBEDS = torch.randn(2, 16, tiny.TEXT_WIDTH, generator=g)
SD_NEGATIVE = torch.randn(2, 16, tiny.TEXT_WIDTH, generator=g)

# pipeline -> (build, base call, {parameter: [(case name, extra kwargs, build override or None)]})
CASES = {
    DDPMPipeline: (
        tiny.ddpm_pipeline,
        dict(batch_size=2, num_inference_steps=3, output_type="pt"),
        {
            "batch_size": [("one", dict(batch_size=1), None)],
            "generator": [("list", dict(generator=gens(2)), None), ("wrong-length list", dict(generator=gens(3)), None)],
            "num_inference_steps": [("two", dict(num_inference_steps=2), None)],
            "output_type": [("np", dict(output_type="np"), None), ("pil", dict(output_type="pil"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
        },
    ),
    DDIMPipeline: (
        tiny.ddim_pipeline,
        dict(batch_size=2, num_inference_steps=3, output_type="pt"),
        {
            "batch_size": [("three", dict(batch_size=3), None)],
            "generator": [("list", dict(generator=gens(2)), None)],
            "eta": [("stochastic", dict(eta=0.7), None), ("out of range", dict(eta=1.5), None, "stock returns NaN images; gen names eta")],
            "num_inference_steps": [("four", dict(num_inference_steps=4), None)],
            "use_clipped_model_output": [("clipped", dict(use_clipped_model_output=True, eta=0.5), None)],
            "output_type": [("np", dict(output_type="np"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
        },
    ),
    DiTPipeline: (
        tiny.dit_pipeline,
        dict(class_labels=[1, 7], num_inference_steps=3, guidance_scale=3.0, output_type="pt"),
        {
            "class_labels": [("one", dict(class_labels=[5]), None), ("int", dict(class_labels=4), None)],
            "guidance_scale": [("unguided", dict(guidance_scale=1.0), None)],
            "generator": [("list", dict(generator=gens(2)), None)],
            "num_inference_steps": [("two", dict(num_inference_steps=2), None)],
            "output_type": [("np", dict(output_type="np"), None), ("pil", dict(output_type="pil"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
        },
    ),
    StableDiffusionPipeline: (
        tiny.stable_diffusion_pipeline,
        dict(prompt=["a cat", "a red dog"], num_inference_steps=3, guidance_scale=5.0, output_type="pt"),
        {
            "prompt": [("string", dict(prompt="a blue dog"), None), ("none without embeddings", dict(prompt=None), None)],
            "height": [("24", dict(height=24), None), ("not a multiple of 8", dict(height=20), None)],
            "width": [("32", dict(width=32), None)],
            "num_inference_steps": [("two", dict(num_inference_steps=2), None)],
            "timesteps": [
                ("on DDIM (refused by stock)", dict(timesteps=[90, 50, 10]), None),
                (
                    "AYS schedule on DPM-Solver",
                    dict(timesteps=[99, 80, 50, 20, 1], num_inference_steps=None),
                    lambda: tiny.stable_diffusion_pipeline(DPMSolverMultistepScheduler(num_train_timesteps=100)),
                ),
                (
                    "on Euler",
                    dict(timesteps=[90, 50, 10], num_inference_steps=None),
                    lambda: tiny.stable_diffusion_pipeline(EulerDiscreteScheduler(num_train_timesteps=100)),
                ),
            ],
            "sigmas": [("on Euler", dict(sigmas=[3.0, 1.5, 0.5]), lambda: tiny.stable_diffusion_pipeline(EulerDiscreteScheduler(num_train_timesteps=100)))],
            "guidance_scale": [
                ("unguided", dict(guidance_scale=1.0), None),
                ("strong", dict(guidance_scale=9.0), None),
                (
                    "LCM UNet (scale as an embedding)",
                    dict(guidance_scale=6.0),
                    lambda: tiny.stable_diffusion_pipeline(LCMScheduler(num_train_timesteps=100), time_cond_proj_dim=8),
                ),
            ],
            "negative_prompt": [("string", dict(negative_prompt="blue"), None), ("list", dict(negative_prompt=["blue", "green"]), None)],
            "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
            "eta": [("stochastic", dict(eta=0.8), None)],
            "generator": [("list", dict(generator=gens(2)), None)],
            "latents": [("given", dict(latents=torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))), None)],
            "prompt_embeds": [("embeddings", dict(prompt=None, prompt_embeds=SD_EMBEDS), None), ("with prompt too", dict(prompt_embeds=SD_EMBEDS), None)],
            "negative_prompt_embeds": [("embeddings", dict(prompt=None, prompt_embeds=SD_EMBEDS, negative_prompt_embeds=SD_NEGATIVE), None)],
            "ip_adapter_image": [("PIL image", dict(prompt="a cat", ip_adapter_image=PIL_IMAGE), tiny.ip_adapter_pipeline)],
            "ip_adapter_image_embeds": [
                (
                    "embeddings",
                    dict(prompt="a cat", ip_adapter_image_embeds=[torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(5))]),
                    tiny.ip_adapter_pipeline,
                )
            ],
            "output_type": [("np", dict(output_type="np"), None), ("pil", dict(output_type="pil"), None), ("latent", dict(output_type="latent"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
            "cross_attention_kwargs": [("empty", dict(cross_attention_kwargs={}), None)],
            "guidance_rescale": [("0.7", dict(guidance_rescale=0.7), None)],
            "clip_skip": [("one", dict(clip_skip=1), None)],
            "callback_on_step_end": [
                ("replaces latents", dict(callback_on_step_end=zero_latents_at(1)), None),
                ("interrupts", dict(callback_on_step_end=interrupt_at(1)), None),
                ("cuts guidance (SDCFGCutoffCallback)", dict(prompt="a cat", callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=0.4)), None),
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
        },
    ),
    PixArtAlphaPipeline: (
        tiny.pixart_pipeline,
        dict(num_inference_steps=3, guidance_scale=4.0, use_resolution_binning=False, output_type="pt", **tiny.pixart_prompt(2)),
        {
            "prompt": [("string without a text encoder", dict(prompt="a cat"), None)],
            "negative_prompt": [("with embeddings", dict(negative_prompt="blue"), None)],
            "num_inference_steps": [("one (denoised output)", dict(num_inference_steps=1), None), ("two", dict(num_inference_steps=2), None)],
            "timesteps": [("on DDIM (refused by stock)", dict(timesteps=[90, 50]), None)],
            "sigmas": [("on DDIM (refused by stock)", dict(sigmas=[3.0, 1.0]), None)],
            "guidance_scale": [("unguided", dict(guidance_scale=1.0), None)],
            "num_images_per_prompt": [("two", dict(num_images_per_prompt=2), None)],
            "height": [("24", dict(height=24), None)],
            "width": [("32", dict(width=32), None)],
            "eta": [("stochastic", dict(eta=0.6), None)],
            "generator": [("list", dict(generator=gens(2)), None)],
            "latents": [("given", dict(latents=torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))), None)],
            "prompt_embeds": [("other embeddings", dict(prompt_embeds=tiny.pixart_prompt(2, seed=4)["prompt_embeds"]), None)],
            "prompt_attention_mask": [("masked tail", dict(prompt_attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]] * 2)), None)],
            "negative_prompt_embeds": [("other embeddings", dict(negative_prompt_embeds=tiny.pixart_prompt(2, seed=5)["negative_prompt_embeds"]), None)],
            "negative_prompt_attention_mask": [("masked tail", dict(negative_prompt_attention_mask=torch.tensor([[1, 1, 0, 0, 0, 0]] * 2)), None)],
            "output_type": [("np", dict(output_type="np"), None), ("latent", dict(output_type="latent"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
            "callback": [("every step", dict(callback=legacy_callback), None)],
            "callback_steps": [("every second step", dict(callback=legacy_callback, callback_steps=2), None)],
            "clean_caption": [("off", dict(clean_caption=False), None)],
            "use_resolution_binning": [("on, no bins for this size", dict(use_resolution_binning=True), None)],
            "max_sequence_length": [("60", dict(max_sequence_length=60), None)],
            "kwargs": [("deprecated mask_feature", dict(mask_feature=True), None)],
        },
    ),
    StableDiffusion3Pipeline: (
        tiny.sd3_pipeline,
        dict(num_inference_steps=3, guidance_scale=4.0, output_type="pt", **tiny.sd3_prompt(2)),
        {
            "prompt": [("string without text encoders", dict(prompt="a cat"), None)],
            "prompt_2": [("with embeddings", dict(prompt_2="a cat"), None)],
            "prompt_3": [("with embeddings", dict(prompt_3="a cat"), None)],
            "height": [("16", dict(height=16), None)],
            "width": [("24", dict(width=24), None)],
            "num_inference_steps": [("two", dict(num_inference_steps=2), None)],
            "sigmas": [("custom", dict(sigmas=[1.0, 0.6, 0.3]), None)],
            "guidance_scale": [("unguided", dict(guidance_scale=1.0), None)],
            "negative_prompt": [("with embeddings", dict(negative_prompt="blue"), None)],
            "negative_prompt_2": [("with embeddings", dict(negative_prompt_2="blue"), None)],
            "negative_prompt_3": [("with embeddings", dict(negative_prompt_3="blue"), None)],
            "num_images_per_prompt": [
                ("two", dict(num_images_per_prompt=2), None, "stock crashes (RuntimeError) repeating given embeddings; gen names the mismatch")
            ],
            "generator": [("list", dict(generator=gens(2)), None)],
            "latents": [("given", dict(latents=torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))), None)],
            "prompt_embeds": [("other embeddings", dict(prompt_embeds=tiny.sd3_prompt(2, seed=4)["prompt_embeds"]), None)],
            "negative_prompt_embeds": [("other embeddings", dict(negative_prompt_embeds=tiny.sd3_prompt(2, seed=5)["negative_prompt_embeds"]), None)],
            "pooled_prompt_embeds": [("other embeddings", dict(pooled_prompt_embeds=tiny.sd3_prompt(2, seed=6)["pooled_prompt_embeds"]), None)],
            "negative_pooled_prompt_embeds": [
                ("other embeddings", dict(negative_pooled_prompt_embeds=tiny.sd3_prompt(2, seed=7)["negative_pooled_prompt_embeds"]), None)
            ],
            "ip_adapter_image": [("no IP-Adapter loaded", dict(ip_adapter_image=PIL_IMAGE), None)],
            "ip_adapter_image_embeds": [("no IP-Adapter loaded", dict(ip_adapter_image_embeds=[torch.randn(4, 1, 16)]), None)],
            "output_type": [("np", dict(output_type="np"), None), ("latent", dict(output_type="latent"), None)],
            "return_dict": [("tuple", dict(return_dict=False), None)],
            "joint_attention_kwargs": [("empty", dict(joint_attention_kwargs={}), None)],
            "clip_skip": [("one", dict(clip_skip=1), None)],
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
            "max_sequence_length": [("128", dict(max_sequence_length=128), None)],
            "skip_guidance_layers": [("layer 0", dict(skip_guidance_layers=[0], skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0), None)],
            "skip_layer_guidance_scale": [
                ("1.5", dict(skip_guidance_layers=[0], skip_layer_guidance_scale=1.5, skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0), None)
            ],
            "skip_layer_guidance_stop": [("0.5", dict(skip_guidance_layers=[0], skip_layer_guidance_start=0.0, skip_layer_guidance_stop=0.5), None)],
            "skip_layer_guidance_start": [("0.3", dict(skip_guidance_layers=[0], skip_layer_guidance_start=0.3, skip_layer_guidance_stop=1.0), None)],
            "mu": [("given", dict(mu=0.5), None)],
        },
    ),
}


def stock_parameters(cls) -> set[str]:
    return {name for name in inspect.signature(cls.__call__).parameters if name != "self"}


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_every_stock_parameter_has_a_case(cls):
    assert_every_parameter_has_a_case(CASES, cls)


def _flat(output):
    if isinstance(output, tuple):
        return list(output)
    return [getattr(output, f.name) for f in dataclasses.fields(output) if f.name not in ("nfe", "reward_calls", "decodes", "trace")]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, PIL.Image.Image):
        return isinstance(b, PIL.Image.Image) and np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _outcome(call, kwargs):
    kwargs = dict(kwargs)
    if "generator" not in kwargs:
        kwargs["generator"] = torch.Generator().manual_seed(0)
    elif isinstance(kwargs["generator"], list):
        kwargs["generator"] = [torch.Generator().manual_seed(g.initial_seed()) for g in kwargs["generator"]]
    seen_legacy.clear()
    try:
        result = call(**kwargs)
    except Exception as err:  # the stock pipeline's own exception is the expected outcome
        return "raised", type(err), list(seen_legacy)
    return "returned", result, list(seen_legacy)


def parametrized(cases: dict) -> list:
    """One pytest case per (pipeline, parameter, case) of a table like CASES."""
    return [
        pytest.param(cls, name, case, id=f"{cls.__name__}-{name}-{case[0]}")
        for cls, (_, _, table) in cases.items()
        for name, table_cases in table.items()
        for case in table_cases
    ]


def assert_every_parameter_has_a_case(cases: dict, cls) -> None:
    missing = stock_parameters(cls) - set(cases[cls][2])
    assert not missing, f"{cls.__name__}.__call__ gained {sorted(missing)}: add conformance cases for them"


def assert_stock_and_steered_agree(cases: dict, cls, case) -> None:
    """The case run stock and steered with the same generator: the same output, or the same exception type; a
    case with a fourth element is a deliberate departure (stock crashes or returns non-finite images, steer
    names the argument with a ValueError)."""
    build, base, _ = cases[cls]
    _, extra, rebuild, *departure = case
    kwargs = {k: v for k, v in {**base, **extra}.items() if v is not None or k != "num_inference_steps"}
    pipe = (rebuild or build)()
    pipe.set_progress_bar_config(disable=True)
    stock = _outcome(pipe, kwargs)
    ours = _outcome(steer(pipe), kwargs)
    if departure:
        assert ours[0] == "raised" and issubclass(ours[1], ValueError), ours
        assert stock[0] == "raised" or not all(torch.isfinite(torch.as_tensor(x)).all() for x in _flat(stock[1]) if isinstance(x, torch.Tensor))
        return
    assert stock[0] == ours[0], f"stock {stock[0]} {stock[1]}, steered {ours[0]} {ours[1]}"
    assert stock[2] == ours[2], "legacy callbacks called at other steps"
    if stock[0] == "raised":
        assert issubclass(ours[1], stock[1]), f"stock raised {stock[1].__name__}, steered {ours[1].__name__}"
        return
    assert type(ours[1]) is type(stock[1]) or isinstance(ours[1], type(stock[1]))
    a, b = _flat(stock[1]), _flat(ours[1])
    assert len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("cls, parameter, case", parametrized(CASES))
def test_stock_and_steered_agree(cls, parameter, case):
    assert_stock_and_steered_agree(CASES, cls, case)


# -- the steered object -----------------------------------------------------------------------------------------------
def test_steer_returns_the_pipelines_own_class_sharing_its_state():
    pipe = tiny.stable_diffusion_pipeline()
    steered = steer(pipe)
    assert isinstance(steered, StableDiffusionPipeline) and isinstance(steered, SteeredPipeline)
    assert type(steered).__name__ == "StableDiffusionPipeline" and steer(steered) is steered
    assert steered.unet is pipe.unet and steered.components["vae"] is pipe.vae
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    assert steered.scheduler is pipe.scheduler  # one state
    steered.set_progress_bar_config(disable=False, desc="steered")
    assert pipe._progress_bar_config["desc"] == "steered"


def test_the_signature_is_stocks_plus_hooks_and_trace():
    steered = steer(tiny.stable_diffusion_pipeline())
    params = inspect.signature(steered.__call__).parameters
    stock = inspect.signature(StableDiffusionPipeline.__call__).parameters
    assert [p for p in params if p not in ("hooks", "trace", "guider")] == [p for p in stock if p != "self"]
    assert params["hooks"].kind is inspect.Parameter.KEYWORD_ONLY and params["trace"].default is False


def test_to_and_save_load_keep_it_steered(tmp_path):
    from diffusers import DiffusionPipeline

    steered = steer(tiny.ddim_pipeline())
    assert steer(steered.to("cpu")) is steered.to("cpu") and isinstance(steered.to(torch.float32), SteeredPipeline)
    steered.save_pretrained(tmp_path / "saved")
    assert '"_class_name": "DDIMPipeline"' in (tmp_path / "saved" / "model_index.json").read_text()
    assert type(DiffusionPipeline.from_pretrained(tmp_path / "saved")) is DDIMPipeline  # a stock folder
    again = type(steered).from_pretrained(tmp_path / "saved")
    assert isinstance(again, SteeredPipeline)
    out = again(batch_size=1, num_inference_steps=2, output_type="pt", hooks=[], generator=torch.Generator().manual_seed(0))
    assert out.nfe == 2


def test_return_dict_false_gives_the_stock_tuple_and_counts_stay_on_the_pipeline():
    pipe = steer(tiny.stable_diffusion_pipeline())
    result = pipe("a cat", num_inference_steps=3, output_type="pt", return_dict=False, generator=torch.Generator().manual_seed(0))
    assert isinstance(result, tuple) and len(result) == 2 and result[1] is None
    assert pipe.last_counts["nfe"] == 6
