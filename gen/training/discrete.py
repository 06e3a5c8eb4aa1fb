"""Train a masked-diffusion model (MDLM, Sahoo et al. 2024) on token sequences; the result is a stock `LLaDA2Pipeline`.

    python -m gen.training.discrete --data digits --output-dir runs/digits-mdlm
    accelerate launch -m gen.training.discrete ... [--mixed_precision bf16 --checkpointing_steps 500 --resume latest]

Data: "digits", scikit-learn's 8x8 digits as 64 tokens of 17 intensity levels after a begin token
(`gen.discrete.tokens`). Each step draws t ~ U(0, 1] per sequence (stratified over the batch, as MDLM does, for a
lower-variance estimate), masks every token but the begin token with probability t, and trains a `TokenDenoiser`
to predict the masked tokens: cross-entropy on the masked positions weighted by 1 / t, the continuous-time ELBO
of the linear schedule alpha_t = 1 - t, averaged over the positions. The mask pattern tells the model how noisy a
sequence is, so it takes no time input.

The output folder is `LLaDA2Pipeline.save_pretrained`: the model, a `BlockRefinementScheduler`, the tokenizer, and
`sampling.json` with the call's arguments: temperature 1, blocks of --sample-block-length tokens (5) drawn one after
another, --sample-steps refinement steps each, a fixed number of tokens committed per step (the most confident of
those drawn), no editing. Blocks, because the scheduler commits by confidence: over one block of all 65 tokens it
commits the sure background first and nearly every sample ends as a "1" (61 of 64 at 1500 steps; 10 classes
with 5-token blocks).

    pipe = gen.pipelines.load_pipeline(out)         # checks the folder first; reads sampling.json into pipe.gen_sampling
    pipe(prompt=[""] * 4, **pipe.gen_sampling["call"], output_type="seq").sequences
    # diffusers alone: LLaDA2Pipeline.from_pretrained(out, tokenizer=AutoTokenizer.from_pretrained(out / "tokenizer"))
    # (diffusers 0.42 cannot load that pipeline's tokenizer by itself)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gen.errors import ArgumentError, require_number
from gen.training.loop import trainer_run
from gen.training.options import LoopOptions, check_loop_options, option

SOURCES = ("digits",)


@dataclass
class DiscreteConfig(LoopOptions):
    """Options of the masked-diffusion trainer; the loop's (steps, accumulation, precision, checkpoints, resume, trackers) are `LoopOptions`."""

    data: str = option("digits", f"token data: one of {SOURCES}")
    output_dir: str = option("runs/digits-mdlm", "where the LLaDA2Pipeline folder goes")
    width: int = option(64, "transformer width (>= 8, a multiple of --heads)")
    layers: int = option(3, "transformer layers (>= 1)")
    heads: int = option(4, "attention heads (>= 1)")
    dropout: float = option(0.1, "dropout in the transformer layers, in [0, 1)")
    train_batch_size: int = option(64, "sequences per micro-batch")
    max_train_steps: int = option(5000, "optimisation steps")
    learning_rate: float = option(1e-3, "peak learning rate (linear warm-up, cosine decay)")
    lr_warmup_steps: int = option(200, "warm-up steps")
    weight_decay: float = option(0.01, "AdamW weight decay")
    sample_block_length: int = option(5, "block length recorded in sampling.json (>= 1): the 65 tokens are drawn block after block")
    sample_steps: int = option(5, "refinement steps per block recorded in sampling.json (>= 1, at most the block length)")
    checkpointing_steps: int = option(0, "save a checkpoint every N steps (0: never)")


