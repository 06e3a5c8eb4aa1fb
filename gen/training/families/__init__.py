"""The text-to-image families gen fine-tunes from a stock pipeline folder (`gen train --init-from FOLDER`):
SDXL (`sdxl.py`), SD3 (`sd3.py`) and Flux (`flux.py`), one small file each. A family says how its captions
become backbone inputs (through the pipeline's own `encode_prompt`, so training sees what sampling will),
what else its backbone is fed (SDXL's size/crop time ids, Flux's packed latents, position ids and guidance
value), how images become latents, its loss, and which modules diffusers' LoRA scripts adapt.

What every family shares lives here: the checks of the family flags, `FamilyCondition` (condition dropout for
all encoders and per encoder, CEP on every text embedding, per-token and pooled) and the text encoders' set-up;
the losses are in `gen.training.objectives`."""

from __future__ import annotations

import contextlib
import math

import torch

from gen.conditioning import drop_mask
from gen.errors import ArgumentError

WEIGHTING_SCHEMES = ("sigma_sqrt", "logit_normal", "mode", "cosmap", "none")
MODE_SCALE_MAX = 2 / (math.pi - 2)  # SD3 paper, eq. 20: f_mode(u; s) is a monotone map of [0, 1] for s in [-1, 2 / (pi - 2)]
CLIP_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # diffusers' scripts' text-encoder LoRA targets


