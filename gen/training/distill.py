"""Consistency distillation (Song et al. 2023; latent-consistency form of Luo et al. 2023) of a
class-conditional teacher into a few-step student that samples with diffusers' `LCMScheduler`.

    python -m gen.training.distill --teacher zoo:digits --output-dir runs/distilled
    accelerate launch -m gen.training.distill ... [--mixed_precision bf16 --gradient_accumulation_steps 2 --checkpointing_steps 200 --resume latest]

For x0 from the data and a timestep pair t_{n+k} > t_n on the teacher's 50-step DDIM grid, the teacher takes
one (classifier-free guided) DDIM step from x_{t_{n+k}} = q(x0) to x_{t_n}; the student's consistency
function f(x, t) = c_skip(t) x + c_out(t) x0_hat(x, t) (LCMScheduler's boundary scalings) is trained so
that f(x_{t_{n+k}}) matches the EMA student's f(x_{t_n}). The student starts from the teacher's weights and
keeps its architecture, so adapters trained on the teacher (LoRA) load into it unchanged. Guidance is
distilled in: the student is sampled without CFG.
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from gen.errors import ArgumentError, require_number
from gen.training.loop import trainer_run
from gen.training.options import LoopOptions, check_loop_options, option


@dataclass
class DistillConfig(LoopOptions):
    """Options of the distillation trainer; the loop's (steps, accumulation, precision, checkpoints, resume, trackers) are `LoopOptions`."""

    teacher: str = option("zoo:digits", "the class-conditional UNet pipeline to distil (folder or zoo:NAME)")
    output_dir: str = option("runs/distilled", "where the student pipeline (LCMScheduler) goes")
    guidance_scale: float = option(2.0, "the teacher's classifier-free guidance, distilled into the student")
    original_inference_steps: int = option(50, "the teacher's DDIM grid (LCM's original_inference_steps)")
    skip: int = option(1, "grid steps between the teacher's start and end points")
    train_batch_size: int = option(64, "examples per micro-batch")
    max_train_steps: int = option(800, "optimisation steps")
    learning_rate: float = option(1e-4, "learning rate (constant)")
    ema_decay: float = option(0.95, "decay of the target network (EMA of the student)")
    huber_c: float = option(0.001, "pseudo-Huber loss constant")
    max_grad_norm: float = option(0.0, "gradient clipping norm (0: no clipping)")
    checkpointing_steps: int = option(0, "save a checkpoint every N steps (0: never)")


def _x0(scheduler, model_output, x, t):
    abar = scheduler.alphas_cumprod.to(x.device)[t].reshape(-1, 1, 1, 1)
    return (x - (1 - abar).sqrt() * model_output) / abar.sqrt()


def _consistency(student_out, x, t, lcm):
    c_skip, c_out = lcm.get_scalings_for_boundary_condition_discrete(t.float())
    return c_skip.reshape(-1, 1, 1, 1) * x + c_out.reshape(-1, 1, 1, 1) * _x0(lcm, student_out, x, t)


