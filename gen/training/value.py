"""Train an SVDD-MC value network: regress v(x_t, t) on the reward of the model's own final samples.

    python -m gen.training.value --pipeline zoo:digits --reward class:3 --output-dir runs/value
    accelerate launch -m gen.training.value ... [--mixed_precision bf16 --gradient_accumulation_steps 2 --checkpointing_steps 500 --resume latest]

The model samples --num-samples trajectories (stochastic sampler, --steps steps); every state x_t on a
trajectory is paired with the reward of that trajectory's final sample, and a `ValueNetwork` is fitted by
mean squared error with accelerate, so it estimates E[r(x0) | x_t]: the soft value
alpha * log E[exp(r(x0) / alpha) | x_t] in its alpha -> infinity limit (alpha -> 0 gives the best reward
reachable from x_t instead, which SVDD's arg-max over M candidates approaches). The
result is saved with save_pretrained (safetensors) and used as `LearnedValue(ValueNetwork.from_pretrained(...))`.

Rewards: "class:K" (log-probability of class K under --classifier), "jpeg" (negative JPEG kilobytes).
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
class ValueConfig(LoopOptions):
    """Options of the value trainer; the loop's (steps, accumulation, precision, checkpoints, resume, trackers) are `LoopOptions`."""

    pipeline: str = option("zoo:digits", "the pipeline whose samples the value is learned for (folder or zoo:NAME)")
    reward: str = option("class:3", "'class:K' (log p(K | x) under --classifier) or 'jpeg' (negative JPEG kB)")
    classifier: str = option("zoo:digits-classifier", "the classifier of a class:K reward (zoo:NAME)")
    output_dir: str = option("runs/value", "where the value network (save_pretrained) and its losses go")
    num_samples: int = option(512, "trajectories sampled")
    steps: int = option(25, "sampling steps per trajectory")
    eta: float = option(1.0, "DDIM eta of the sampler (1: stochastic)")
    sample_batch_size: int = option(256, "trajectories sampled at once")
    train_batch_size: int = option(256, "states per micro-batch")
    max_train_steps: int = option(1500, "optimisation steps")
    learning_rate: float = option(1e-3, "peak learning rate (cosine decay)")
    width: int = option(32, "value network width")
    max_grad_norm: float = option(0.0, "gradient clipping norm (0: no clipping)")
    checkpointing_steps: int = option(0, "save a checkpoint every N steps (0: never)")


def build_reward(spec: str, classifier_spec: str):
    from gen.guidance import classifier_log_prob, jpeg_compressibility

    if spec == "jpeg":
        return jpeg_compressibility()
    if spec.startswith("class:"):
        from gen.plugins import is_named, load_named

        if not is_named(classifier_spec):
            raise ArgumentError(f"classifier: only named classifiers are supported here (zoo:NAME), got {classifier_spec!r}.")
        try:
            target = int(spec.split(":", 1)[1])
        except ValueError:
            raise ArgumentError(f"reward: 'class:K' needs an integer K, got {spec!r}.") from None
        return classifier_log_prob(load_named(classifier_spec, "classifier"), target)
    raise ArgumentError(f"reward: one of 'class:K' or 'jpeg', got {spec!r}.")


@torch.no_grad()
def collect(pipe, reward, config: ValueConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(states, timesteps, rewards): every state of every sampled trajectory with its final reward."""
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    states, times, rewards = [], [], []
    g = torch.Generator().manual_seed(config.seed)
    batches = range(0, config.num_samples, config.sample_batch_size)
    pipe.set_progress_bar_config(disable=not config.progress, desc="sampling trajectories for the value's training states", leave=False)
    for number, start in enumerate(batches, 1):
        if config.progress:
            print(f"sampling trajectories: batch {number} of {len(batches)}", flush=True)
        n = min(config.sample_batch_size, config.num_samples - start)
        out = pipe(class_labels=None, batch_size=n, num_inference_steps=config.steps, eta=config.eta, generator=g, trace=True, output_type="latent")
        r = reward(pipe.decode(out.images)).float().cpu()
        for record in out.trace:
            states.append(record["x"].cpu())
            times.append(torch.full((n,), float(record["timestep"])))
            rewards.append(r)
        states.append(out.images.cpu())
        times.append(torch.zeros(n))
        rewards.append(r)
    return torch.cat(states), torch.cat(times), torch.cat(rewards)


@trainer_run("value network")
def train_value(config: ValueConfig):
    from diffusers.optimization import get_scheduler

    from gen.guidance.values import ValueNetwork
    from gen.io import check_output_dir, mark_output_dir, save_into, write_json
    from gen.training.loop import check_final_weights, data_loader, make_run_accelerator, optimise, start_trackers
    from gen.training.train import load_init

    check_loop_options(config)
    require_number(config.learning_rate, "learning_rate", minimum=1e-12)
    require_number(config.eta, "eta", minimum=0, maximum=1)
    for name in ("num_samples", "steps", "sample_batch_size", "train_batch_size", "width"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    if config.num_samples * (config.steps + 1) < config.train_batch_size:
        raise ArgumentError(
            f"train_batch_size: {config.train_batch_size} is more than the {config.num_samples * (config.steps + 1)} states sampled; "
            "lower it or raise num_samples."
        )
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir, "value", resume=config.resume is not None, overwrite=config.overwrite)
    reward = build_reward(config.reward, config.classifier)
    pipe = load_init(config.pipeline)
    accelerator = make_run_accelerator(config, output_dir)
    pipe.to(accelerator.device)
    torch.manual_seed(config.seed)
    states, times, rewards = collect(pipe, reward, config)  # seeded: a resumed run collects the same states
    size = pipe.backbone.config.sample_size
    net = ValueNetwork(in_channels=states.shape[1], resolution=size, width=config.width, num_train_timesteps=pipe.scheduler.config.num_train_timesteps)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=0, num_training_steps=config.max_train_steps * accelerator.num_processes)
    loader, order = data_loader(torch.utils.data.TensorDataset(states, times, rewards), config.train_batch_size)
    net, optimizer, loader, lr_scheduler = accelerator.prepare(net, optimizer, loader, lr_scheduler)
    if accelerator.is_main_process:
        mark_output_dir(output_dir, "value", resume=config.resume is not None, overwrite=config.overwrite)
    start_trackers(accelerator, config, "gen-value")

    def compute_loss(batch, where):
        x, t, r = batch
        return F.mse_loss(net(x, t), r)

    losses = optimise(accelerator, config, output_dir, net, optimizer, lr_scheduler, loader, order, compute_loss, name="value")
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(net).eval()
        check_final_weights(final)

        def save(tmp):
            final.save_pretrained(str(tmp), safe_serialization=True)
            write_json(
                Path(tmp) / "training.json",
                {"config": vars(config), "losses": losses, "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())},
            )

        save_into(output_dir, save, last="config.json")
    accelerator.end_training()
    return output_dir


def main(argv=None) -> int:
    from gen.training import dataclass_cli

    return dataclass_cli(ValueConfig, train_value, "python -m gen.training.value", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
