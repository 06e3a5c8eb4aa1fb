"""Train an SVDD-MC value network: regress v(x_t, t) on the reward of the model's own final samples.

    python -m gen.training.value --pipeline zoo:digits --reward class:3 --output-dir runs/value
    accelerate launch -m gen.training.value ...

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

from gen.errors import ArgumentError


@dataclass
class ValueConfig:
    pipeline: str = "zoo:digits"
    reward: str = "class:3"
    classifier: str = "zoo:digits-classifier"
    output_dir: str = "runs/value"
    num_samples: int = 512
    steps: int = 25
    eta: float = 1.0
    sample_batch_size: int = 256
    train_batch_size: int = 256
    max_train_steps: int = 1500
    learning_rate: float = 1e-3
    width: int = 32
    seed: int = 0
    overwrite: bool = False


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
    for start in range(0, config.num_samples, config.sample_batch_size):
        n = min(config.sample_batch_size, config.num_samples - start)
        out = pipe(class_labels=None, batch_size=n, num_inference_steps=config.steps, eta=config.eta, generator=g, trace=True, output_type="latent")
        r = reward(pipe.decode(out.images)).float()
        for record in out.trace:
            states.append(record["x"])
            times.append(torch.full((n,), float(record["timestep"])))
            rewards.append(r)
        states.append(out.images.cpu())
        times.append(torch.zeros(n))
        rewards.append(r)
    return torch.cat(states), torch.cat(times), torch.cat(rewards)


def train_value(config: ValueConfig):
    from tqdm.auto import tqdm

    from gen.training import make_accelerator

    from gen.guidance.values import ValueNetwork
    from gen.io import save_into, write_json
    from gen.training.train import load_init

    from gen.io import check_output_dir, mark_output_dir

    for name in ("num_samples", "steps", "max_train_steps", "sample_batch_size", "train_batch_size"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    if config.num_samples * (config.steps + 1) < config.train_batch_size:
        raise ArgumentError(f"train_batch_size: {config.train_batch_size} is more than the {config.num_samples * (config.steps + 1)} states sampled; "
                         "lower it or raise num_samples.")
    check_output_dir(config.output_dir, "value", overwrite=config.overwrite)
    reward = build_reward(config.reward, config.classifier)
    pipe = load_init(config.pipeline)
    accelerator = make_accelerator()
    torch.manual_seed(config.seed)
    states, times, rewards = collect(pipe, reward, config)
    size = pipe.backbone.config.sample_size
    net = ValueNetwork(in_channels=states.shape[1], resolution=size, width=config.width, num_train_timesteps=pipe.scheduler.config.num_train_timesteps)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
    dataset = torch.utils.data.TensorDataset(states, times, rewards)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, generator=torch.Generator().manual_seed(config.seed), drop_last=True)
    if len(loader) == 0:  # drop_last with fewer examples than one batch: no step would ever run
        raise ArgumentError(f"train_batch_size: {config.train_batch_size} is more than the {len(dataset)} training examples; lower it.")
    net, optimizer, loader = accelerator.prepare(net, optimizer, loader)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.max_train_steps)
    step, history = 0, []
    bar = tqdm(total=config.max_train_steps, desc="value", disable=not accelerator.is_local_main_process)
    while step < config.max_train_steps:
        for x, t, r in loader:
            loss = F.mse_loss(net(x, t), r)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            bar.update(1)
            if step % 50 == 0:
                history.append([step, accelerator.gather(loss.detach()[None]).mean().item()])
            if step >= config.max_train_steps:
                break
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        mark_output_dir(config.output_dir, "value")

        def save(tmp):
            accelerator.unwrap_model(net).save_pretrained(str(tmp), safe_serialization=True)
            write_json(Path(tmp) / "training.json", {"config": config.__dict__, "losses": history, "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())})

        save_into(config.output_dir, save, last="config.json")
    return Path(config.output_dir)


def main(argv=None) -> int:
    from gen.training import dataclass_cli

    return dataclass_cli(ValueConfig, train_value, "python -m gen.training.value", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
