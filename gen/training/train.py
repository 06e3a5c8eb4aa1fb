"""Train a diffusion model: pixel or latent, UNet or DiT, conditioned on class labels, text or image embeddings.

    python -m gen.training.train --data digits --condition class --resolution 16 --output-dir runs/digits
    accelerate launch -m gen.training.train ...            # GPUs, nodes
    torchrun --nproc_per_node 2 -m gen.training.train ...  # two CPU processes (gloo)

Every option is a command-line flag (see --help). The run writes a diffusers pipeline folder
(save_pretrained, safetensors) into --output-dir, checkpoints into --output-dir/checkpoints, and the loss
curve into --output-dir/losses.json. --resume latest continues from the newest complete checkpoint.

Randomness is drawn per optimisation step from a generator seeded by (seed, step, micro-batch, process),
and the data order per epoch from (seed, epoch): a resumed run repeats the uninterrupted one exactly.

CEP (--cep gaussian|uniform --cep-gamma G) perturbs condition embeddings in training only; see
gen.conditioning for the formula.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen.errors import ArgumentError, MissingFileError
from gen.training.loop import check_final_weights, data_loader, make_run_accelerator, optimise, start_trackers, trainer_run
from gen.training.options import LoopOptions, check_loop_options, config_parser, option, parse_config
from gen.training.families import FamilyCondition, check_without_family, encoders_through, family_encoders, family_names
from gen.training.models import BACKBONES, CONDITIONS, Architecture
from gen.training.objectives import diffusion_loss

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class TrainConfig(LoopOptions):
    """Options of `gen.training.train`; the loop's (steps, accumulation, precision, checkpoints, resume, trackers) are `LoopOptions`."""

    data: str = option(None, "bundled source (digits, ihc-patches, ...) or an image folder (metadata.jsonl/.csv or class subfolders)")
    caption_column: str = option("text", "the metadata column holding captions (--condition text)")
    output_dir: str = option(None, "where the pipeline, checkpoints and losses.json go")
    condition: str | None = option(None, f"one of {CONDITIONS}; default: text for an SDXL, SD3 or Flux --init-from folder, else class")
    backbone: str = option("unet", f"one of {BACKBONES}")
    resolution: int = option(16, "training resolution (pixels)")
    channels: int = option(0, "image channels; 0 takes them from the data")
    vae: str | None = option(None, "AutoencoderKL folder: train in its latent space (frozen)")
    text_encoder: str = option("minilm", "transformers text encoder for --condition text ('minilm': the bundled MiniLM)")
    text_max_length: int = option(16, "tokens per caption")
    embedder: str = option("zoo:patch-encoder", "image embedder for --condition embedding (gen.embedders spec)")
    init_from: str | None = option(None, "pipeline folder or zoo:NAME to start from (required for LoRA)")
    prediction_type: str | None = option(None, f"one of {PREDICTION_TYPES}; default: the --init-from model's, else epsilon")
    num_train_timesteps: int = option(1000, "diffusion steps of the training schedule")
    clip_sample: bool = option(True, "clip x0 to [-1, 1] when sampling pixel models (off for latents and embedding grids)")
    beta_schedule: str = option("squaredcos_cap_v2", "DDPMScheduler beta schedule")
    rescale_betas_zero_snr: bool | None = option(
        None, "zero terminal SNR (Lin et al. 2024; needs v_prediction or sample); default: the --init-from model's, else off"
    )
    timestep_spacing: str | None = option(None, f"sampler step spacing, one of {TIMESTEP_SPACINGS}; default: the --init-from model's, else leading")
    train_batch_size: int = option(64, "examples per process per micro-batch")
    learning_rate: float = option(3e-4, "peak learning rate")
    lr_scheduler: str = option("constant_with_warmup", "diffusers.optimization scheduler name")
    lr_warmup_steps: int = option(50, "warm-up steps")
    adam_weight_decay: float = option(0.0, "AdamW weight decay")
    condition_dropout: float = option(0.1, "probability of training a row unconditionally (for CFG)")
    cep: str | None = option(None, "condition embedding perturbation: gaussian or uniform (off by default)")
    cep_gamma: float = option(1.0, "CEP scale gamma: noise gamma/sqrt(d) per element")
    corrupt_rate: float = option(0.0, "synthetic corruption: fraction of labels flipped / captions swapped")
    corrupt_seed: int = option(0, "seed fixing which examples are corrupted")
    ema_decay: float = option(0.0, "EMA decay (diffusers EMAModel); 0 turns EMA off")
    snr_gamma: float = option(0.0, "Min-SNR loss weighting gamma; 0 turns it off")
    lora_rank: int = option(0, "train a LoRA of this rank on a frozen --init-from model")
    lora_targets: str | None = option(
        None,
        "module names LoRA adapts, comma-separated; default: those diffusers' LoRA script for the family adapts (SDXL, SD3, Flux), "
        "else to_q,to_k,to_v,to_out.0,conv1,conv2",
        aliases=("lora_layers",),
    )
    train_text_encoder: bool = option(False, "SDXL/SD3/Flux: also train the CLIP text encoders (LoRA on q/k/v/out with --lora-rank); T5 stays frozen")
    text_encoder_lr: float | None = option(None, "learning rate of the text encoders with --train-text-encoder; default: --learning-rate")
    encoder_dropout: str | None = option(
        None, "SDXL/SD3/Flux: per text encoder, the probability it alone sees the empty caption: NAME=P,... (e.g. text_encoder_3=0.3)"
    )
    center_crop: bool = option(True, "centre-crop images to the square; --no-center-crop: a random crop after resizing the short side (diffusers' default)")
    random_flip: bool = option(False, "flip half the images left-right (SDXL records the crop's left edge as diffusers' script does)")
    weighting_scheme: str | None = option(
        None, "SD3/Flux timestep density and loss weighting: sigma_sqrt, logit_normal, mode, cosmap or none; default: SD3 logit_normal, Flux none"
    )
    logit_mean: float = option(0.0, "mean of the logit_normal density")
    logit_std: float = option(1.0, "std of the logit_normal density (> 0)")
    mode_scale: float = option(1.29, "scale of the mode density, in [-1, 1.75]")
    guidance_scale: float | None = option(None, "Flux with a guidance embedding (FLUX.1-dev): the value fed to it in training; default 3.5")
    max_sequence_length: int | None = option(
        None, "SD3/Flux: T5 tokens per caption (1-512); default: the pipeline's (SD3 256, Flux 512); longer captions are refused"
    )
    gradient_checkpointing: bool = option(False, "trade compute for memory: recompute activations in the backward pass")
    noise_offset: float = option(0.0, "offset noise scale (diffusers' --noise_offset); 0 turns it off")
    allow_tf32: bool = option(False, "allow TF32 matmuls on Ampere+ GPUs (faster, slightly less precise)")
    use_8bit_adam: bool = option(False, "bitsandbytes' 8-bit AdamW (needs bitsandbytes)")
    dataloader_num_workers: int = option(0, "data loading processes (0: in the main process)")
    validation_prompts: str | None = option(
        None, "samples to log to the trackers while training: prompts, class labels or (embedding models) image paths, separated by |"
    )
    validation_steps: int = option(0, "log validation samples every N steps (0: only at the end, when --validation-prompts is given)")
    block_out_channels: str = option("32,64,64", "UNet channels per level")
    layers_per_block: int = option(2, "UNet resnets per level")
    attention_levels: str = option("1,2", "UNet levels with attention")
    attention_head_dim: int = option(8, "UNet attention head width")
    cross_attention_dim: int = option(64, "UNet cross-attention width (embedding conditions)")
    dit_layers: int = option(4, "DiT blocks")
    dit_heads: int = option(4, "DiT attention heads")
    dit_head_dim: int = option(16, "DiT head width")
    patch_size: int = option(2, "DiT patch size")
    norm_num_groups: int = option(0, "UNet GroupNorm groups; 0 picks the most that leave >= 4 channels per group")
    embedding_in_time: bool = option(False, "--condition embedding on a UNet: also add the embedding to the time embedding (every resnet block sees it)")
    embedding_tokens: bool = option(False, "--condition embedding on a UNet: project the embedding to 32 cross-attention tokens, not one")

    def architecture(self) -> Architecture:
        for name in ("layers_per_block", "attention_head_dim", "cross_attention_dim", "dit_layers", "dit_heads", "dit_head_dim", "patch_size"):
            if getattr(self, name) < 1:
                raise ArgumentError(f"{name}: must be >= 1, got {getattr(self, name)}.")
        channels = _ints(self.block_out_channels, "block_out_channels", minimum=1)
        if not channels:
            raise ArgumentError("block_out_channels: give at least one level, e.g. 32,64,64.")
        levels = [level for level in _ints(self.attention_levels, "attention_levels", minimum=0) if level < len(channels)]  # levels past the last are unused
        if any(channels[level] % self.attention_head_dim for level in levels):
            raise ArgumentError(
                f"attention_head_dim: {self.attention_head_dim} must divide the width of every attention level "
                f"({[channels[level] for level in levels]}); e.g. 4 or 8."
            )
        if self.norm_num_groups < 0 or (self.norm_num_groups and any(c % self.norm_num_groups for c in channels)):
            raise ArgumentError(
                f"norm_num_groups: must be 0 (automatic) or divide every width in --block-out-channels {self.block_out_channels}, "
                f"got {self.norm_num_groups}."
            )
        return Architecture(
            block_out_channels=channels,
            layers_per_block=self.layers_per_block,
            attention_levels=_ints(self.attention_levels, "attention_levels", minimum=0),
            attention_head_dim=self.attention_head_dim,
            cross_attention_dim=self.cross_attention_dim,
            dit_layers=self.dit_layers,
            dit_heads=self.dit_heads,
            dit_head_dim=self.dit_head_dim,
            patch_size=self.patch_size,
            norm_num_groups=self.norm_num_groups,
            embedding_in_time=self.embedding_in_time,
            embedding_tokens=self.embedding_tokens,
        )


