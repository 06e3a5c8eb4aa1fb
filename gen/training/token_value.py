"""Train SVDD-MC's value for a masked-diffusion model: regress v(partially masked sequence) on the reward of the
sequence it became.

    python -m gen.training.token_value --pipeline zoo:digits-mdlm --reward class:3 --output-dir runs/token-value

The pipeline (an `LLaDA2Pipeline` folder, sampled with its sampling.json) draws --num-samples sequences through
`steer(...)(trace=True)`; every state on a trajectory (its generated positions, masks included) is paired with the
reward of that trajectory's final sequence, and a `TokenValueNetwork` is fitted by mean squared error on the shared
loop, so it estimates E[r(x0) | x_t] as gen.training.value does for images. Use it as
`SVDD(LearnedValue(TokenValueNetwork.from_pretrained(out)), num_candidates=M)` on the steered pipeline.

Rewards: "class:K", log p(K | the 8x8 grid rendered as an image) under --classifier.
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


@dataclass
class TokenValueConfig(LoopOptions):
    """Options of the token value trainer; the loop's (steps, accumulation, precision, checkpoints, resume, trackers) are `LoopOptions`."""

    pipeline: str = option("zoo:digits-mdlm", "the masked-diffusion pipeline (an LLaDA2Pipeline folder with sampling.json, or zoo:NAME)")
    reward: str = option("class:3", "'class:K': log p(K | the rendered 8x8 grid) under --classifier")
    classifier: str = option("zoo:digits-classifier", "the classifier of a class:K reward (zoo:NAME)")
    output_dir: str = option("runs/token-value", "where the value network (save_pretrained) goes")
    num_samples: int = option(512, "trajectories sampled")
    sample_batch_size: int = option(128, "trajectories sampled at once")
    train_batch_size: int = option(256, "states per micro-batch")
    max_train_steps: int = option(1500, "optimisation steps")
    learning_rate: float = option(1e-3, "peak learning rate (cosine decay)")
    width: int = option(16, "embedding width per position")
    max_grad_norm: float = option(0.0, "gradient clipping norm (0: no clipping)")
    checkpointing_steps: int = option(0, "save a checkpoint every N steps (0: never)")


def token_reward(spec: str, classifier_spec: str):
    """The reward a spec names, on token ids: the value trainer's image reward of the rendered 8x8 grid."""
    from gen.discrete import render_digits
    from gen.training.value import build_reward

    if not spec.startswith("class:"):
        raise ArgumentError(f"reward: 'class:K' for token models, got {spec!r}.")
    on_images = build_reward(spec, classifier_spec)
    return lambda ids: on_images(render_digits(ids))


def sampling_arguments(pipe, folder_spec: str) -> dict:
    """The call arguments a token pipeline's folder records (sampling.json; the zoo's copy on the pipeline)."""
    from gen.discrete.sampling import read_sampling

    recorded = getattr(pipe, "gen_sampling", None) or read_sampling(folder_spec)
    if not recorded["call"]:
        raise ArgumentError(f"pipeline: {folder_spec} has no sampling.json; train it with gen.training.discrete or write the call's arguments there.")
    return dict(recorded["call"])


@torch.no_grad()
def collect(pipe, reward, arguments: dict, config: TokenValueConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(states, rewards): the generated positions of every state on every sampled trajectory, with its final reward."""
    from gen.pipelines import steer

    steered = steer(pipe)
    g = torch.Generator().manual_seed(config.seed)
    states, rewards = [], []
    for start in range(0, config.num_samples, config.sample_batch_size):
        n = min(config.sample_batch_size, config.num_samples - start)
        out = steered(prompt=[""] * n, **arguments, generator=g, output_type="seq", trace=True)
        final = reward(out.sequences).float().cpu()
        length = out.sequences.shape[1]
        start = len(pipe.tokenizer("").input_ids)  # the prompt's tokens (the begin token)
        for record in out.trace:
            tokens = record["tokens"]  # the window of the step: earlier blocks' windows end before the sequence does
            missing = start + length - tokens.shape[1]
            if missing > 0:
                tokens = torch.cat([tokens, tokens.new_full((len(tokens), missing), pipe.tokenizer.mask_token_id)], dim=1)
            states.append(tokens[:, start : start + length])
            rewards.append(final)
        states.append(out.sequences.cpu())
        rewards.append(final)
    return torch.cat(states), torch.cat(rewards)


@trainer_run("token value")
def train_token_value(config: TokenValueConfig):
    from diffusers.optimization import get_scheduler

    from gen.discrete import TokenValueNetwork
    from gen.io import check_output_dir, mark_output_dir, save_into, write_json
    from gen.training.loop import check_final_weights, data_loader, make_run_accelerator, optimise, start_trackers
    from gen.training.train import load_init

    check_loop_options(config)
    require_number(config.learning_rate, "learning_rate", minimum=1e-12)
    for name in ("num_samples", "sample_batch_size", "train_batch_size", "width"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir, "token-value", resume=config.resume is not None, overwrite=config.overwrite)
    reward = token_reward(config.reward, config.classifier)
    pipe = load_init(config.pipeline)
    arguments = sampling_arguments(pipe, config.pipeline)
    accelerator = make_run_accelerator(config, output_dir)
    pipe.to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(config.seed)
    states, rewards = collect(pipe, reward, arguments, config)  # seeded: a resumed run collects the same states
    if len(states) < config.train_batch_size:
        raise ArgumentError(f"train_batch_size: {config.train_batch_size} is more than the {len(states)} states sampled; lower it or raise num_samples.")
    vocab = pipe.model.config.vocab_size
    net = TokenValueNetwork(vocab_size=vocab, length=states.shape[1], width=config.width)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=0, num_training_steps=config.max_train_steps * accelerator.num_processes)
    loader, order = data_loader(torch.utils.data.TensorDataset(states, rewards), config.train_batch_size)
    net, optimizer, loader, lr_scheduler = accelerator.prepare(net, optimizer, loader, lr_scheduler)
    if accelerator.is_main_process:
        mark_output_dir(output_dir, "token-value", resume=config.resume is not None, overwrite=config.overwrite)
    start_trackers(accelerator, config, "gen-token-value")
    losses = optimise(
        accelerator, config, output_dir, net, optimizer, lr_scheduler, loader, order, lambda batch, where: F.mse_loss(net(batch[0]), batch[1]), name="value"
    )
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(net).eval()
        check_final_weights(final)

        def save(tmp):
            final.save_pretrained(str(tmp), safe_serialization=True)
            write_json(
                Path(tmp) / "training.json", {"config": vars(config), "final_loss": losses[-1][1] if losses else None, "reward_mean": float(rewards.mean())}
            )

        save_into(output_dir, save, last="config.json")
    accelerator.end_training()
    return output_dir


def main(argv=None) -> int:
    from gen.training import dataclass_cli

    return dataclass_cli(TokenValueConfig, train_token_value, "python -m gen.training.token_value", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
