"""Train PPAP experts (Go et al., CVPR 2023): noise-level experts of an off-the-shelf clean classifier, without labels.

    python -m gen.training.ppap --pipeline zoo:digits --classifier zoo:digits-classifier --num-experts 5 --lora-rank 16 --output-dir runs/ppap
    accelerate launch -m gen.training.ppap ... [--mixed_precision bf16 --checkpointing_steps 500 --resume latest]

1. --num-samples unlabelled images are sampled from the pipeline itself (unconditionally, --sample-steps steps).
2. The clean classifier (the teacher) gives each clean image the target softmax(logits / --temperature); the
   paper's code uses 0.25, which sharpens the teacher's prediction rather than softening it.
3. --num-experts copies of the classifier, each with its own LoRA (peft, rank --lora-rank, on every Conv2d and
   Linear layer or the --lora-layers named), split the timesteps into equal ranges; an image noised to timestep t
   by the pipeline's own forward process goes to the expert of t, which learns the teacher's target on the
   clean image (KL divergence). Every expert trains in the same steps, on its share of each batch.

--labelled-data SPEC trains the paper's supervised baselines instead: real images (gen's data specs: "digits",
or a folder with class subfolders) noised the same way, with cross-entropy on their labels ("multi-experts";
with --num-experts 1, a single noise-aware classifier).

The folder loads with `ClassifierGuidance.from_pretrained(DIR, target=3)` (gen.guidance.experts): ppap.json and
one LoRA folder per expert; the teacher is loaded by its spec, not copied. Experts read pixel x_t as the classifier
reads images ((x + 1) / 2), so the pipeline must be a pixel-space one.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gen.errors import ArgumentError, require_number
from gen.training.loop import trainer_run
from gen.training.options import LoopOptions, check_loop_options, option


@dataclass
class PPAPConfig(LoopOptions):
    """Options of the PPAP trainer; the loop's (steps, accumulation, precision, checkpoints, resume, trackers) are `LoopOptions`."""

    pipeline: str = option("zoo:digits", "the pixel-space pipeline whose samples (and forward process) the experts learn (folder or zoo:NAME)")
    classifier: str = option("zoo:digits-classifier", "the clean classifier, images in [0, 1] -> logits (zoo:NAME)")
    output_dir: str = option("runs/ppap", "where ppap.json and the experts' LoRA folders go")
    num_experts: int = option(5, "experts, each for an equal range of the training timesteps (>= 1)")
    lora_rank: int = option(16, "LoRA rank of each expert (>= 1)")
    lora_layers: str = option("", "comma-separated module names of the classifier to adapt (empty: every Conv2d and Linear)")
    temperature: float = option(0.25, "the teacher's logits are divided by this before the softmax (> 0; the paper's code: 0.25)")
    labelled_data: str = option("", "train the supervised baselines instead: labelled real data (a gen data spec or a class-folder path)")
    num_samples: int = option(2048, "unlabelled images sampled from the pipeline")
    sample_steps: int = option(25, "sampling steps per image")
    sample_batch_size: int = option(256, "images sampled at once")
    train_batch_size: int = option(128, "noised images per micro-batch")
    max_train_steps: int = option(1500, "optimisation steps")
    learning_rate: float = option(1e-3, "peak learning rate (cosine decay)")
    weight_decay: float = option(0.05, "AdamW weight decay (the paper's 0.05)")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    checkpointing_steps: int = option(0, "save a checkpoint every N steps (0: never)")


