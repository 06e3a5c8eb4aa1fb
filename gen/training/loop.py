"""The optimisation loop every gen trainer runs: diffusion models (`gen.training.train`), value networks
(`gen.training.value`) and consistency distillation (`gen.training.distill`).

What it gives each of them, from accelerate: processes, mixed precision, gradient accumulation, trackers;
and on top: verified atomic checkpoints every ``checkpointing_steps`` (`gen.training.checkpoints`) with
``resume`` ("latest" or a folder), randomness drawn per micro-batch from a generator seeded by where the run
is (seed, step, micro-batch, process) and the data order per epoch from (seed, epoch), so a resumed run
repeats the uninterrupted one exactly; the loss gathered over processes, logged to the trackers and to
``losses.json``; a non-finite loss or weights stop the run before anything is written over earlier weights.

    accelerator = make_run_accelerator(options, output_dir)       # options: a LoopOptions (every trainer's config is one)
    loader, order = data_loader(dataset, batch_size=64)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    losses = optimise(accelerator, options, output_dir, model, optimizer, lr_scheduler, loader, order,
                      lambda batch, step: loss_of(batch, step.generator()))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gen.errors import ArgumentError
from gen.training.options import LoopOptions

LOSSES = "losses.json"  # [step, loss] rows, in the output folder and in each checkpoint


@dataclass
class MicroStep:
    """Where the loop is: the optimisation step (0-based, not yet taken), the micro-batch within it, the
    process; and this micro-batch's generator (`generator()`), from which the loop has already drawn the
    seed of torch's global generator (for modules that draw on their own, such as dropout)."""

    step: int
    micro: int
    rank: int
    seed: int
    main: torch.Generator

    @classmethod
    def at(cls, step: int, micro: int, rank: int, seed: int) -> "MicroStep":
        main = step_generator(seed, step, micro, rank)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=main)))
        return cls(step, micro, rank, seed, main)

    def generator(self, stream: int = 0) -> torch.Generator:
        """Stream 0: the micro-batch's generator; other streams: independent generators (CEP noise, ...)."""
        return self.main if stream == 0 else step_generator(self.seed + stream, self.step, self.micro, self.rank)


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The generator for one micro-batch: a pure function of where the run is, so resuming repeats it."""
    # reduced into torch's seed range (unchanged for every seed below 7e8, where the product stays below it)
    return torch.Generator().manual_seed((((seed * 1_000_003 + step) * 97 + micro) * 131 + rank) % 2**63)


def make_run_accelerator(options: LoopOptions, output_dir: Path):
    """The accelerator of a run: the options' accumulation, precision (None: the accelerate config's) and
    trackers; accelerate's project and logging folders inside output_dir. With --overwrite and no --resume,
    the checkpoints the earlier run wrote go first (a later --resume must not find them); anything else in
    checkpoints/ (a user's own copy, say) stays."""
    from accelerate.utils import ProjectConfiguration

    from gen.io import is_rank_zero
    from gen.training import make_accelerator
    from gen.training.checkpoints import remove_written

    if options.overwrite and options.resume is None and is_rank_zero():
        remove_written(output_dir / "checkpoints")
    return make_accelerator(
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        mixed_precision=options.mixed_precision,
        log_with=None if options.report_to == "none" else options.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )


def trainer_run(kind: str) -> Callable:
    """Wrap a trainer `run(config) -> output folder`: the lock on config.output_dir (taken by
    gen.io.check_output_dir) is let go when it returns or fails, not only when the process ends; on success
    the main process prints one closing line: what, how long, the final loss, where."""
    import functools
    import time

    from gen.io import is_rank_zero, release_output_dir

    def wrap(run: Callable) -> Callable:
        @functools.wraps(run)
        def wrapped(config, *args, **kwargs):
            started = time.perf_counter()
            try:
                result = run(config, *args, **kwargs)
            finally:
                if isinstance(getattr(config, "output_dir", None), (str, Path)):
                    release_output_dir(config.output_dir)
            if is_rank_zero() and isinstance(result, Path):
                print(closing_line(kind, result, time.perf_counter() - started), flush=True)
            return result

        return wrapped

    return wrap


def closing_line(kind: str, output_dir: Path, seconds: float) -> str:
    import json

    rows = json.loads((output_dir / LOSSES).read_text()).get("losses", []) if (output_dir / LOSSES).is_file() else []
    loss = f"final loss {rows[-1][1]:.4g}" if rows else "no steps taken"
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return f"{kind}: {rows[-1][0] if rows else 0} steps in {took}, {loss}; saved to {output_dir}"


def start_trackers(accelerator, options: LoopOptions, project: str) -> None:
    """The --report-to trackers (main process), with the run's scalar options as their config."""
    import dataclasses

    if accelerator.is_main_process and options.report_to != "none":
        accelerator.init_trackers(project, config={k: v for k, v in dataclasses.asdict(options).items() if isinstance(v, (int, float, str, bool))})


def data_loader(dataset, batch_size: int, num_workers: int = 0) -> tuple[torch.utils.data.DataLoader, torch.Generator]:
    """A shuffling loader whose order `optimise` reseeds every epoch (the returned generator)."""
    order = torch.Generator()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=torch.utils.data.RandomSampler(dataset, generator=order),
        drop_last=len(dataset) >= batch_size,
        num_workers=num_workers,
    )
    return loader, order


