"""Training steps of the families gen fine-tunes, at real size with random weights (issue 27):

- lora: one LoRA optimisation step (rank 16 on diffusers' default targets, VAE encode + forward + backward + AdamW,
  gradient checkpointing, batch 1 at 1024²) of an SDXL-size UNet (2.6B) and a Flux-size transformer (12B,
  guidance-distilled), the frozen weights in bfloat16 and the adapters in float32 as `gen train --lora-rank
  --mixed-precision bf16` keeps them; seconds per step (median of --steps after a warm-up, 3 repeats) and peak
  memory.
- sharding (under `accelerate launch`, 2+ GPUs): a full fine-tuning step of the SDXL-size UNet with float32
  master weights, bf16 autocast; peak memory per process, under whatever the launch configures (DDP, or
  examples/accelerate/fsdp.yaml). benchmarks/gpu/train_families.sh runs both and writes the side-by-side JSON.

Text encoders are left out (embeddings of the real widths are drawn at random); the step is the trainer's own
(gen.training.families: `latents`, `backbone_inputs`, `loss`).

    python -m benchmarks.gpu_train_families lora [--scale real|tiny] [--out DIR]
    accelerate launch [--multi_gpu | --config_file examples/accelerate/fsdp.yaml] -m benchmarks.gpu_train_families sharding --tag ddp|fsdp
`--scale tiny` runs the same code on gen.testing's tiny models (a smoke test on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import add_output_argument, save, summary
from benchmarks.gpu_families import flux, sdxl
from benchmarks.gpu_overhead import timed


def family_step(name: str, pipe, config, device, prepared=None):
    """The trainer's step for one family on random inputs: (the backbone, a callable computing one loss through
    `prepared`, the backbone as accelerate prepared it, when given)."""
    from gen.training.families import family_of

    family = family_of(pipe, config)
    model = getattr(pipe, family.backbone)
    width = model.config.cross_attention_dim if name == "sdxl" else model.config.joint_attention_dim
    pooled = (
        (pipe.unet.add_embedding.linear_1.in_features - 6 * pipe.unet.config.addition_time_embed_dim) if name == "sdxl" else model.config.pooled_projection_dim
    )
    tokens = 77 if name == "sdxl" else 512
    g = torch.Generator().manual_seed(0)
    embeds = {"prompt_embeds": torch.randn(1, tokens, width, generator=g), "pooled": torch.randn(1, pooled, generator=g)}
    if name == "flux":
        embeds["text_ids"] = torch.zeros(1, tokens, 3)
    embeds = {k: v.to(device) for k, v in embeds.items()}
    pixels = torch.rand(1, 3, config.resolution, config.resolution, generator=g).to(device) * 2 - 1
    schedule = family.training_schedule()
    batch = {"original_size": torch.tensor([[config.resolution] * 2]), "crop_top_left": torch.tensor([[0, 0]])}

    def loss():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            inputs = family.backbone_inputs(embeds, batch)
            return family.loss(prepared or model, family.latents(pipe.vae, pixels.to(pipe.vae.dtype), g), inputs, g, schedule)

    return model, loss


def lora(scale: str, device, steps: int, repeats: int) -> dict:
    from diffusers.training_utils import cast_training_params

    from gen.training.families import family_names
    from gen.training.lora import add_lora
    from gen.training.train import TrainConfig

    rows = {}
    for name, build in (("sdxl", sdxl), ("flux", flux)):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        pipe, _ = build(scale, device, dtype)
        pipe.vae.to(torch.float32)
        resolution = 1024 if scale == "real" else 16
        config = TrainConfig(data="d", output_dir="o", resolution=resolution)
        model, loss = family_step(name, pipe, config, device)
        targets = next(f for f in family_names().values() if f.name == name).lora_targets
        add_lora(model, 16, targets)
        cast_training_params(model, dtype=torch.float32)
        model.enable_gradient_checkpointing()
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)

        def step():
            loss().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # warm-up: allocator, kernels, optimizer state
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        medians = [statistics.median(timed(step, device) for _ in range(steps)) for _ in range(repeats)]
        rows[name] = {
            "seconds_per_step": summary(medians),
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "trainable_parameters": sum(p.numel() for p in trainable),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        print(
            f"{name} LoRA step: {rows[name]['seconds_per_step']['mean']:.3f} s, peak {rows[name]['peak_gb']} GB, {rows[name]['trainable_parameters']:,} trainable"
        )
        del pipe, model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def sharding(scale: str, steps: int) -> dict:
    """A full fine-tuning step of the SDXL-size UNet under the launch's accelerate configuration; peak memory per process."""
    from accelerate import Accelerator

    from gen.training.train import TrainConfig

    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    device = accelerator.device
    pipe, _ = sdxl(scale, device, torch.float32)  # float32 master weights, as full fine-tuning keeps them
    config = TrainConfig(data="d", output_dir="o", resolution=1024 if scale == "real" else 16)
    model = pipe.unet
    model.enable_gradient_checkpointing()
    model.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    _, loss = family_step("sdxl", pipe, config, device, prepared)  # the step calls the prepared (wrapped or sharded) model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        accelerator.backward(loss())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0], device=device)
    peaks = accelerator.gather(peak).tolist()
    return {
        "distributed_type": str(accelerator.distributed_type),
        "processes": accelerator.num_processes,
        "peak_gb_per_process": peaks,
        "seconds_per_step": times,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["lora", "sharding"])
    parser.add_argument("--scale", choices=["real", "tiny"], default=None, help="model sizes (default: real on CUDA, tiny on a CPU)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tag", default="run", help="sharding: the name of this launch's row (ddp, fsdp)")
    add_output_argument(parser)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale = args.scale or ("real" if device.type == "cuda" else "tiny")
    if args.part == "lora":
        save(
            f"gpu_train_lora{'' if scale == 'real' else '_tiny'}",
            {"scale": scale, "lora": lora(scale, device, args.steps, args.repeats)},
            out=args.out,
            device=device,
        )
        return
    row = sharding(scale, args.steps)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        save(f"gpu_train_sharding_{args.tag}{'' if scale == 'real' else '_tiny'}", {"scale": scale, **row}, out=args.out, device=device)


if __name__ == "__main__":
    main()