def check_config(config: PPAPConfig) -> None:
    check_loop_options(config)
    require_number(config.learning_rate, "learning_rate", minimum=1e-12)
    require_number(config.weight_decay, "weight_decay", minimum=0)
    require_number(config.temperature, "temperature", minimum=1e-6)
    for name in ("num_experts", "lora_rank", "num_samples", "sample_steps", "sample_batch_size", "train_batch_size"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    if not config.labelled_data and config.num_samples < config.train_batch_size:
        raise ArgumentError(f"train_batch_size: {config.train_batch_size} is more than the {config.num_samples} images sampled; lower it or raise num_samples.")


def lora_targets(classifier: torch.nn.Module, layers: str) -> list[str]:
    """The named layers, or every Conv2d and Linear layer of the classifier."""
    if layers.strip():
        return [name.strip() for name in layers.split(",") if name.strip()]
    return [name for name, module in classifier.named_modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]


@torch.no_grad()
def sample_unlabelled(pipe, config: PPAPConfig) -> torch.Tensor:
    """The pipeline's own samples in its [-1, 1] pixel space, seeded (a resumed run samples the same images)."""
    g = torch.Generator().manual_seed(config.seed)
    unconditional = {"class_labels": None} if "class_labels" in inspect.signature(pipe.__call__).parameters else {}
    pipe.set_progress_bar_config(disable=not config.progress, desc="sampling the experts' unlabelled images", leave=False)
    images = []
    for start in range(0, config.num_samples, config.sample_batch_size):
        n = min(config.sample_batch_size, config.num_samples - start)
        out = pipe(batch_size=n, num_inference_steps=config.sample_steps, generator=g, output_type="latent", **unconditional)
        images.append(out.images.float().cpu())
    return torch.cat(images)


def noise_table(scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) of the scheduler's forward process at every training timestep."""
    from gen.core.schedulers import noise_level

    levels = [noise_level(scheduler, t) for t in range(scheduler.config.num_train_timesteps)]
    return torch.stack([level.alpha for level in levels]).float(), torch.stack([level.sigma for level in levels]).float()


@trainer_run("ppap")
def train_ppap(config: PPAPConfig, classifier: torch.nn.Module | None = None):
    """Train and save the experts; `classifier`: the teacher as a model (the CLI loads config.classifier by name)."""
    from diffusers.optimization import get_scheduler

    from gen.guidance.experts import NoiseExperts, equal_ranges
    from gen.io import check_output_dir, mark_output_dir, save_into
    from gen.plugins import is_named, load_named
    from gen.training.data import load_data
    from gen.training.loop import check_final_weights, data_loader, make_run_accelerator, optimise, start_trackers
    from gen.training.lora import add_lora
    from gen.training.train import load_init

    check_config(config)
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir, "ppap", resume=config.resume is not None, overwrite=config.overwrite)
    if classifier is None:
        if not is_named(config.classifier):
            raise ArgumentError(f"classifier: the command line takes named classifiers (zoo:NAME), got {config.classifier!r}; from Python pass classifier=.")
        classifier = load_named(config.classifier, "classifier")
    classifier = classifier.float().eval().requires_grad_(False)
    pipe = load_init(config.pipeline)
    if getattr(pipe, "vae", None) is not None:
        raise ArgumentError(f"pipeline: {config.pipeline} samples in a VAE's latent space; PPAP experts here read pixel x_t. Use a pixel-space pipeline.")
    scheduler = pipe.scheduler
    ranges = equal_ranges(config.num_experts, scheduler.config.num_train_timesteps)
    torch.manual_seed(config.seed)  # the LoRAs' initial weights: the run's seed decides them, not the process's RNG state
    experts = NoiseExperts(classifier, ranges)
    targets = lora_targets(classifier, config.lora_layers)
    lora_config = None
    for expert in experts.experts:
        lora_config = add_lora(expert, config.lora_rank, targets)
    accelerator = make_run_accelerator(config, output_dir)

    if config.labelled_data:
        size = pipe.backbone.config.sample_size
        data = load_data(config.labelled_data, size, pipe.backbone.config.in_channels, name="labelled_data")
        if getattr(data, "labels", None) is None:
            raise ArgumentError(f"labelled_data: {config.labelled_data} has no labels; give class subfolders or a labelled source such as 'digits'.")
        images = torch.stack([data[i]["pixel_values"] for i in range(len(data))])
        sampled = (pipe.backbone.config.in_channels, size, size)
        if tuple(images.shape[1:]) != sampled:
            raise ArgumentError(
                f"labelled_data: its images are {tuple(images.shape[1:])} (channels, height, width) but the pipeline samples {sampled}; give data of the pipeline's shape."
            )
        dataset = torch.utils.data.TensorDataset(images, torch.as_tensor(data.labels))
    else:
        pipe.to(accelerator.device)
        images = sample_unlabelled(pipe, config)
        with torch.no_grad():
            teacher = classifier.to(accelerator.device)((images.to(accelerator.device) + 1) / 2).float().cpu()
        dataset = torch.utils.data.TensorDataset(images, (teacher / config.temperature).softmax(-1))
    alphas, sigmas = noise_table(scheduler)
    trainable = [p for p in experts.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=0, num_training_steps=config.max_train_steps * accelerator.num_processes)
    loader, order = data_loader(dataset, config.train_batch_size)
    experts, optimizer, loader, lr_scheduler = accelerator.prepare(experts, optimizer, loader, lr_scheduler)
    if accelerator.is_main_process:
        mark_output_dir(output_dir, "ppap", resume=config.resume is not None, overwrite=config.overwrite)
    start_trackers(accelerator, config, "gen-ppap")

    def compute_loss(batch, where):
        x0, target = batch
        g = where.generator()
        t = torch.randint(0, len(alphas), (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        x_t = alphas[t].view(-1, 1, 1, 1).to(x0.device) * x0 + sigmas[t].view(-1, 1, 1, 1).to(x0.device) * noise
        logits = experts(x_t, t).float()
        if config.labelled_data:
            return F.cross_entropy(logits, target)
        return F.kl_div(logits.log_softmax(-1), target, reduction="batchmean")

    losses = optimise(accelerator, config, output_dir, experts, optimizer, lr_scheduler, loader, order, compute_loss, name="ppap experts")
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(experts).eval()
        check_final_weights(final)
        record = {
            "pipeline": config.pipeline,
            "labels": "supervised: " + config.labelled_data if config.labelled_data else "none: the teacher's predictions on the pipeline's samples",
            "config": vars(config),
            "final_loss": losses[-1][1] if losses else None,
        }
        save_into(output_dir, lambda tmp: final.save_pretrained(tmp, config.classifier, lora_config, record), last="ppap.json")
    accelerator.end_training()
    return output_dir


def main(argv=None) -> int:
    from gen.training import dataclass_cli

    return dataclass_cli(PPAPConfig, train_ppap, "python -m gen.training.ppap", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