def resume_point(accelerator, options: LoopOptions, output_dir: Path) -> tuple[int, list]:
    """(step, losses so far): from the checkpoint `options.resume` names (its state loaded), else (0, [])."""
    import json

    from gen.training import checkpoints

    checkpoints_dir = output_dir / "checkpoints"
    resume_from = None
    if options.resume == "latest":
        resume_from = checkpoints.latest_valid(checkpoints_dir, warn=accelerator.print)
        if resume_from is None:
            accelerator.print("resume: no complete checkpoint yet; starting from scratch.")
    elif options.resume:
        resume_from = Path(options.resume)
    if resume_from is None:
        return 0, []
    manifest = checkpoints.verify(resume_from, "resume")
    try:
        accelerator.load_state(str(resume_from))
    except (RuntimeError, KeyError, ValueError) as err:
        raise ArgumentError(
            f"resume: {resume_from} does not fit this run's model and optimizer (another architecture or option?): {str(err).splitlines()[0][:300]}"
        ) from None
    step = manifest["step"]
    log = resume_from / LOSSES if (resume_from / LOSSES).is_file() else output_dir / LOSSES  # checkpoints before this version kept none
    losses = [row for row in json.loads(log.read_text())["losses"] if row[0] <= step] if log.exists() else []
    accelerator.print(f"resumed from {resume_from} at step {step}")
    return step, losses


def optimise(
    accelerator,
    options: LoopOptions,
    output_dir: Path,
    model,
    optimizer,
    lr_scheduler,
    loader,
    order: torch.Generator,
    compute_loss: Callable[[dict, MicroStep], torch.Tensor],
    after_step: Callable[[], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    name: str = "train",
) -> list:
    """Run to `options.max_train_steps` (resuming first if asked); returns the [step, loss] rows.

    `compute_loss(batch, where)` gives a micro-batch's loss (its randomness from `where.generator()`);
    `after_step()` runs after each optimisation step (an EMA update), `on_step(step)` after its loss is
    logged (validation samples). The trainable parameters are those of `model` that require gradients."""
    from tqdm.auto import tqdm

    from gen.errors import TrainingDiverged
    from gen.io import write_json
    from gen.training import checkpoints

    checkpoints_dir = output_dir / "checkpoints"
    global_step, losses = resume_point(accelerator, options, output_dir)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]  # the backbone's, and trained text encoders'
    accumulation = options.gradient_accumulation_steps
    batches_per_epoch = len(loader)
    micro_done = global_step * accumulation
    epoch, skip = divmod(micro_done, batches_per_epoch)
    bar = tqdm(total=options.max_train_steps, initial=global_step, desc=name, disable=not (options.progress and accelerator.is_local_main_process))
    rank, micro, running = accelerator.process_index, 0, []
    while global_step < options.max_train_steps:
        order.manual_seed(options.seed * 7919 + epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for each in (loader, batches, loader.dataset):  # the epoch's random crops and flips (gen.training.data); accelerate's
            if hasattr(each, "set_epoch"):  # loaders pass their own count of iterations to the dataset when they start one
                each.set_epoch(epoch)
        skip = 0
        for batch in batches:
            with accelerator.accumulate(model):
                loss = compute_loss(batch, MicroStep.at(global_step, micro, rank, options.seed))
                accelerator.backward(loss)
                if accelerator.sync_gradients and options.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, options.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
                running.append(loss.detach().float())
                micro += 1
            if not accelerator.sync_gradients:
                continue
            micro = 0
            if after_step is not None:
                after_step()
            global_step += 1
            bar.update(1)
            mean_loss = accelerator.gather(torch.stack(running).mean()[None]).mean().item()
            running = []
            if not math.isfinite(mean_loss):
                kept = checkpoints.latest_valid(checkpoints_dir, warn=lambda *_: None)
                where_kept = f"the last checkpoint, {kept}, holds finite weights" if kept else "no checkpoint was written yet"
                raise TrainingDiverged(
                    f"learning_rate: training diverged at step {global_step} (loss {mean_loss}); nothing was saved over the earlier weights and {where_kept}. "
                    "Lower --learning-rate or --max-grad-norm and resume or restart."
                )
            losses.append([global_step, mean_loss])
            if global_step % options.log_every == 0 or global_step == options.max_train_steps:
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                accelerator.log({"loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=global_step)
            if on_step is not None:
                on_step(global_step)
            if options.checkpointing_steps and global_step % options.checkpointing_steps == 0:
                if not all(torch.isfinite(p).all() for p in accelerator.unwrap_model(model).parameters()):
                    raise TrainingDiverged(
                        f"learning_rate: the weights became non-finite by step {global_step}; the earlier checkpoints are kept. "
                        "Lower --learning-rate or --max-grad-norm and resume."
                    )
                checkpoints.save(accelerator, checkpoints_dir, global_step, epoch, options.checkpoints_total_limit, files={LOSSES: {"losses": losses}})
                if accelerator.is_main_process:
                    write_json(output_dir / LOSSES, {"losses": losses})
            if global_step >= options.max_train_steps:
                break
        epoch += 1
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(output_dir / LOSSES, {"losses": losses})
    return losses


def check_final_weights(weights) -> None:
    """Every tensor finite (a model's parameters, or any iterable of tensors), else nothing is saved."""
    from gen.errors import TrainingDiverged

    weights = weights.parameters() if isinstance(weights, torch.nn.Module) else weights
    if not all(torch.isfinite(p).all() for p in weights):
        raise TrainingDiverged("learning_rate: the trained weights are not finite; nothing was saved. Lower --learning-rate or --max-grad-norm.")