def check_config(config: DiscreteConfig) -> None:
    check_loop_options(config)
    if config.data not in SOURCES:
        raise ArgumentError(f"data: one of {SOURCES} for masked-diffusion training, got {config.data!r}.")
    for name in ("layers", "heads", "train_batch_size", "sample_block_length", "sample_steps"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    if config.width < 8 or config.width % config.heads:
        raise ArgumentError(f"width: must be >= 8 and a multiple of heads ({config.heads}), got {config.width}.")
    require_number(config.dropout, "dropout", minimum=0, maximum=0.999)
    require_number(config.learning_rate, "learning_rate", minimum=1e-12)
    require_number(config.weight_decay, "weight_decay", minimum=0)


def sequences(data: str) -> torch.Tensor:
    """(N, 1 + 64) token ids: the begin token, then the digit's 64 intensities."""
    from gen.data import digit_tokens
    from gen.discrete.tokens import BOS

    tokens, _ = digit_tokens("train")
    return torch.cat([torch.full((len(tokens), 1), BOS), tokens], dim=1)


def mdlm_loss(model, ids: torch.Tensor, generator: torch.Generator, mask_token: int) -> torch.Tensor:
    """The MDLM objective of one batch (see the module docstring); position 0 (the begin token) is never masked."""
    batch = len(ids)
    offset = torch.rand((), generator=generator)
    t = ((torch.arange(batch) + offset) / batch).clamp(min=1e-3).to(ids.device)  # stratified in (0, 1]
    masked = torch.rand(ids.shape, generator=generator).to(ids.device) < t[:, None]
    masked[:, 0] = False
    noisy = torch.where(masked, torch.full_like(ids, mask_token), ids)
    logits = model(noisy).logits.float()
    loss = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * masked
    return (loss.sum(1) / t / (ids.shape[1] - 1)).mean()


@trainer_run("masked diffusion")
def train_discrete(config: DiscreteConfig):
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline
    from diffusers.optimization import get_scheduler

    from gen.discrete.model import TokenDenoiser
    from gen.discrete.sampling import SAMPLING_FILE
    from gen.discrete.tokens import LENGTH, MASK, VOCAB_SIZE, digits_tokenizer
    from gen.io import check_output_dir, mark_output_dir, save_into, write_json
    from gen.training.loop import check_final_weights, data_loader, make_run_accelerator, optimise, start_trackers

    check_config(config)
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir, "discrete", resume=config.resume is not None, overwrite=config.overwrite)
    ids = sequences(config.data)
    torch.manual_seed(config.seed)
    model = TokenDenoiser(vocab_size=VOCAB_SIZE, max_length=ids.shape[1], width=config.width, layers=config.layers, heads=config.heads, dropout=config.dropout)
    accelerator = make_run_accelerator(config, output_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(
        "cosine",
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    loader, order = data_loader(torch.utils.data.TensorDataset(ids), config.train_batch_size)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    if accelerator.is_main_process:
        mark_output_dir(output_dir, "discrete", resume=config.resume is not None, overwrite=config.overwrite)
    start_trackers(accelerator, config, "gen-discrete")
    model.train()
    losses = optimise(
        accelerator,
        config,
        output_dir,
        model,
        optimizer,
        lr_scheduler,
        loader,
        order,
        lambda batch, where: mdlm_loss(model, batch[0], where.generator(), MASK),
        name="mdlm",
    )
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model).eval()
        check_final_weights(final)
        block, steps = config.sample_block_length, min(config.sample_steps, config.sample_block_length)
        pipe = LLaDA2Pipeline(model=final, scheduler=BlockRefinementScheduler(block_length=block, num_inference_steps=steps), tokenizer=digits_tokenizer())
        call = {
            "gen_length": LENGTH,
            "block_length": block,
            "num_inference_steps": steps,
            "temperature": 1.0,
            "threshold": 1.0,  # confidences never exceed 1: exactly the scheduled number of tokens per step
            "editing_threshold": None,
            "eos_early_stop": False,
            "mask_token_id": MASK,  # so a load without the tokenizer samples too
        }

        def save(tmp):
            pipe.save_pretrained(str(tmp), safe_serialization=True)
            pipe.tokenizer.save_pretrained(str(Path(tmp) / "tokenizer"))  # diffusers 0.42 skips LLaDA2Pipeline's tokenizer
            write_json(Path(tmp) / SAMPLING_FILE, {"call": call, "render": "digits-8x8"})
            write_json(Path(tmp) / "training.json", {"config": vars(config), "final_loss": losses[-1][1] if losses else None})

        save_into(output_dir, save, last="model_index.json")
    accelerator.end_training()
    return output_dir


def main(argv=None) -> int:
    from gen.training import dataclass_cli

    return dataclass_cli(DiscreteConfig, train_discrete, "python -m gen.training.discrete", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