@trainer_run("distillation")
def distill(config: DistillConfig) -> Path:
    from diffusers import LCMScheduler
    from diffusers.optimization import get_scheduler

    from gen.io import check_output_dir, mark_output_dir, write_json
    from gen.pipelines import ClassConditionalPipeline
    from gen.training.data import load_data
    from gen.training.loop import check_final_weights, data_loader, make_run_accelerator, optimise, start_trackers
    from gen.training.train import load_init, save_pipeline

    check_loop_options(config)
    require_number(config.learning_rate, "learning_rate", minimum=1e-12)
    require_number(config.guidance_scale, "guidance_scale", minimum=1)
    require_number(config.huber_c, "huber_c", minimum=1e-12)
    if not 0 <= require_number(config.ema_decay, "ema_decay") < 1:
        raise ArgumentError(f"ema_decay: must lie in [0, 1), got {config.ema_decay}.")
    for name in ("skip", "train_batch_size", "original_inference_steps"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    if config.skip >= config.original_inference_steps:
        raise ArgumentError(f"skip: must be smaller than original_inference_steps ({config.original_inference_steps}), got {config.skip}.")
    output = Path(config.output_dir)
    check_output_dir(output, "distill", resume=config.resume is not None, overwrite=config.overwrite)
    teacher_pipe = load_init(config.teacher)
    if not isinstance(teacher_pipe, ClassConditionalPipeline) or getattr(teacher_pipe, "unet", None) is None:
        raise ArgumentError("teacher: consistency distillation here takes a class-conditional UNet pipeline (e.g. zoo:digits).")
    train_config = _read_train_config(teacher_pipe)
    teacher = teacher_pipe.unet.eval().requires_grad_(False)
    dataset = load_data(train_config.get("data", "digits"), train_config.get("resolution", teacher.config.sample_size), teacher.config.in_channels)
    if len(dataset) < config.train_batch_size:
        raise ArgumentError(f"train_batch_size: {config.train_batch_size} is more than the {len(dataset)} training examples; lower it.")
    accelerator = make_run_accelerator(config, output)
    torch.manual_seed(config.seed)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    teacher.to(accelerator.device)
    target = copy.deepcopy(teacher).eval().requires_grad_(False)
    accepted = inspect.signature(LCMScheduler.__init__).parameters  # the teacher's DDPM-only keys (variance_type) would be saved and warned about on every load
    teacher_schedule = {k: v for k, v in teacher_pipe.scheduler.config.items() if k in accepted}
    lcm = LCMScheduler.from_config(teacher_schedule, original_inference_steps=config.original_inference_steps, timestep_scaling=10.0)
    null = teacher_pipe.null_class
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    loader, order = data_loader(dataset, config.train_batch_size)
    student, optimizer, loader, lr_scheduler = accelerator.prepare(student, optimizer, loader, lr_scheduler)

    def save_target(models, weights, folder):  # the target network is part of the state a resumed run needs
        if accelerator.is_main_process:
            target.save_pretrained(os.path.join(folder, "target"), safe_serialization=True)

    def load_target(models, folder):
        target.load_state_dict(type(target).from_pretrained(os.path.join(folder, "target"), use_safetensors=True).state_dict())

    accelerator.register_save_state_pre_hook(save_target)
    accelerator.register_load_state_pre_hook(load_target)
    if accelerator.is_main_process:
        mark_output_dir(output, "distill", resume=config.resume is not None, overwrite=config.overwrite)
    start_trackers(accelerator, config, "gen-distill")
    stride = lcm.config.num_train_timesteps // config.original_inference_steps
    grid = torch.arange(1, config.original_inference_steps + 1) * stride - 1  # LCM's training timesteps
    alphas_cumprod = lcm.alphas_cumprod.to(accelerator.device)

    def compute_loss(batch, where):
        g = where.generator()
        x0 = batch["pixel_values"]
        labels = torch.as_tensor(batch["label"]).long().to(x0.device)
        index = torch.randint(config.skip, len(grid), (len(x0),), generator=g)
        t_start, t_end = grid[index].to(x0.device), grid[index - config.skip].to(x0.device)
        noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        x_start = lcm.add_noise(x0, noise, t_start)
        with torch.no_grad():
            both = teacher(torch.cat([x_start, x_start]), torch.cat([t_start, t_start]), class_labels=torch.cat([torch.full_like(labels, null), labels])).sample
            uncond, cond = both.chunk(2)
            eps = uncond + config.guidance_scale * (cond - uncond)
            x0_teacher = _x0(lcm, eps, x_start, t_start)
            abar_end = alphas_cumprod[t_end].reshape(-1, 1, 1, 1)
            x_end = abar_end.sqrt() * x0_teacher + (1 - abar_end).sqrt() * eps  # one DDIM step
            goal = _consistency(target(x_end, t_end, class_labels=labels).sample, x_end, t_end, lcm)
        online = _consistency(student(x_start, t_start, class_labels=labels).sample, x_start, t_start, lcm)
        return (torch.sqrt((online.float() - goal.float()) ** 2 + config.huber_c**2) - config.huber_c).mean()

    @torch.no_grad()
    def update_target():
        for p_target, p_student in zip(target.parameters(), accelerator.unwrap_model(student).parameters()):
            p_target.lerp_(p_student, 1 - config.ema_decay)

    losses = optimise(accelerator, config, output, student, optimizer, lr_scheduler, loader, order, compute_loss, after_step=update_target, name="distill")
    if accelerator.is_main_process:
        student_model = accelerator.unwrap_model(student).eval()
        check_final_weights(student_model)
        pipe = ClassConditionalPipeline(
            scheduler=lcm, unet=student_model, num_classes=teacher_pipe.config.num_classes, class_names=teacher_pipe.config.class_names
        )
        save_pipeline(pipe, output)
        write_json(output / "distill.json", {"config": vars(config), "losses": losses})
    accelerator.end_training()
    return output


def _read_train_config(teacher_pipe) -> dict:
    """The teacher's training options, from the folder it was loaded from (diffusers records it)."""
    import json

    if not teacher_pipe.name_or_path:
        return {}
    path = Path(teacher_pipe.name_or_path) / "train_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv=None) -> int:
    from gen.training import dataclass_cli

    return dataclass_cli(DistillConfig, distill, "python -m gen.training.distill", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