def _ints(value, name: str, minimum: int) -> tuple[int, ...]:
    """Comma-separated integers (>= minimum) from a flag value; the error names the flag."""
    try:
        values = tuple(int(v) for v in str(value).split(",") if v.strip() != "")
    except ValueError:
        raise ArgumentError(f"{name}: expected comma-separated integers such as 32,64,64, got {value!r}.") from None
    if any(v < minimum for v in values):
        raise ArgumentError(f"{name}: every value must be >= {minimum}, got {value!r}.")
    return values


def parser() -> argparse.ArgumentParser:
    return config_parser(TrainConfig, "python -m gen.training.train", __doc__, required=("data", "output_dir"))


def parse_args(argv=None) -> TrainConfig:
    """Flags, over the values of a --config file (JSON, keys in either spelling), over the defaults."""
    return parse_config(TrainConfig, argv, "python -m gen.training.train", __doc__, required=("data", "output_dir"))


def make_optimizer(config, parameters):
    """AdamW, or bitsandbytes' 8-bit AdamW with --use-8bit-adam (as diffusers' training scripts offer it)."""
    if not config.use_8bit_adam:
        return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.adam_weight_decay)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ArgumentError("use_8bit_adam: needs the bitsandbytes package (pip install bitsandbytes, CUDA only); drop --use-8bit-adam.") from None
    return bnb.optim.AdamW8bit(parameters, lr=config.learning_rate, weight_decay=config.adam_weight_decay)


