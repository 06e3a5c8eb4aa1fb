"""`sample()`: the one denoising loop.

    >>> out = sample(Denoiser(unet, DDIMScheduler(...)), latents, num_inference_steps=50, generator=g)
    >>> out.samples, out.nfe

With no hooks it takes the same steps as the stock diffusers pipelines: one (classifier-free guided)
model call per step, then ``scheduler.step(output, t, x, eta=..., generator=...)``. Hooks (see
`gen.core.hooks`) change the condition, the backbone, or the step itself, and observe every state.

Counts: ``nfe`` is backbone evaluations per sample (a guided call counts its two branches),
``reward_calls`` rewards evaluated per sample, ``decodes`` VAE/pixel decodes per sample.

Handing over between schedulers: when a ``denoiser`` hook returns a denoiser with a scheduler of its
own, the state x_t (at the outgoing scheduler's noise level) continues on the incoming scheduler: the
loop picks the incoming training timestep whose log-SNR is closest, rescales x by the ratio of the two
signal coefficients (VP, VE and flow states differ by that factor), and keeps the incoming scheduler's
remaining grid points that are less noisy. Schedulers that take custom timesteps (DDPM, LCM, TCD, Euler,
DPM-Solver) accept any handover point; others need it to fall on their grid.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
from diffusers.utils import BaseOutput

from gen.errors import ArgumentError, ArgumentTypeError
from gen.core.schedulers import NoiseLevel, noise_level, schedule_family, step_kwargs, step_parameters, train_log_snr
from gen.core.backbones import Condition, repeat_condition
from gen.core.denoiser import Denoiser, DenoiserOutput
from gen.core.hooks import HOOK_POINTS, Step, check_hooks, points_of


@dataclass
class SamplingState:
    """The loop's state before a step: x_t, and (once evaluated) the prediction at x_t under this step's
    denoiser and condition: `model_output` and the x0 estimate."""

    step: Step
    x: torch.Tensor
    prediction: DenoiserOutput | None = None

    @property
    def model_output(self) -> torch.Tensor | None:
        return None if self.prediction is None else self.prediction.output

    @property
    def x0(self) -> torch.Tensor | None:
        return None if self.prediction is None else self.prediction.x0


@dataclass
class SampleOutput(BaseOutput):
    """Samples (latents, or pixels for pixel models) with what they cost, per sample."""

    samples: torch.Tensor
    nfe: float
    reward_calls: float = 0.0
    decodes: float = 0.0
    trace: list | None = None


@dataclass
class Counts:
    """Rows evaluated during one run; per-sample figures divide by the batch."""

    batch: int
    model_rows: int = 0
    reward_rows: int = 0
    decode_rows: int = 0

    def per_sample(self) -> dict[str, float]:
        return {
            "nfe": self.model_rows / self.batch,
            "reward_calls": self.reward_rows / self.batch,
            "decodes": self.decode_rows / self.batch,
        }


def _repeat_generator(generator, times: int):
    return generator * times if isinstance(generator, list) else generator


class _Run:
    """Everything one call of `sample` shares across steps."""

    def __init__(self, denoiser, cond, uncond, guidance_scale, guidance_rescale, generator, eta, hooks, decode, batch, step_kwargs=None):
        self.base_denoiser = denoiser
        self.step_kwargs = step_kwargs
        self.cond, self.uncond = cond, uncond
        self.guidance_scale, self.guidance_rescale = guidance_scale, guidance_rescale
        self.generator, self.eta = generator, eta
        self.hooks = hooks
        self.at = {point: [h for h in hooks if point in points_of(h)] for point in HOOK_POINTS}
        self.decode_fn = decode
        self.counts = Counts(batch=batch)
        self.plan: list[torch.Tensor] = []
        self.scheduler = denoiser.scheduler
        self._resolved: dict[int, tuple[Denoiser, Condition | None]] = {}

    def step_at(self, index: int) -> Step:
        return Step(index=index, timestep=self.plan[index], num_steps=len(self.plan))

    def resolve(self, index: int) -> tuple[Denoiser, Condition | None]:
        """This step's denoiser and condition, asked of the hooks once per step."""
        if index not in self._resolved:
            step = self.step_at(index)
            denoiser, cond = self.base_denoiser, self.cond
            for hook in self.at["denoiser"]:
                denoiser = returned(hook, "denoiser", hook.denoiser(step, denoiser), Denoiser)
            if cond is not None:
                for hook in self.at["condition"]:
                    cond = returned(hook, "condition", hook.condition(step, cond), dict)
            self._resolved[index] = (denoiser, cond)
        return self._resolved[index]

    def predict(self, denoiser: Denoiser, cond, x: torch.Tensor, t, max_batch: int | None = None) -> DenoiserOutput:
        """Guided evaluation of x (any multiple of the batch) in chunks of at most max_batch rows."""
        batch = self.counts.batch
        rows = x.shape[0]
        chunk = rows if not max_batch else max(batch, (max_batch // batch) * batch)
        outs = []
        for start in range(0, rows, chunk):
            part = x[start : start + chunk]
            times = part.shape[0] // batch
            out = denoiser(
                part,
                t,
                cond=repeat_condition(cond, times, batch, denoiser.backbone.spec.shared),
                uncond=repeat_condition(self.uncond, times, batch, denoiser.backbone.spec.shared),
                guidance_scale=self.guidance_scale,
                guidance_rescale=self.guidance_rescale,
            )
            self.counts.model_rows += out.evaluations
            outs.append(out)
        return DenoiserOutput.concat(outs)

    def hand_over(self, index: int, outgoing: Denoiser, incoming: Denoiser, x: torch.Tensor) -> torch.Tensor:
        """Continue from plan[index] on the incoming denoiser's scheduler (see the module docstring)."""
        level = outgoing.noise_level(self.plan[index])
        start, remaining = plan_handover(level, incoming.scheduler, index)
        scheduler = incoming.scheduler
        if remaining is not None:
            with _quiet_diffusers():  # LCM warns when a custom grid starts below its top: here that is the point
                scheduler.set_timesteps(timesteps=remaining, device=x.device)
        elif hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(int((scheduler.timesteps.double() == start).nonzero()[0, 0]))
        self.plan = self.plan[:index] + [t for t in scheduler.timesteps if float(t) <= start]
        self.scheduler = scheduler
        self._resolved = {i: v for i, v in self._resolved.items() if i <= index}
        start_level = noise_level(scheduler, start)
        return x * (start_level.alpha / level.alpha).to(x.dtype)


@contextmanager
def _quiet_diffusers():
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


# Log-SNR distance under which a handover snaps to the incoming scheduler's own grid point.
_SNAP = 0.05


def plan_handover(level: NoiseLevel, scheduler, index: int = 0) -> tuple[int, list[int] | None]:
    """Where a state at `level` continues on `scheduler` (whose timesteps must be set): the start timestep
    and, for schedulers that take custom timesteps, the remaining schedule (None: a suffix of its grid).
    A ValueError names the problem when the scheduler cannot continue from there."""
    grid = getattr(scheduler, "timesteps", None)
    name = type(scheduler).__name__
    if grid is None or getattr(scheduler, "num_inference_steps", None) is None:
        raise ArgumentError(f"hooks: the denoiser for step {index} brings a {name} with no timesteps; call its set_timesteps(n) before sampling.")
    grid_levels = torch.stack([noise_level(scheduler, t).log_snr for t in grid])
    gap = (grid_levels - level.log_snr).abs()
    if float(gap.min()) < _SNAP:
        start = int(grid[int(gap.argmin())])
    else:
        table = train_log_snr(scheduler)
        allowed = torch.arange(len(table))
        original = scheduler.config.get("original_inference_steps")
        if original:  # consistency schedulers were distilled on a coarser grid: stay on it
            stride = scheduler.config.num_train_timesteps // original
            allowed = torch.arange(1, original + 1) * stride - 1
        start = int(allowed[(table[allowed] - level.log_snr).abs().argmin()])
    start_snr = noise_level(scheduler, start).log_snr
    later = [int(t) for t, g in zip(grid, grid_levels) if g > start_snr + 1e-6]
    on_grid = any(int(t) == start for t in grid)
    if "timesteps" in inspect.signature(scheduler.set_timesteps).parameters and not on_grid:
        return start, [start] + later
    if not on_grid:
        raise ArgumentError(
            f"hooks: {name} takes no custom timesteps and the handover level (timestep {start}) is not on its grid "
            f"{[int(t) for t in grid]}; use a scheduler that takes custom timesteps (DDPM, LCM, Euler, DPM-Solver) for the incoming model."
        )
    return start, None


class StepContext:
    """What a transition hook may use at one step; every evaluation it makes is counted."""

    def __init__(self, run: _Run, state: SamplingState, denoiser: Denoiser, cond, proceed):
        self._run = run
        self.step = state.step
        self.denoiser = denoiser
        self.cond = cond
        self._proceed = proceed

    # -- facts -----------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self._run.counts.batch

    @property
    def scheduler(self):
        return self._run.scheduler

    @property
    def generator(self):
        return self._run.generator

    @property
    def uncond(self):
        return self._run.uncond

    @property
    def guidance_scale(self) -> float:
        return self._run.guidance_scale

    @property
    def is_last(self) -> bool:
        return self.step.index == len(self._run.plan) - 1

    @property
    def counts(self) -> Counts:
        return self._run.counts

    @property
    def next_timestep(self) -> torch.Tensor | None:
        return None if self.is_last else self._run.plan[self.step.index + 1]

    @property
    def init_noise_sigma(self) -> float:
        return float(getattr(self.scheduler, "init_noise_sigma", 1.0))  # flow schedulers start from unit noise

    # -- actions ---------------------------------------------------------------------------------------------
    def proceed(self, state: SamplingState) -> SamplingState:
        """Run the rest of the transition chain (ending in the scheduler's step) on state."""
        return self._proceed(state)

    def scheduler_step(self, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The scheduler's step on any multiple of the batch, in one call (stateful schedulers advance once)."""
        times = x.shape[0] // self.batch_size
        kwargs = step_kwargs(self.scheduler, _repeat_generator(self._run.generator, times), self._run.eta, self._run.step_kwargs)
        return self.scheduler.step(model_output, self.step.timestep, x, **kwargs, return_dict=False)[0]

    def propose(self, state: SamplingState, num_candidates: int) -> torch.Tensor:
        """num_candidates draws of x_{t-1} from the model's own transition, candidate-major:
        row m * batch + b is candidate m of sample b."""
        reps = [num_candidates] + [1] * (state.x.ndim - 1)
        return self.scheduler_step(state.model_output.repeat(*reps), state.x.repeat(*reps))

    def predict(self, x: torch.Tensor, max_batch: int | None = None) -> DenoiserOutput:
        """Evaluate states (any multiple of the batch) at this step, with this step's denoiser and condition."""
        return self._run.predict(self.denoiser, self.cond, x, self.step.timestep, max_batch=max_batch)

    def predict_next(self, x: torch.Tensor, max_batch: int | None = None) -> tuple[DenoiserOutput, bool]:
        """Evaluate states at the next timestep. Returns the prediction and whether the next step can reuse it
        (it cannot when the next step hands over to another scheduler)."""
        run = self._run
        nxt = self.step.index + 1
        denoiser, cond = run.resolve(nxt)
        reusable = denoiser.scheduler is run.scheduler
        if not reusable:
            denoiser, cond = self.denoiser, self.cond
        return run.predict(denoiser, cond, x, run.plan[nxt], max_batch=max_batch), reusable

    def next_state(self, x: torch.Tensor, prediction: DenoiserOutput | None = None) -> SamplingState:
        """The state for the next step; pass the prediction made at x by `predict_next` to reuse it."""
        step = self._run.step_at(self.step.index + 1) if not self.is_last else replace(self.step, index=self.step.index + 1)
        return SamplingState(step=step, x=x, prediction=prediction)

    def update_guidance(
        self, cond: Condition | None = None, uncond: Condition | None = None, guidance_scale: float | None = None, drop_uncond: bool = False
    ) -> None:
        """Change the run's condition, unconditional branch or guidance scale for the steps after this one (what
        a stock `callback_on_step_end` may do: new prompt embeddings, a guidance cut-off)."""
        run = self._run
        if cond is not None:
            run.cond = cond
        if uncond is not None or drop_uncond:
            run.uncond = None if drop_uncond else uncond
        if guidance_scale is not None:
            run.guidance_scale = guidance_scale
        run._resolved = {i: v for i, v in run._resolved.items() if i <= self.step.index}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for latents (the pipeline's VAE decode, or the pixel mapping); counted."""
        if self._run.decode_fn is None:
            raise ArgumentError("decode: this run was given no decoder; pass decode= to sample() or use a gen pipeline.")
        self._run.counts.decode_rows += latents.shape[0]
        return self._run.decode_fn(latents)

    def count_rewards(self, rows: int) -> None:
        self._run.counts.reward_rows += rows


def _plain_step(ctx: StepContext, state: SamplingState) -> SamplingState:
    return ctx.next_state(ctx.scheduler_step(state.model_output, state.x))


def _transition_chain(run: _Run, transitions: Sequence, state: SamplingState, denoiser, cond) -> SamplingState:
    def link(position: int):
        def proceed(s: SamplingState) -> SamplingState:
            ctx = StepContext(run, s, denoiser, cond, link(position + 1))
            if position == len(transitions):
                return _plain_step(ctx, s)
            return returned(transitions[position], "transition", transitions[position].transition(s, ctx), SamplingState)

        return proceed

    return link(0)(state)


def returned(hook, point: str, value, kind: type):
    """A hook point's return value, refused naming the hook when it is not what the loop continues with
    (a hook that changes its argument in place and forgets to return it gives None)."""
    if not isinstance(value, kind):
        raise ArgumentTypeError(
            f"hooks: {type(hook).__name__}.{point}() returned {type(value).__name__}, not a {kind.__name__}; "
            f"return the (possibly changed) value it was given."
        )
    return value


def check_eta(scheduler, eta) -> None:
    """eta means something only to schedulers whose step() takes it (DDIM: 0 deterministic, 1 DDPM-like)."""
    if eta is None:
        return
    name = type(scheduler).__name__
    if "eta" not in step_parameters(type(scheduler)):
        raise ArgumentError(
            f"eta: {name}.step takes no eta, so eta={eta!r} would be ignored; leave eta unset, or use DDIMScheduler.from_config(scheduler.config) for a tunable eta."
        )
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ArgumentError(f"eta: must be a number in [0, 1] (0 deterministic, 1 as stochastic as DDPM), got {eta!r}.")


def check_eta_at_zero_snr(scheduler, eta, plan) -> None:
    """A stochastic DDIM step from a timestep whose alphas_cumprod is exactly 0 (a zero-terminal-SNR schedule
    sampled with trailing steps) takes the square root of a rounding-negative number in diffusers and turns
    every sample into NaN (huggingface/diffusers#5969); refuse it before the first model call. Runs after
    `check_eta`, which already refused an eta the scheduler's step does not take."""
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if not eta or alphas is None:
        return
    at_zero = [int(t) for t in plan if 0 <= int(t) < len(alphas) and alphas[int(t)] == 0]
    if at_zero:
        name = type(scheduler).__name__
        raise ArgumentError(
            f"eta: {name} with eta={eta!r} steps from t={at_zero[0]}, where this zero-terminal-SNR schedule has no signal left, "
            f"and diffusers' {name}.step returns NaN there; use eta=0, or DDPMScheduler.from_config(scheduler.config) for stochastic sampling."
        )


def check_generator(generator, batch: int) -> None:
    """None, one torch.Generator (on the CPU or the model's device), or a list of one per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch:
            raise ArgumentError(f"generator: got a list of {len(generator)} generators for {batch} samples; pass one per sample (or a single generator).")
        return
    raise ArgumentTypeError(f"generator: expected a torch.Generator or a list of them, got {type(generator).__name__}.")


def check_guidance_scale(guidance_scale) -> None:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ArgumentError(f"guidance_scale: must be a finite number >= 0 (1 or less: no guidance), got {guidance_scale!r}.")


def set_custom_timesteps(scheduler, timesteps, device) -> list:
    """Given `timesteps`: the scheduler's own when they are already set to them (as `retrieve_timesteps`
    leaves them); else set on a scheduler that takes custom timesteps; else refused (its step() would
    follow the schedule it has, not these)."""
    given = [float(t) for t in timesteps]
    current = getattr(scheduler, "timesteps", None)
    if current is not None and len(current) == len(given) and [float(t) for t in current] == given:
        return list(timesteps)
    start = _slice_start(current, given)
    # A stretch of the grid the scheduler is positioned on (img2img's strength, SDXL's denoising_end: stock sets
    # the begin index), or of a scheduler whose step reads only the timestep's value (DDIM, DDPM): run as set.
    if start is not None and getattr(scheduler, "begin_index", start) == start:
        return list(timesteps)
    name = type(scheduler).__name__
    if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
        raise ArgumentError(
            f"timesteps: {name} is not set to these timesteps and takes no custom ones; pass num_inference_steps instead, "
            "or a scheduler that takes custom timesteps (DDPM, LCM, Euler, DPM-Solver)."
        )
    try:
        scheduler.set_timesteps(timesteps=[int(t) for t in given], device=device)
    except (ValueError, TypeError) as err:
        raise ArgumentError(f"timesteps: {name} cannot take {[int(t) for t in given]} ({str(err).splitlines()[0]}).") from None
    return list(scheduler.timesteps)


def _slice_start(current, given: list[float]) -> int | None:
    """Where `given` runs as a contiguous stretch of the scheduler's current grid, or None."""
    if current is None or not given or len(given) > len(current):
        return None
    grid = [float(t) for t in current]
    for start in range(len(grid) - len(given) + 1):
        if grid[start : start + len(given)] == given:
            return start
    return None


def check_steps(num_inference_steps, timesteps) -> None:
    if timesteps is None:
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps <= 0:
            raise ArgumentError(f"num_inference_steps: must be a positive integer, got {num_inference_steps!r}.")
    elif len(timesteps) == 0:
        raise ArgumentError("timesteps: got an empty schedule; pass at least one timestep.")


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    latents: torch.Tensor,
    *,
    num_inference_steps: int | None = None,
    timesteps: Sequence | torch.Tensor | None = None,
    cond: Condition | None = None,
    uncond: Condition | None = None,
    guidance_scale: float = 1.0,
    guidance_rescale: float = 0.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float | None = None,
    hooks: Sequence = (),
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    trace: bool = False,
    progress_bar: Callable | None = None,
    interrupt: Callable[[], bool] | None = None,
    step_kwargs: dict | None = None,
    guider=None,
) -> SampleOutput:
    """Denoise `latents` (x_T, already scaled by the scheduler's init_noise_sigma) to samples.

    Args:
        denoiser: the backbone and its scheduler.
        latents: initial noise, (batch, channels, height, width).
        num_inference_steps: calls ``scheduler.set_timesteps(num_inference_steps)``; or pass `timesteps`
            already set on the scheduler (as `retrieve_timesteps` leaves them).
        cond, uncond: backbone keyword arguments (``class_labels``, ``encoder_hidden_states``, ...) for the
            conditional and unconditional branches; guidance runs when uncond is given and guidance_scale > 1.
        generator, eta: passed to ``scheduler.step`` where it takes them, as the stock pipelines do.
        hooks: `SamplingHook`s (see `gen.core.hooks`), composing in order.
        decode: latents -> images in [0, 1]; used by value-guided transitions (and counted).
        trace: keep every step's x_t and x0 estimate (on the CPU) in the output.
        progress_bar: a ``DiffusionPipeline.progress_bar``-like factory taking ``total=``.
        interrupt: asked before every step; True stops the loop there (a stock callback's ``pipe._interrupt``).
        step_kwargs: further keyword arguments for ``scheduler.step`` where it takes them (DDIM's
            ``use_clipped_model_output``).
        guider: a diffusers guider (``diffusers.guiders``) in place of the run's classifier-free guidance: its
            branches and its combination at every step (see `gen.core.guiders`).

    Returns:
        `SampleOutput` with samples, nfe, reward_calls, decodes and the optional trace.

    Example:
        >>> den = Denoiser(pipe.unet, pipe.scheduler)
        >>> x = randn_tensor((4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
        >>> out = sample(den, x, num_inference_steps=50, hooks=[MyHook()])
    """
    if not isinstance(denoiser, Denoiser):
        raise ArgumentTypeError(f"denoiser: expected a gen.Denoiser, got {type(denoiser).__name__}; wrap it: Denoiser(model, scheduler).")
    denoiser.check_latents(latents)
    batch = latents.shape[0]
    denoiser.check_condition(cond, batch, "cond")
    if uncond is not None:
        denoiser.check_condition(uncond, batch, "uncond")
    check_steps(num_inference_steps, timesteps)
    check_guidance_scale(guidance_scale)
    if guidance_scale > 1 and uncond is None:
        raise ArgumentError(
            f"guidance_scale: {guidance_scale} asks for classifier-free guidance but no uncond was given, so none would run; pass uncond={{...}} (the null condition) or guidance_scale=1."
        )
    if not isinstance(guidance_rescale, (int, float)) or not 0 <= guidance_rescale <= 1:
        raise ArgumentError(f"guidance_rescale: must be a number in [0, 1], got {guidance_rescale!r}.")
    check_generator(generator, batch)
    hooks = check_hooks(hooks)
    if guider is not None:
        from gen.core.guiders import UseGuider

        hooks = [*hooks, UseGuider(guider)]
    check_eta(denoiser.scheduler, eta)

    run = _Run(denoiser, cond, uncond, guidance_scale, guidance_rescale, generator, eta, hooks, decode, batch, step_kwargs)
    run.latent_shape, run.latent_dtype = tuple(latents.shape), latents.dtype
    if timesteps is None:
        try:
            denoiser.scheduler.set_timesteps(num_inference_steps, device=latents.device)
        except ValueError as err:  # e.g. more steps than training timesteps
            raise ArgumentError(f"num_inference_steps: {type(denoiser.scheduler).__name__} cannot take {num_inference_steps} steps ({err}).") from None
        timesteps = denoiser.scheduler.timesteps
    else:
        timesteps = set_custom_timesteps(denoiser.scheduler, timesteps, latents.device)
    run.plan = list(timesteps)
    check_eta_at_zero_snr(denoiser.scheduler, eta, run.plan)
    info = run_info(run)
    for hook in hooks:
        if hasattr(hook, "validate"):
            hook.validate(info)
    for hook in hooks:
        if hasattr(hook, "setup"):
            hook.setup(info)
    transitions, observers = run.at["transition"], run.at["observe"]

    records = [] if trace else None
    state = SamplingState(step=run.step_at(0), x=latents)
    active = denoiser
    bar = progress_bar(total=len(run.plan)) if progress_bar is not None else nullcontext()
    with bar as progress:
        index = 0
        while index < len(run.plan):
            if interrupt is not None and interrupt():
                break
            step_denoiser, step_cond = run.resolve(index)
            if step_denoiser.scheduler is not run.scheduler:
                state = SamplingState(step=state.step, x=run.hand_over(index, active, step_denoiser, state.x))
                if progress is not None:
                    progress.total = len(run.plan)
                    progress.refresh()
                step_denoiser, step_cond = run.resolve(index)
            active = step_denoiser
            state = replace(state, step=run.step_at(index))
            if state.prediction is None:
                state = replace(state, prediction=run.predict(step_denoiser, step_cond, state.x, state.step.timestep))
            for hook in observers:
                hook.observe(state)
            if records is not None:
                records.append({"index": index, "timestep": state.step.timestep.cpu(), "x": state.x.cpu(), "x0": state.x0.cpu()})
            state = _transition_chain(run, transitions, state, step_denoiser, step_cond)
            index += 1
            if progress is not None:
                progress.update()
    return SampleOutput(samples=state.x, trace=records, **run.counts.per_sample())


@dataclass(frozen=True)
class RunInfo:
    """What a hook's `validate` and `setup` see before any model evaluation."""

    denoiser: Denoiser
    scheduler: object
    timesteps: list
    batch_size: int
    eta: float | None
    guidance_scale: float
    has_decoder: bool
    hooks: list = field(default_factory=list)
    generator: object = None
    cond: dict | None = None
    uncond: dict | None = None
    latent_shape: tuple = ()
    latent_dtype: torch.dtype = torch.float32
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None  # the run's decoder (not counted; for observers)

    def hook_generator(self, salt: int = 0) -> torch.Generator:
        """A CPU generator for a hook's own draws in this run, seeded from the run's generator (its initial
        seed: drawing it does not move the run's noise) and `salt` (the hook's own seed). Without a run
        generator it is seeded from torch's global generator, as the run's own noise is."""
        gens = self.generator if isinstance(self.generator, list) else [self.generator]
        if gens[0] is None:
            base = [int(torch.randint(0, 2**62, (1,)))]
        else:
            base = [g.initial_seed() for g in gens]
        seed = 0
        for value in (*base, salt):
            seed = (seed * 1_000_003 + int(value)) % (2**62)
        return torch.Generator().manual_seed(seed)


def run_info(run: _Run) -> RunInfo:
    return RunInfo(
        denoiser=run.base_denoiser,
        scheduler=run.scheduler,
        timesteps=list(run.plan),
        batch_size=run.counts.batch,
        eta=run.eta,
        guidance_scale=run.guidance_scale,
        has_decoder=run.decode_fn is not None,
        hooks=list(run.hooks),
        generator=run.generator,
        cond=run.cond,
        uncond=run.uncond,
        latent_shape=run.latent_shape,
        latent_dtype=run.latent_dtype,
        decode=run.decode_fn,
    )