class TrainingFamily:
    """What fine-tuning one family needs beyond the shared trainer. Subclasses set the class attributes and
    `encode`, `backbone_inputs`, `loss`; `check` runs before anything is written."""

    name = ""
    pipeline = ""  # the diffusers pipeline class it fine-tunes
    backbone = "transformer"  # the pipeline component trained
    encoders: tuple[str, ...] = ()  # the text encoders, in the order encode_prompt takes prompt, prompt_2, prompt_3
    trainable_encoders: tuple[str, ...] = ()  # those --train-text-encoder trains (the CLIP ones, as diffusers' scripts do)
    lora_targets: tuple[str, ...] = ()  # the backbone modules diffusers' LoRA script for the family adapts
    flow_matching = False
    default_weighting = "none"

    def __init__(self, pipe, config):
        self.pipe, self.config = pipe, config
        self.present = tuple(name for name in self.encoders if getattr(pipe, name, None) is not None)

    # -- before step one -------------------------------------------------------------------------------------------
    def check(self, dataset) -> None:
        """Flags against this family and the folder, the resolution against the VAE, captions against limits."""
        config = self.config
        if not self.present:
            raise ArgumentError(
                f"init_from: the {self.pipeline} folder was saved without its text encoders, which training needs to read the captions; "
                "save it with them (or load them into the pipeline before saving)."
            )
        if config.condition not in (None, "text"):
            raise ArgumentError(f"condition: the --init-from {self.pipeline} is conditioned on text; drop --condition {config.condition} (or pass text).")
        if not self.flow_matching:
            for flag in changed(config, FLOW_FLAGS):
                raise ArgumentError(
                    f"{flag}: sets the flow-matching timestep density of SD3 and Flux, but the --init-from folder is a {self.pipeline} "
                    f"({self.pipe.scheduler.config.get('prediction_type', 'epsilon')} prediction); drop --{flag.replace('_', '-')}."
                )
        else:
            if config.weighting_scheme is not None and config.weighting_scheme not in WEIGHTING_SCHEMES:
                raise ArgumentError(f"weighting_scheme: one of {WEIGHTING_SCHEMES}, got {config.weighting_scheme!r}.")
            if not (config.logit_std > 0 and math.isfinite(config.logit_std) and math.isfinite(config.logit_mean)):
                raise ArgumentError(f"logit_std, logit_mean: finite numbers, the std > 0; got {config.logit_mean}, {config.logit_std}.")
            if not (math.isfinite(config.mode_scale) and -1 <= config.mode_scale <= MODE_SCALE_MAX):
                raise ArgumentError(
                    f"mode_scale: must lie in [-1, {MODE_SCALE_MAX:.3f}] (the SD3 paper's range, where the 'mode' map of [0, 1] stays monotone), got {config.mode_scale}."
                )
            for flag, off in (("prediction_type", None), ("rescale_betas_zero_snr", None), ("snr_gamma", 0.0), ("noise_offset", 0.0)):
                if getattr(config, flag) != off:
                    raise ArgumentError(
                        f"{flag}: belongs to noise-prediction schedules; the --init-from {self.pipeline} learns a flow-matching velocity "
                        f"(see --weighting-scheme); drop --{flag.replace('_', '-')}."
                    )
        if config.guidance_scale is not None and not self.guidance_embedded():
            raise ArgumentError(
                f"guidance_scale: the value of Flux's guidance embedding, but the --init-from {self.pipeline}'s backbone has none "
                "(only guidance-distilled Flux, as FLUX.1-dev, has one); drop --guidance-scale."
            )
        if config.max_sequence_length is not None and not self.has_t5():
            raise ArgumentError(f"max_sequence_length: the T5 prompt length of SD3 and Flux; the --init-from {self.pipeline} has no T5; drop it.")
        if config.max_sequence_length is not None and not 1 <= config.max_sequence_length <= 512:
            raise ArgumentError(f"max_sequence_length: must lie in [1, 512] (the stock pipelines' bound), got {config.max_sequence_length}.")
        multiple = self.resolution_multiple()
        if config.resolution % multiple:
            raise ArgumentError(
                f"resolution: {config.resolution} is not a multiple of {multiple} (the {self.pipeline}'s VAE factor {self.pipe.vae_scale_factor}"
                f"{' times its patch size' if multiple != self.pipe.vae_scale_factor else ''}); use {max(multiple, config.resolution // multiple * multiple)}."
            )
        self.encoder_dropout()  # its spec checked now, not at step one
        if config.train_text_encoder and not any(getattr(self.pipe, name, None) is not None for name in self.trainable_encoders):
            raise ArgumentError(f"train_text_encoder: the --init-from {self.pipeline} has none of {list(self.trainable_encoders)}; drop the flag.")
        self.check_captions(dataset)

    def resolution_multiple(self) -> int:
        return self.pipe.vae_scale_factor

    def guidance_embedded(self) -> bool:
        return False

    def has_t5(self) -> bool:
        return False

    def check_captions(self, dataset) -> None:
        """No caption longer than --max-sequence-length T5 tokens (stock pipelines cut it, with a logged notice; training on a cut caption
        teaches the model an image its caption does not describe)."""
        if not self.has_t5():
            return
        tokenizer = getattr(self.pipe, self.t5_tokenizer)
        limit = self.max_sequence_length()
        captions = getattr(dataset, "captions", None) or [dataset[i]["caption"] for i in range(len(dataset))]
        for i, caption in enumerate(captions):
            length = len(tokenizer(caption, truncation=False).input_ids)
            if length > limit:
                raise ArgumentError(
                    f"max_sequence_length: caption {i} ({caption[:40]!r}...) is {length} T5 tokens, over {limit}; "
                    f"pass --max-sequence-length {min(512, length)} or shorten the caption."
                )

    def max_sequence_length(self) -> int:
        return self.config.max_sequence_length or self.default_sequence_length

    def encoder_dropout(self) -> dict[str, float]:
        """--encoder-dropout NAME=P,...: the probability that one encoder alone sees the empty caption."""
        spec = self.config.encoder_dropout
        if not spec:
            return {}
        result = {}
        for part in spec.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            try:
                probability = float(value)
            except ValueError:
                probability = -1.0
            if name not in self.present:
                raise ArgumentError(f"encoder_dropout: {name!r} is not a text encoder of the --init-from {self.pipeline}; name one of {list(self.present)}.")
            if not 0 <= probability < 1:
                raise ArgumentError(f"encoder_dropout: {part.strip()!r} needs a probability in [0, 1), e.g. {name}=0.1.")
            result[name] = probability
        return result

    # -- per step --------------------------------------------------------------------------------------------------
    def encode(self, captions: list[list[str]]) -> dict[str, torch.Tensor]:
        """Per-encoder captions (one list per present encoder, in `encoders` order) -> {'prompt_embeds', 'pooled'[, ...]}."""
        raise NotImplementedError

    def prompts(self, captions: list[list[str]]) -> dict[str, list[str]]:
        """encode_prompt's prompt / prompt_2 / prompt_3 arguments: each present encoder's captions."""
        names = ("prompt", "prompt_2", "prompt_3")
        by_encoder = dict(zip(self.present, captions))
        return {names[i]: by_encoder.get(name, captions[0]) for i, name in enumerate(self.encoders)}

    def training_schedule(self):
        """A fresh copy of the folder's noise schedule to train on (its sampler is kept for saving): the flow schedule
        itself, or DDPM over the folder's betas."""
        from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

        return (FlowMatchEulerDiscreteScheduler if self.flow_matching else DDPMScheduler).from_config(self.pipe.scheduler.config)

    def latents(self, vae, pixels: torch.Tensor, generator) -> torch.Tensor:
        """Images in [-1, 1] -> what the backbone denoises: the VAE's sample, shifted and scaled as the pipeline decodes it."""
        with torch.no_grad():
            latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator=generator)
        shift = vae.config.get("shift_factor") or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def unconditional(self, embeds: dict, dropped: torch.Tensor) -> dict:
        """The rows dropped for classifier-free guidance as the pipeline's sampling feeds its unconditional branch:
        here the empty caption's embeddings, which they already hold."""
        return embeds

    def backbone_inputs(self, embeds: dict, batch: dict) -> dict:
        raise NotImplementedError

    def loss(self, model, latents: torch.Tensor, inputs: dict, generator, noise_scheduler) -> torch.Tensor:
        raise NotImplementedError