# -- validation: everything that can be checked before a file is written ---------------------------------------------
def check_config(config: TrainConfig) -> None:
    from diffusers.optimization import SchedulerType

    from gen.conditioning import CEP_KINDS, ConditionEmbeddingPerturbation
    from gen.training.data import SOURCES

    if config.data is None or config.output_dir is None:
        raise ArgumentError("data, output_dir: both are required.")
    if config.condition is not None and config.condition not in CONDITIONS:
        raise ArgumentError(f"condition: unknown condition type {config.condition!r}; choose one of {CONDITIONS}.")
    if config.backbone not in BACKBONES:
        raise ArgumentError(f"backbone: unknown backbone {config.backbone!r}; choose one of {BACKBONES}.")
    if config.cep is not None:
        if config.cep not in CEP_KINDS:
            raise ArgumentError(f"cep: unknown kind {config.cep!r}; choose one of {CEP_KINDS}.")
        ConditionEmbeddingPerturbation(config.cep, config.cep_gamma)
        if config.condition == "none":
            raise ArgumentError("cep: perturbs condition embeddings, but --condition none has none.")
    if not (config.cep_gamma >= 0 and math.isfinite(config.cep_gamma)):
        raise ArgumentError(f"cep_gamma: must be a finite number >= 0, got {config.cep_gamma}.")
    for name in ("condition_dropout", "corrupt_rate"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise ArgumentError(f"{name}: must lie in [0, 1), got {value}.")
    check_loop_options(config)
    if config.channels not in (0, 1, 3):
        raise ArgumentError(f"channels: 1 (greyscale), 3 (RGB) or 0 (as the data has them), got {config.channels}.")
    for name in ("resolution", "train_batch_size", "num_train_timesteps"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    if config.text_encoder_lr is not None and not (math.isfinite(config.text_encoder_lr) and config.text_encoder_lr > 0):
        raise ArgumentError(f"text_encoder_lr: must be a finite number > 0, got {config.text_encoder_lr}.")
    if config.lora_targets is not None and not [t for t in config.lora_targets.split(",") if t.strip()]:
        raise ArgumentError("lora_targets: name at least one module, e.g. to_q,to_k,to_v,to_out.0.")
    for name in ("learning_rate", "adam_weight_decay", "cep_gamma", "snr_gamma", "noise_offset"):
        value = getattr(config, name)
        if not math.isfinite(value) or value < 0 or (name == "learning_rate" and value == 0):
            allowed = "a finite number > 0" if name == "learning_rate" else "a finite number >= 0 (0: off)"
            raise ArgumentError(f"{name}: must be {allowed}, got {value}.")
    if config.dataloader_num_workers < 0 or config.validation_steps < 0:
        raise ArgumentError("dataloader_num_workers, validation_steps: must be >= 0.")
    if config.use_8bit_adam:
        make_optimizer(config, [torch.nn.Parameter(torch.zeros(1))])
    if config.lr_warmup_steps < 0:
        raise ArgumentError(f"lr_warmup_steps: must be >= 0, got {config.lr_warmup_steps}.")
    if config.prediction_type is not None and config.prediction_type not in PREDICTION_TYPES:
        raise ArgumentError(f"prediction_type: one of {PREDICTION_TYPES}, got {config.prediction_type!r}.")
    if config.timestep_spacing is not None and config.timestep_spacing not in TIMESTEP_SPACINGS:
        raise ArgumentError(f"timestep_spacing: one of {TIMESTEP_SPACINGS}, got {config.timestep_spacing!r}.")
    if config.rescale_betas_zero_snr and (config.prediction_type == "epsilon" or (config.prediction_type is None and not config.init_from)):
        raise ArgumentError(
            "rescale_betas_zero_snr: at zero terminal SNR an epsilon model cannot say what the image is; " "add --prediction-type v_prediction (or sample)."
        )
    if config.lr_scheduler not in {s.value for s in SchedulerType}:
        raise ArgumentError(f"lr_scheduler: unknown {config.lr_scheduler!r}; one of {sorted(s.value for s in SchedulerType)}.")
    if config.lora_rank < 0 or (config.lora_rank and not config.init_from):
        raise ArgumentError("lora_rank: LoRA adapts a trained model; pass --init-from <pipeline folder or zoo:NAME> with a rank >= 1.")
    if config.lora_rank and config.ema_decay:
        raise ArgumentError("ema_decay: EMA is not supported with --lora-rank; set --ema-decay 0.")
    if not 0 <= config.ema_decay < 1:
        raise ArgumentError(f"ema_decay: must lie in [0, 1), got {config.ema_decay}.")
    arch = config.architecture()
    if config.beta_schedule not in BETA_SCHEDULES:
        raise ArgumentError(f"beta_schedule: one of {BETA_SCHEDULES}, got {config.beta_schedule!r}.")
    multiple = arch.patch_size if config.backbone == "dit" else 2 ** (len(arch.block_out_channels) - 1)
    if not config.init_from and not config.vae and config.resolution % multiple:
        raise ArgumentError(
            f"resolution: {config.resolution} is not a multiple of {multiple} (the {config.backbone}'s downsampling); use e.g. {max(multiple, config.resolution // multiple * multiple)}."
        )
    if config.data in SOURCES and (config.random_flip or not config.center_crop):
        raise ArgumentError(f"random_flip, center_crop: crop and flip images read from a folder; the bundled {config.data!r} comes at its size. Drop them.")
    if config.data not in SOURCES:
        data = Path(config.data)
        if not data.is_dir():
            raise MissingFileError(f"data: {data} is not a folder and not a bundled source ({sorted(SOURCES)}).")
    from gen.io import check_output_dir

    check_output_dir(config.output_dir, "train", resume=config.resume is not None, overwrite=config.overwrite)
    if config.vae is not None:
        from gen.io import refuse_pickle

        refuse_pickle(config.vae, "vae")
        if not Path(config.vae).is_dir():
            raise MissingFileError(f"vae: no AutoencoderKL folder at {config.vae}.")


# -- pieces of the run -------------------------------------------------------------------------------------------------
def _to_device(value, device):
    """A condition (tensors, possibly in nested dicts and lists) on device."""
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value.to(device) if isinstance(value, torch.Tensor) else value


def load_init(spec: str):
    """A pipeline to fine-tune from: a folder or a named model (zoo:NAME, see gen.plugins)."""
    from gen.pipelines.loading import load_pipeline
    from gen.plugins import is_named, load_named

    if is_named(spec):
        return load_named(spec, "init_from")
    return load_pipeline(spec, name="init_from")


GENERIC_INITS = ("DDPMPipeline", "DiTPipeline", "StableDiffusionPipeline")  # beside gen's own pipelines and the families


def check_generic_init(init) -> None:
    """An --init-from pipeline the trainer knows how to feed (else its folder is refused, before any work)."""
    if init is None or type(init).__module__.startswith("gen.") or type(init).__name__ in GENERIC_INITS:
        return
    known = ", ".join([*GENERIC_INITS, *family_names()])
    raise ArgumentError(f"init_from: gen train fine-tunes {known} folders and gen's own pipelines; a {type(init).__name__} is none of them.")


def init_num_classes(init) -> int | None:
    """The class count of a class-conditional pipeline to fine-tune (its null class is that index)."""
    if init is None:
        return None
    if getattr(init, "config", None) is not None and init.config.get("num_classes"):
        return init.config.num_classes
    model = getattr(init, "transformer", None)
    if model is not None and model.config.get("num_embeds_ada_norm") and type(model).__name__ == "DiTTransformer2DModel":
        return model.config.num_embeds_ada_norm  # DiT's null class is num_classes
    return None


def _prompt_encoder(init):
    """Captions -> hidden states exactly as the pipeline being fine-tuned encodes prompts when it samples."""
    from diffusers import StableDiffusionPipeline

    if isinstance(init, StableDiffusionPipeline):
        return lambda captions: init.encode_prompt(captions, init.text_encoder.device, 1, False)[0]
    if hasattr(init, "encode_prompt"):
        return lambda captions: init.encode_prompt(list(captions))
    return None


def build_conditioner(config: TrainConfig, dataset, init=None):
    from gen.training import conditions

    if config.condition == "none":
        return conditions.NoCondition()
    if config.condition == "class":
        num_classes = getattr(dataset, "num_classes", None)
        if not num_classes:
            raise ArgumentError("condition: 'class' needs labels; the data has none (give each image a 'label' in metadata.jsonl).")
        model_classes = init_num_classes(init)
        if model_classes is not None:
            if num_classes > model_classes:
                raise ArgumentError(
                    f"data: labels run to {num_classes - 1} but the --init-from model has {model_classes} classes; relabel the data within [0, {model_classes})."
                )
            num_classes = model_classes
        return conditions.ClassCondition(num_classes)
    if config.condition == "text":
        if "caption" not in dataset[0]:
            raise ArgumentError("condition: 'text' needs captions; the data has none (give each image a 'text' in metadata.jsonl).")
        if init is not None and getattr(init, "text_encoder", None) is not None and getattr(init, "tokenizer", None) is not None:
            return conditions.TextCondition(init.tokenizer, init.text_encoder, _prompt_encoder(init))  # the fine-tuned model's own encoder
        from transformers import AutoModel, AutoTokenizer

        from gen.embedders import resolve_text_encoder

        path = resolve_text_encoder(config.text_encoder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=config.text_max_length)
            encoder = AutoModel.from_pretrained(path, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise MissingFileError(
                f"text_encoder: cannot load a transformers text encoder from {config.text_encoder!r} ({str(err).splitlines()[0]}); "
                "pass a local folder with its tokenizer, or 'minilm'."
            ) from None
        return conditions.TextCondition(tokenizer, encoder)
    from gen.embedders import load_embedder

    embedder = load_embedder(config.embedder)
    return conditions.EmbeddingCondition(embedder.width)


class WithEmbeddings(torch.utils.data.Dataset):
    """Adds each example's precomputed condition embedding (from its condition_image, else its pixels)."""

    def __init__(self, base, embedder, batch_size: int = 256):
        self.base = base
        images = [base[i].get("condition_image", base[i]["pixel_values"]) for i in range(len(base))]
        chunks = [embedder.embed_pixels(torch.stack(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        self.embeddings = torch.cat(chunks)

    def __getattr__(self, name):
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = {k: v for k, v in self.base[i].items() if k != "condition_image"}
        item["embedding"] = self.embeddings[i]
        return item


def schedule_changes(config, scheduler=None) -> dict:
    """The noise-schedule options this run sets (prediction type, zero terminal SNR, step spacing); with the
    --init-from model's `scheduler`, checked against what that scheduler and model allow."""
    changes = {name: getattr(config, name) for name in ("prediction_type", "rescale_betas_zero_snr", "timestep_spacing") if getattr(config, name) is not None}
    if scheduler is not None:
        if changes.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in inspect.signature(type(scheduler).__init__).parameters:
            raise ArgumentError(
                f"rescale_betas_zero_snr: the --init-from model's {type(scheduler).__name__} has no zero-SNR schedule; "
                "swap its scheduler for DDPM, DDIM, Euler or DPM-Solver first."
            )
        zero_snr = changes.get("rescale_betas_zero_snr", scheduler.config.get("rescale_betas_zero_snr", False))
        if zero_snr and changes.get("prediction_type", scheduler.config.get("prediction_type")) == "epsilon":
            raise ArgumentError(
                "rescale_betas_zero_snr: the --init-from model predicts epsilon, which says nothing at zero terminal SNR; "
                "add --prediction-type v_prediction (or sample)."
            )
    return changes


def build_pipeline(config, model, noise_scheduler, vae, conditioner, dataset, init=None):
    """The diffusers pipeline the run saves: a fine-tuned pipeline keeps its own class and every component
    but the trained backbone (its scheduler, set to this run's schedule options in `train`, text encoder,
    VAE...); a new model gets gen's pipeline for its condition."""
    from diffusers import DDPMPipeline

    if init is not None:
        name = "unet" if getattr(init, "unet", None) is not None else "transformer"
        init.register_modules(**{name: model})
        return init

    from gen.pipelines import ClassConditionalPipeline, TextToImagePipeline

    backbone = {"unet": model, "transformer": None} if config.backbone == "unet" else {"unet": None, "transformer": model}
    if config.condition == "none":
        if vae is not None:
            raise ArgumentError("condition: unconditional latent models are not supported; use --condition class or drop --vae.")
        return DDPMPipeline(unet=model, scheduler=noise_scheduler)
    if config.condition == "class":
        return ClassConditionalPipeline(
            scheduler=noise_scheduler, vae=vae, num_classes=conditioner.num_classes, class_names=getattr(dataset, "class_names", None), **backbone
        )
    if config.condition == "text":
        return TextToImagePipeline(tokenizer=conditioner.tokenizer, text_encoder=conditioner.encoder, scheduler=noise_scheduler, vae=vae, **backbone)
    from gen.pipelines.embedding import EmbeddingToImagePipeline

    from gen.plugins import is_named

    pipe = EmbeddingToImagePipeline(scheduler=noise_scheduler, vae=vae, embedder=config.embedder, **backbone)
    if not is_named(config.embedder):  # a zoo name resolves wherever gen is installed; any other embedder travels in the folder
        pipe.set_embedder(config.embedder)
    return pipe


@torch.no_grad()
def log_validation(config, accelerator, pipe, step: int, output_dir: Path) -> Path:
    """Sample the validation inputs (prompts, class labels or reference image paths, |-separated) with the
    model as it is now; a PNG grid into output_dir/validation/ and the images to every image-capable tracker."""
    from diffusers import DDIMScheduler
    from PIL import Image

    from gen.io import save_image
    from diffusers.image_processor import VaeImageProcessor

    items = [v.strip() for v in config.validation_prompts.split("|") if v.strip()]
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=25, generator=torch.Generator().manual_seed(config.seed), output_type="pt")
    if type(pipe).__name__ in ("ClassConditionalPipeline",):
        kwargs["class_labels"] = [int(v) for v in items]
    elif type(pipe).__name__ == "EmbeddingToImagePipeline":
        kwargs["images"] = [Image.open(v).convert("RGB") for v in items]
    elif hasattr(pipe, "tokenizer"):
        kwargs["prompt"] = items
        if "height" in inspect.signature(type(pipe).__call__).parameters:  # at the resolution being trained, not the pipeline's default
            kwargs.update(height=config.resolution, width=config.resolution)
    else:
        kwargs["batch_size"] = len(items)
    if "DDPM" in type(pipe.scheduler).__name__:
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    images = pipe(**kwargs).images
    images = images if isinstance(images, torch.Tensor) else torch.stack([torch.as_tensor(np.asarray(i)).permute(2, 0, 1) / 255.0 for i in images])
    path = save_image(
        output_dir / "validation" / f"step-{step}.png",
        VaeImageProcessor.numpy_to_pil(torch.cat(list(images.float().cpu()), dim=2)[None].permute(0, 2, 3, 1).numpy())[0],
    )
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation", images.float().cpu(), step)
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation": [wandb.Image(image.float().cpu(), caption=item) for image, item in zip(images, items)]}, step=step)
    return path


def save_pipeline(pipe, output_dir: Path) -> None:
    """save_pretrained into a staging folder, then move it in; model_index.json lands last, so a folder
    without it was never completely written."""
    from gen.io import save_into

    save_into(output_dir, lambda tmp: pipe.save_pretrained(str(tmp), safe_serialization=True), last="model_index.json")


def sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def check_sharding(config: TrainConfig, accelerator) -> None:
    """What FSDP and DeepSpeed (accelerate launch --config_file examples/accelerate/fsdp.yaml or deepspeed_zero2.yaml)
    do not combine with, named before any work."""
    from accelerate.utils import DistributedType

    for wanted, kind in (("ACCELERATE_USE_FSDP", DistributedType.FSDP), ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)):
        if os.environ.get(wanted, "false").lower() == "true" and accelerator.distributed_type != kind:
            # accelerate 1.16 sets FSDP and DeepSpeed up on accelerator devices only: elsewhere the processes would train unsharded
            raise ArgumentError(
                f"config_file: the accelerate launch asked for {kind.value}, but accelerate set up {accelerator.distributed_type.value} "
                f"(it shards only on GPUs and other accelerators); launch without that config here (`torchrun --nproc_per_node N -m gen.training.train ...` on CPUs)."
            )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        if config.resume:
            raise ArgumentError(
                "resume: DeepSpeed writes its checkpoints with torch.save (pickle), which gen does not load (unpickling can run code); "
                "for sharded runs that resume, launch with examples/accelerate/fsdp.yaml."
            )
        if config.train_text_encoder:
            raise ArgumentError("train_text_encoder: accelerate's DeepSpeed takes one model per run; drop the flag or launch with DDP.")
    if not sharded(accelerator):
        return
    for flag, why in (
        ("ema_decay", "an EMA copy of sharded weights"),
        ("train_text_encoder", "text encoders beside the sharded backbone"),
        ("validation_steps", "sampling mid-run from one process of a sharded model"),
    ):
        if getattr(config, flag):
            raise ArgumentError(f"{flag}: gen's FSDP runs do not support {why}; drop --{flag.replace('_', '-')} or launch without FSDP (DDP, DeepSpeed).")


def whole_model(model, state: dict):
    """The trained backbone as one model on the main process, from FSDP's gathered state dict (the prepared model's
    own parameters are shards)."""
    whole = type(model).from_config(model.config)
    whole.load_state_dict(state)
    return whole.eval()


# -- the run -----------------------------------------------------------------------------------------------------------
@trainer_run("gen train")
def train(config: TrainConfig) -> Path:
    """Run training; returns the output folder."""
    check_config(config)
    from diffusers import AutoencoderKL, DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    import gen.pipelines  # noqa: F401  (imported now: a long run must not meet edited code at save time)
    from gen.conditioning import ConditionEmbeddingPerturbation, disable_builtin_label_dropout
    from gen.io import write_json
    from gen.training import conditions
    from gen.training.data import CorruptedConditions, load_data
    from gen.training.lora import DEFAULT_TARGETS, add_lora, save_lora
    from gen.training.models import build_backbone

    output_dir = Path(config.output_dir)
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and importlib.util.find_spec("deepspeed") is None:
        raise ArgumentError(
            "config_file: the accelerate launch asked for DeepSpeed, which is not installed; pip install deepspeed (GPUs only) or launch without it."
        )
    accelerator = make_run_accelerator(config, output_dir)
    check_sharding(config, accelerator)
    torch.manual_seed(config.seed)

    # data and conditions
    init = load_init(config.init_from) if config.init_from else None
    family_class = family_names().get(type(init).__name__) if init is not None else None
    if family_class is None:
        check_without_family(config, init)
        check_generic_init(init)
    config = dataclasses.replace(config, condition=config.condition or ("text" if family_class is not None else "class"))
    family = family_class(init, config) if family_class is not None else None
    channels = config.channels
    dataset = load_data(
        config.data,
        config.resolution,
        channels or 3,
        name="data",
        caption_column=config.caption_column,
        center_crop=config.center_crop,
        random_flip=config.random_flip,
        seed=config.seed,
    )
    if not channels:
        channels = dataset[0]["pixel_values"].shape[0]
    if family is not None:
        family.check(dataset)
        conditioner = FamilyCondition(family, train_encoders=config.train_text_encoder)
    else:
        conditioner = build_conditioner(config, dataset, init)
    schedule = schedule_changes(config, init.scheduler if init is not None else None)
    if init is not None and any(init.scheduler.config.get(name) != value for name, value in schedule.items()):
        init.scheduler = type(init.scheduler).from_config(init.scheduler.config, **schedule)  # the sampler it saves with
    if config.condition == "embedding":
        from gen.embedders import load_embedder

        dataset = WithEmbeddings(dataset, load_embedder(config.embedder))
    if config.corrupt_rate > 0:
        dataset = CorruptedConditions(dataset, config.corrupt_rate, getattr(dataset, "num_classes", None), config.corrupt_seed)

    # models
    vae = None
    if config.vae is not None:
        vae = AutoencoderKL.from_pretrained(config.vae, use_safetensors=True).eval().requires_grad_(False)
    elif init is not None:
        vae = getattr(init, "vae", None)
    if vae is not None:
        vae = vae.requires_grad_(False).to(accelerator.device)
    if isinstance(conditioner, conditions.TextCondition):
        conditioner.encoder.to(accelerator.device)
    trained_encoders = family_encoders(family, config, accelerator) if family is not None else {}
    latent_channels = vae.config.latent_channels if vae is not None else channels
    latent_size = config.resolution // (2 ** (len(vae.config.block_out_channels) - 1)) if vae is not None else config.resolution
    if init is not None:
        model = init.unet if getattr(init, "unet", None) is not None else init.transformer
    else:
        model = build_backbone(
            config.backbone,
            config.condition,
            sample_size=latent_size,
            channels=latent_channels,
            arch=config.architecture(),
            num_classes=getattr(conditioner, "num_classes", None),
            condition_width=conditioner.width,
        )
    model.train()
    if config.condition == "class":
        disable_builtin_label_dropout(model)  # ours (--condition-dropout) is the only one
    if isinstance(conditioner, conditions.EmbeddingCondition):
        conditioner.bind(model)
    lora_config = None
    if config.lora_rank:
        targets = tuple(t.strip() for t in (config.lora_targets or ",".join(family.lora_targets if family else DEFAULT_TARGETS)).split(",") if t.strip())
        lora_config = add_lora(model, config.lora_rank, targets, strict=config.lora_targets is not None)
        low_precision = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision)
        if low_precision is not None and not sharded(accelerator):
            # as diffusers' LoRA scripts: the frozen weights (backbone and text encoders; nothing of them is saved) in the
            # run's precision, the adapters in float32 (a Flux-size base in float32 alone would take 48 GB); FSDP shards
            # instead, and needs one dtype per unit
            from diffusers.training_utils import cast_training_params

            adapted = [model, *[getattr(init, name) for name in (family.present if family is not None else ())]]
            for module in adapted:
                module.to(dtype=low_precision)
            cast_training_params(adapted, dtype=torch.float32)
    if family is not None:
        noise_scheduler = family.training_schedule()
    elif init is not None:  # the fine-tuned model's noise schedule (its sampler is kept for saving)
        noise_scheduler = DDPMScheduler.from_config(init.scheduler.config)
    else:
        noise_scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            clip_sample=config.clip_sample and vae is None,
            **{"prediction_type": "epsilon", **schedule},
        )
    cep = ConditionEmbeddingPerturbation(config.cep, config.cep_gamma) if config.cep else None
    ema = EMAModel(model.parameters(), decay=config.ema_decay, model_cls=type(model), model_config=model.config) if config.ema_decay else None

    trainable = [p for p in model.parameters() if p.requires_grad]
    encoder_parameters = [p for encoder, _ in trained_encoders.values() for p in encoder.parameters() if p.requires_grad]
    if encoder_parameters:
        trainable = [{"params": trainable}, {"params": encoder_parameters, "lr": config.text_encoder_lr or config.learning_rate}]
    if config.gradient_checkpointing:
        if not getattr(model, "_supports_gradient_checkpointing", False):
            raise ArgumentError(f"gradient_checkpointing: {type(model).__name__} does not support it; drop --gradient-checkpointing.")
        model.enable_gradient_checkpointing()
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    optimizer = make_optimizer(config, trainable)
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    loader, order = data_loader(dataset, config.train_batch_size, config.dataloader_num_workers)
    model, *prepared_encoders, optimizer, loader, lr_scheduler = accelerator.prepare(
        model, *[encoder for encoder, _ in trained_encoders.values()], optimizer, loader, lr_scheduler
    )
    if ema is not None:
        ema.to(accelerator.device)

        def save_ema(models, weights, folder):
            if accelerator.is_main_process:
                ema.save_pretrained(os.path.join(folder, "ema"))

        def load_ema(models, folder):
            # what EMAModel.save_pretrained wrote (the averaged weights, and the EMA's state in config.json), read
            # directly: EMAModel.from_pretrained rebuilds the model from a path, with a FutureWarning and two
            # "config attributes ... not expected" warnings on every resume
            import json

            from gen.io import load_safetensors

            weights = load_safetensors(Path(folder) / "ema" / "diffusion_pytorch_model.safetensors", "resume")
            saved = json.loads((Path(folder) / "ema" / "config.json").read_text())
            state = {k: saved[k] for k in ("decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup", "inv_gamma", "power")}
            names = [name for name, _ in accelerator.unwrap_model(model).named_parameters()]
            ema.load_state_dict({**state, "shadow_params": [weights[name] for name in names]})
            ema.to(accelerator.device)

        accelerator.register_save_state_pre_hook(save_ema)
        accelerator.register_load_state_pre_hook(load_ema)

    if accelerator.is_main_process:  # every input checked and loaded: from here on the run writes
        from gen.io import mark_output_dir

        mark_output_dir(output_dir, "train", resume=config.resume is not None, overwrite=config.overwrite)
        write_json(output_dir / "train_config.json", dataclasses.asdict(config))  # now, so a checkpoint can be exported mid-run

    start_trackers(accelerator, config, "gen-train")

    def compute_loss(batch, where):
        g = where.generator()
        x0 = batch["pixel_values"].to(accelerator.device)
        if family is not None:
            with encoders_through(init, dict(zip(trained_encoders, prepared_encoders))):
                cond = conditioner(batch, g, config.condition_dropout, cep, where.generator(stream=1))
            return family.loss(model, family.latents(vae, x0, g), _to_device(cond, accelerator.device), g, noise_scheduler)
        if vae is not None:
            with torch.no_grad():
                x0 = vae.encode(x0.to(vae.dtype)).latent_dist.sample(generator=g) * vae.config.scaling_factor
        cep_g = where.generator(stream=1)
        cond = _to_device(conditioner(batch, g, config.condition_dropout, cep, cep_g), accelerator.device)
        with conditioner.cep_context(accelerator.unwrap_model(model), cep, cep_g):
            return diffusion_loss(
                model, noise_scheduler, x0, cond, g, noise_scheduler.config.prediction_type, config.snr_gamma, latent_channels, config.noise_offset
            )

    def validate(step: int) -> None:
        if config.validation_prompts and config.validation_steps and step % config.validation_steps == 0 and accelerator.is_main_process:
            log_validation(
                config, accelerator, build_pipeline(config, accelerator.unwrap_model(model), noise_scheduler, vae, conditioner, dataset, init), step, output_dir
            )
            model.train()

    optimise(
        accelerator,
        config,
        output_dir,
        model,
        optimizer,
        lr_scheduler,
        loader,
        order,
        compute_loss,
        after_step=(lambda: ema.step(model.parameters())) if ema is not None else None,
        on_step=validate,
    )

    accelerator.wait_for_everyone()
    sharded_state = accelerator.get_state_dict(model) if sharded(accelerator) else None  # every process: gathers the shards to the main one
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model).eval()
        if sharded_state is not None and lora_config is None:
            final = whole_model(final, sharded_state)
        if ema is not None:
            ema.copy_to(final.parameters())
        check_final_weights(sharded_state.values() if sharded_state is not None else final.parameters())
        for encoder, _ in trained_encoders.values():
            check_final_weights(encoder.parameters())
        if lora_config is not None:
            save_lora(
                final,
                lora_config,
                output_dir / "lora",
                base=config.init_from,
                component="unet" if getattr(init, "unet", None) is not None else "transformer",
                encoders={name: pair for name, pair in trained_encoders.items() if pair[1] is not None},
                state_dict=sharded_state,
            )
        else:
            save_pipeline(build_pipeline(config, final, noise_scheduler, vae, conditioner, dataset, init), output_dir)
        write_json(output_dir / "train_config.json", dataclasses.asdict(config))
        if config.validation_prompts and lora_config is None:
            log_validation(
                config, accelerator, build_pipeline(config, final, noise_scheduler, vae, conditioner, dataset, init), config.max_train_steps, output_dir
            )
    accelerator.end_training()
    return output_dir


def main(argv=None) -> int:
    """`python -m gen.training.train`: one line on stderr and status 2 for a mistake, 1 for a fault (--debug: traceback)."""
    from gen.errors import exit_status, report

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        train(parse_args(argv))
    except SystemExit as stop:  # argparse's exit (--help, or a one-line mistake): its status, as a return value
        return exit_status(stop)
    except Exception as err:
        return report(err, debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
