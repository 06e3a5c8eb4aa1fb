"""Consistency distillation (Song et al. 2023; latent-consistency form of Luo et al. 2023) of a
class-conditional teacher into a few-step student that samples with diffusers' `LCMScheduler`.

    python -m gen.training.distill --teacher zoo:digits --output-dir runs/distilled
    accelerate launch -m gen.training.distill ...

For x0 from the data and a timestep pair t_{n+k} > t_n on the teacher's 50-step DDIM grid, the teacher takes
one (classifier-free guided) DDIM step from x_{t_{n+k}} = q(x0) to x_{t_n}; the student's consistency
function f(x, t) = c_skip(t) x + c_out(t) x0_hat(x, t) (LCMScheduler's boundary scalings) is trained so
that f(x_{t_{n+k}}) matches the EMA student's f(x_{t_n}). The student starts from the teacher's weights and
keeps its architecture, so adapters trained on the teacher (LoRA) load into it unchanged. Guidance is
distilled in: the student is sampled without CFG.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from gen.errors import ArgumentError


@dataclass
class DistillConfig:
    teacher: str = "zoo:digits"
    output_dir: str = "runs/distilled"
    guidance_scale: float = 2.0
    original_inference_steps: int = 50
    skip: int = 1
    train_batch_size: int = 64
    max_train_steps: int = 800
    learning_rate: float = 1e-4
    ema_decay: float = 0.95
    huber_c: float = 0.001
    condition_dropout: float = 0.0
    seed: int = 0
    overwrite: bool = False


def _x0(scheduler, model_output, x, t):
    abar = scheduler.alphas_cumprod.to(x.device)[t].reshape(-1, 1, 1, 1)
    return (x - (1 - abar).sqrt() * model_output) / abar.sqrt()


def _consistency(student_out, x, t, lcm):
    c_skip, c_out = lcm.get_scalings_for_boundary_condition_discrete(t.float())
    return c_skip.reshape(-1, 1, 1, 1) * x + c_out.reshape(-1, 1, 1, 1) * _x0(lcm, student_out, x, t)


def distill(config: DistillConfig) -> Path:
    from diffusers import LCMScheduler
    from tqdm.auto import tqdm

    from gen.training import make_accelerator

    from gen.io import write_json
    from gen.pipelines import ClassConditionalPipeline
    from gen.training.data import load_data
    from gen.training.train import load_init, save_pipeline

    from gen.io import check_output_dir, mark_output_dir

    for name in ("max_train_steps", "skip", "train_batch_size", "original_inference_steps"):
        if getattr(config, name) < 1:
            raise ArgumentError(f"{name}: must be >= 1, got {getattr(config, name)}.")
    if config.skip >= config.original_inference_steps:
        raise ArgumentError(f"skip: must be smaller than original_inference_steps ({config.original_inference_steps}), got {config.skip}.")
    check_output_dir(config.output_dir, "distill", overwrite=config.overwrite)
    teacher_pipe = load_init(config.teacher)
    if not isinstance(teacher_pipe, ClassConditionalPipeline) or getattr(teacher_pipe, "unet", None) is None:
        raise ArgumentError("teacher: consistency distillation here takes a class-conditional UNet pipeline (e.g. zoo:digits).")
    accelerator = make_accelerator()
    torch.manual_seed(config.seed)
    teacher = teacher_pipe.unet.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    target = copy.deepcopy(teacher).eval().requires_grad_(False)
    lcm = LCMScheduler.from_config(teacher_pipe.scheduler.config, original_inference_steps=config.original_inference_steps, timestep_scaling=10.0)
    null = teacher_pipe.null_class
    train_config = _read_train_config(teacher_pipe)
    dataset = load_data(train_config.get("data", "digits"), train_config.get("resolution", teacher.config.sample_size), teacher.config.in_channels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(config.seed))
    if len(loader) == 0:  # drop_last with fewer examples than one batch: no step would ever run
        raise ArgumentError(f"train_batch_size: {config.train_batch_size} is more than the {len(dataset)} training examples; lower it.")
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate)
    student, optimizer, loader = accelerator.prepare(student, optimizer, loader)
    stride = lcm.config.num_train_timesteps // config.original_inference_steps
    grid = torch.arange(1, config.original_inference_steps + 1) * stride - 1  # LCM's training timesteps
    g = torch.Generator().manual_seed(config.seed)
    history, step = [], 0
    bar = tqdm(total=config.max_train_steps, desc="distill", disable=not accelerator.is_local_main_process)
    while step < config.max_train_steps:
        for batch in loader:
            x0 = batch["pixel_values"]
            labels = torch.as_tensor(batch["label"]).long()
            b = len(x0)
            index = torch.randint(config.skip, len(grid), (b,), generator=g)
            t_start, t_end = grid[index], grid[index - config.skip]
            noise = torch.randn(x0.shape, generator=g)
            x_start = lcm.add_noise(x0, noise, t_start)
            with torch.no_grad():
                both = teacher(torch.cat([x_start, x_start]), torch.cat([t_start, t_start]), class_labels=torch.cat([torch.full_like(labels, null), labels])).sample
                uncond, cond = both.chunk(2)
                eps = uncond + config.guidance_scale * (cond - uncond)
                x0_teacher = _x0(lcm, eps, x_start, t_start)
                abar_end = lcm.alphas_cumprod[t_end].reshape(-1, 1, 1, 1)
                x_end = abar_end.sqrt() * x0_teacher + (1 - abar_end).sqrt() * eps  # one DDIM step
                goal = _consistency(target(x_end, t_end, class_labels=labels).sample, x_end, t_end, lcm)
            online = _consistency(student(x_start, t_start, class_labels=labels).sample, x_start, t_start, lcm)
            loss = (torch.sqrt((online.float() - goal.float()) ** 2 + config.huber_c**2) - config.huber_c).mean()
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                for p_target, p_student in zip(target.parameters(), accelerator.unwrap_model(student).parameters()):
                    p_target.lerp_(p_student, 1 - config.ema_decay)
            step += 1
            bar.update(1)
            if step % 25 == 0:
                history.append([step, loss.item()])
            if step >= config.max_train_steps:
                break
    bar.close()
    accelerator.wait_for_everyone()
    output = Path(config.output_dir)
    if accelerator.is_main_process:
        student_model = accelerator.unwrap_model(student).eval()
        pipe = ClassConditionalPipeline(scheduler=lcm, unet=student_model, num_classes=teacher_pipe.config.num_classes, class_names=teacher_pipe.config.class_names)
        mark_output_dir(output, "distill")
        save_pipeline(pipe, output)
        write_json(output / "distill.json", {"config": config.__dict__, "losses": history})
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