FLOW_FLAGS = ("weighting_scheme", "logit_mean", "logit_std", "mode_scale")
FAMILY_FLAGS = (*FLOW_FLAGS, "guidance_scale", "max_sequence_length", "encoder_dropout", "train_text_encoder")


def changed(config, flags: tuple[str, ...]) -> list[str]:
    """Those of `flags` the config sets away from its class's defaults (the dataclass fields say what they are)."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    return [flag for flag in flags if getattr(config, flag) != defaults[flag]]


class FamilyCondition:
    """Captions -> a family's backbone inputs, as the trainer's conditioners do (`gen.training.conditions`).

    Condition dropout (--condition-dropout) gives a row the empty caption in every encoder, as stock pipelines
    encode an empty negative prompt; --encoder-dropout gives it to one encoder alone, drawn independently per
    encoder (the SD3 paper's independent encoder dropout, which lets sampling leave T5 out). CEP perturbs every
    text embedding the backbone reads, per-token and pooled, on the rows that kept their caption. With frozen
    encoders, each distinct set of per-encoder captions is encoded once, alone."""

    kind = "text"
    width = None

    def __init__(self, family: TrainingFamily, train_encoders: bool = False):
        self.family = family
        self.dropout_by_encoder = family.encoder_dropout()
        self.train_encoders = train_encoders
        self._cache: dict[tuple, dict] = {}

    def encode(self, captions: list[list[str]]) -> dict[str, torch.Tensor]:
        if self.train_encoders:
            return self.family.encode(captions)
        rows = list(zip(*captions))
        for row in sorted({row for row in rows if row not in self._cache}):
            # one row at a time: a caption's embedding must not depend on which others shared its first batch (a batched
            # matmul's sums run in another order), or a resumed run would differ from the uninterrupted one
            with torch.no_grad():
                encoded = self.family.encode([[caption] for caption in row])
            self._cache[row] = {k: v[0] for k, v in encoded.items()}
        return {k: torch.stack([self._cache[row][k] for row in rows]) for k in self._cache[rows[0]]}

    def __call__(self, batch, generator, dropout: float, cep, cep_generator=None) -> dict:
        captions = list(batch["caption"])
        dropped = drop_mask(len(captions), dropout, generator)
        per_encoder = []
        for name in self.family.present:
            alone = drop_mask(len(captions), self.dropout_by_encoder.get(name, 0.0), generator)
            per_encoder.append(["" if d or a else c for c, d, a in zip(captions, dropped.tolist(), alone.tolist())])
        embeds = self.family.unconditional(self.encode(per_encoder), dropped)
        if cep is not None:
            embeds = {k: cep.perturb(v, ~dropped, cep_generator) if k in ("prompt_embeds", "pooled") else v for k, v in embeds.items()}
        return self.family.backbone_inputs(embeds, batch)

    def cep_context(self, model, cep, generator):
        return contextlib.nullcontext()


def family_names() -> dict[str, type[TrainingFamily]]:
    from gen.training.families.flux import Flux
    from gen.training.families.sd3 import SD3
    from gen.training.families.sdxl import SDXL

    return {family.pipeline: family for family in (SDXL, SD3, Flux)}


def family_of(pipe, config) -> TrainingFamily | None:
    """The family of a loaded --init-from pipeline (by its class), or None for the models the generic path trains."""
    family = family_names().get(type(pipe).__name__)
    return family(pipe, config) if family is not None else None


def check_without_family(config, pipe=None) -> None:
    """Family flags given for a model of no family (a new model, SD 1.x/2.x, DiT...): named before any work."""
    what = f"the --init-from {type(pipe).__name__}" if pipe is not None else "a model trained from scratch"
    supported = ", ".join(family_names())
    for flag in changed(config, FAMILY_FLAGS):
        raise ArgumentError(f"{flag}: applies to fine-tuning {supported} folders; {what} is none of them. Drop --{flag.replace('_', '-')}.")


def family_encoders(family: TrainingFamily, config, accelerator) -> dict:
    """The family's text encoders frozen and on the run's device, in the folder's precision (the pipeline saved
    at the end keeps them); with --train-text-encoder the CLIP ones trainable, whole or as a LoRA on q/k/v/out
    with --lora-rank. Returns {name: (encoder, its LoraConfig or None)} of those trained."""
    from gen.training.lora import add_lora

    trained = {}
    for name in family.present:
        encoder = getattr(family.pipe, name).requires_grad_(False).eval().to(accelerator.device)
        if config.train_text_encoder and name in family.trainable_encoders:
            lora = add_lora(encoder, config.lora_rank, CLIP_LORA_TARGETS) if config.lora_rank else None
            if lora is None:
                encoder.requires_grad_(True)
            trained[name] = (encoder.train(), lora)
    return trained


class _Through:
    """An encoder called through its accelerate wrapper, read through to the module (encode_prompt reads .dtype)."""

    def __init__(self, wrapper):
        self._wrapper = wrapper

    def __call__(self, *args, **kwargs):
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._wrapper.module, name)


@contextlib.contextmanager
def encoders_through(pipe, prepared: dict):
    """While the pipeline encodes, each trained encoder is called through what `accelerator.prepare` returned for
    it (DDP syncs gradients only for calls through its wrapper); where that is the module itself, nothing changes."""
    swapped = {name: getattr(pipe, name) for name, wrapper in prepared.items() if wrapper is not getattr(pipe, name)}
    for name in swapped:
        object.__setattr__(pipe, name, _Through(prepared[name]))  # not the pipeline's setattr: it would register a component
    try:
        yield
    finally:
        for name, module in swapped.items():
            object.__setattr__(pipe, name, module)
