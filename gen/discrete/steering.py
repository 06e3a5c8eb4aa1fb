"""Steer a masked-diffusion pipeline (`LLaDA2Pipeline`) on token states: SVDD, best-of-N, FK steering and traces.

`steer(LLaDA2Pipeline(...))` runs the stock `__call__` (its input checks, tokenization, block-wise refinement,
EOS handling, callbacks and decoding stay stock's) with two things in place for the call: the model, which counts
its rows and can hand back logits already computed for the same tokens, and `scheduler.step`, where the hooks act.
With no hooks nothing else changes: the output is stock's.

- `SVDD(value, num_candidates=M)`: at each refinement step, M candidate steps are drawn from the same logits
  (M calls of the scheduler's own step, each committing its own draws); SVDD-PM (`PosteriorMeanValue(reward)`)
  scores each candidate by the reward of its x0 estimate: the model is run on the whole candidate sequence (later
  blocks still masked) and every masked position is filled with its most likely token (the mask token excluded);
  SVDD-MC (`LearnedValue(net)`) scores the candidate's generated tokens, masks included, with a value network
  ``net(ids)``. Each row keeps its best candidate (alpha = 0) or one drawn ~ exp(v / alpha). Where the stock
  window is the whole sequence (one block, or the last one), the model's logits at the kept candidate serve the
  next step, so SVDD-PM costs M model rows per sample and step there, M + 1 in earlier blocks.
- `BestOfN(reward, n)`: n independent runs per prompt (the batch repeated, one model call per step), the best
  final sequence kept.
- `FKSteering(reward, num_particles, ...)`: particles as best-of-N, resampled at FK's resampling steps of each
  block (the same potentials, lambda, window and adaptive threshold as for images) by the rewards of their x0
  estimates; the whole sequence of a particle moves with it.
- `trace=True`: every step's window of tokens (output.trace, a list of {"block", "step", "tokens"}).

Rewards see the generated positions of the x0 estimate (batch, generated length) as token ids; wrap text rewards
with the tokenizer (`gen.discrete.tokens.token_regex`). A greedy run (temperature 0 or sampling_method="greedy")
draws the same candidate every time, and is refused for SVDD, best-of-N and FK with the fix named.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from gen.errors import ArgumentError, ArgumentTypeError


ROW_FIELDS = ("prev_sample", "transfer_index", "editing_transfer_index", "sampled_tokens", "sampled_probs")  # BlockRefinementSchedulerOutput's per-row fields


@dataclass
class TokenRun:
    """What one steered call knows: the rows of the stock batch, where the generated positions start, counts."""

    rows: int
    prompt_length: int
    mask_token_id: int
    generator: torch.Generator | None
    model_rows: int = 0
    reward_rows: int = 0
    trace: list | None = None
    gen_length: int = 0
    step_in_block: int = 0
    block: int = -1

    @property
    def full_length(self) -> int:
        return self.prompt_length + self.gen_length


@dataclass
class _TokenContext:
    """The little of a sampling context the value classes use (gen.guidance.values): decode, counts, batch."""

    run: TokenRun
    batch_size: int
    next_timestep: int | None = None

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return ids

    def count_rewards(self, rows: int) -> None:
        self.run.reward_rows += rows


class _Estimate:
    """x0 estimates of candidate windows, with the logits they came from (reused by the next step)."""

    def __init__(self, windows: torch.Tensor, logits: torch.Tensor, x0: torch.Tensor):
        self.windows, self.logits, self.x0 = windows, logits, x0

    def select(self, rows: torch.Tensor) -> "_Estimate":
        return _Estimate(self.windows[rows], self.logits[rows], self.x0[rows])


class _CountingModel(torch.nn.Module):
    """The pipeline's model for the call: counts rows, remembers its last input (the stock loop's window, a view
    of the whole sequence), and returns the logits of a window it already evaluated for the same tokens."""

    def __init__(self, model, run: TokenRun):
        super().__init__()
        self.inner, self.run = model, run
        self.window: torch.Tensor | None = None
        self.kwargs: dict = {}
        self.cached: _Estimate | None = None

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, ids, **kwargs):
        self.window, self.kwargs = ids, kwargs
        cached, self.cached = self.cached, None
        if cached is not None and cached.windows.shape == ids.shape and torch.equal(cached.windows, ids):
            return _Logits(cached.logits)
        return self.evaluate(ids)

    def evaluate(self, ids):
        """The model on candidate sequences: the window's rows repeated, and longer than the window where the rest
        of the sequence (still masked, attended as stock attends generated positions) is appended."""
        self.run.model_rows += len(ids)
        kwargs = {}
        for name, value in self.kwargs.items():
            value = value if len(value) == len(ids) else value.repeat(len(ids) // len(value), 1)
            if value.shape[1] < ids.shape[1]:
                if name == "position_ids":
                    value = torch.arange(ids.shape[1], device=value.device)[None].expand(len(ids), -1)
                else:
                    value = torch.cat([value, value.new_ones(len(ids), ids.shape[1] - value.shape[1])], dim=1)
            kwargs[name] = value
        return self.inner(ids, **kwargs)


@dataclass
class _Logits:
    logits: torch.Tensor


def most_likely(logits: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """Each position's most likely token, the mask token excluded."""
    return logits.float().index_fill(-1, torch.tensor([mask_token_id], device=logits.device), float("-inf")).argmax(-1)


def refinement_steps(arguments: dict) -> int:
    """Steps per block, as the stock call clamps them (at most gen_length // minimal_topk)."""
    return min(arguments.get("num_inference_steps", 32), max(1, arguments.get("gen_length", 2048) // max(1, arguments.get("minimal_topk", 1))))


def check_token_hooks(hooks, arguments: dict, pipe) -> None:
    """Hooks steer can run on token states, a sampler that draws (not greedy) for those that need one, and the
    candidates' logits within memory."""
    from gen.guidance import SVDD, BestOfN, FKSteering

    for hook in hooks:
        if not isinstance(hook, (SVDD, BestOfN, FKSteering)):
            raise ArgumentTypeError(f"hooks: {type(hook).__name__} works on images; on token states steer runs SVDD, BestOfN and FKSteering (and trace=True).")
        greedy = arguments.get("temperature", 0.0) == 0.0 or arguments.get("sampling_method") == "greedy"
        if greedy:
            raise ArgumentError(
                f"temperature: {type(hook).__name__} draws several candidates from each step, but a greedy run (temperature=0 or sampling_method='greedy') "
                "draws the same one every time; pass temperature=1.0 with sampling_method='multinomial' (or 'auto')."
            )
    fk = [hook for hook in hooks if isinstance(hook, FKSteering)]
    if len([h for h in hooks if isinstance(h, (BestOfN, FKSteering))]) > 1 or (fk and any(isinstance(h, SVDD) for h in hooks)):
        raise ArgumentError("hooks: on token states use one of SVDD, BestOfN or FKSteering at a time.")
    if fk:
        steps = refinement_steps(arguments)
        if not fk[0].resampling_steps(steps):
            raise ArgumentError(
                f"resample_every: with {steps} refinement steps per block, resample_every={fk[0].resample_every} and resample_window={fk[0].resample_window} "
                "leave no resampling step (FK steering would be plain best-of-N); lower resample_every or widen the window."
            )
    eos = arguments.get("eos_token_id") if arguments.get("eos_token_id") is not None else getattr(pipe, "eos_token_id", None)
    if fk and arguments.get("eos_early_stop", True) and eos is not None:
        raise ArgumentError(
            "eos_early_stop: FK steering moves whole sequences between rows, which the stock loop's per-row EOS flags cannot follow; pass eos_early_stop=False."
        )


def check_candidate_memory(hooks, arguments: dict, pipe) -> None:
    """Refuse, before any model call, candidates whose logits alone (M x rows x the longest window x the vocabulary,
    float32, twice: the logits and their softmax) would take more than half the free memory."""
    from gen.core.tiling import free_memory
    from gen.guidance import SVDD

    svdd = next((h for h in hooks if isinstance(h, SVDD)), None)
    if svdd is None:
        return
    model = pipe.model
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or (len(pipe.tokenizer) if pipe.tokenizer is not None else None)
    if not vocab:
        return
    prompt = arguments.get("input_ids")
    rows = 1 if prompt is None or prompt.ndim == 1 else len(prompt)
    if isinstance(arguments.get("prompt"), list):
        rows = len(arguments["prompt"])
    length = (prompt.shape[-1] if prompt is not None else 0) + int(arguments.get("gen_length") or 0) + int(arguments.get("block_length") or 0)
    need = 2 * 4 * svdd.num_candidates * rows * length * vocab
    device = getattr(model, "device", torch.device("cpu"))
    free = free_memory(torch.device(device))
    if need > free // 2:
        fit = max(1, int(svdd.num_candidates * (free // 2) / need))
        raise ArgumentError(
            f"num_candidates: {svdd.num_candidates} candidates of {rows} x {length} tokens over a {vocab}-token vocabulary need about {need / 2**30:.1f} GiB of logits, "
            f"more than half the {free / 2**30:.1f} GiB free; use at most about {fit}."
        )


class TokenSteering:
    """One steered call of a LLaDA2-style pipeline (see the module docstring)."""

    def __init__(self, pipe, stock_call, bound: inspect.BoundArguments, hooks: list, trace: bool):
        from gen.guidance import SVDD, BestOfN, FKSteering

        self.pipe, self.stock_call, self.bound = pipe, stock_call, bound
        self.svdd = next((h for h in hooks if isinstance(h, SVDD)), None)
        self.particles = next((h for h in hooks if isinstance(h, (BestOfN, FKSteering))), None)
        self.fk = self.particles if isinstance(self.particles, FKSteering) else None
        self.trace = trace

    def run(self):
        pipe, arguments = self.pipe, self.bound.arguments
        mask_token_id = arguments.get("mask_token_id") if arguments.get("mask_token_id") is not None else pipe.mask_token_id
        if mask_token_id is None:
            raise ArgumentError("mask_token_id: must be provided (or available on the tokenizer).")
        ids, attention = pipe._prepare_input_ids(  # the pipeline's own tokenization: where the generated positions start
            prompt=arguments.get("prompt"),
            messages=arguments.get("messages"),
            input_ids=arguments.get("input_ids"),
            attention_mask=arguments.get("attention_mask"),
            use_chat_template=arguments.get("use_chat_template", True),
            add_generation_prompt=arguments.get("add_generation_prompt", True),
            chat_template_kwargs=None,
        )
        if ids.ndim == 1:
            ids, attention = ids[None], attention[None]
        if (self.svdd is not None or self.particles is not None) and (ids == mask_token_id).any():
            raise ArgumentError(f"input_ids: the prompt holds the mask token ({mask_token_id}); masked positions are what the model fills, not a prompt.")
        if self.particles is not None:  # particles: the prompts repeated, particle-major
            n = self.particles.num_particles
            for name in ("prompt", "messages"):
                if name in arguments:
                    arguments[name] = None
            arguments["input_ids"], arguments["attention_mask"] = ids.repeat(n, 1), attention.repeat(n, 1)
        rows, prompt_length = ids.shape
        generator = arguments.get("generator")
        self.state = TokenRun(
            rows=rows,
            prompt_length=prompt_length,
            mask_token_id=mask_token_id,
            generator=generator,
            trace=[] if self.trace else None,
            gen_length=int(arguments.get("gen_length", 2048)),
        )
        for hook in (self.svdd, self.particles):
            if hook is not None:
                hook.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=_seed_source(generator))) + hook.seed)
        if self.fk is not None:
            self.fk._at = set(self.fk.resampling_steps(refinement_steps(arguments)))
            self.fk.reset(None)  # the potentials' memory starts empty each call
        self.model = _CountingModel(pipe.model, self.state)
        scheduler = pipe.scheduler
        original_step = scheduler.step
        saved_model = pipe.__dict__["model"]
        pipe.__dict__["model"] = self.model
        scheduler.__dict__["step"] = lambda *args, **kwargs: self.step(original_step, *args, **kwargs)
        try:
            output = self.stock_call(*self.bound.args, **self.bound.kwargs)
        finally:
            scheduler.__dict__.pop("step", None)
            pipe.__dict__["model"] = saved_model
        if self.particles is not None:
            output = self._best_particles(output, rows, self.particles.num_particles)
        run = self.state
        counts = {"nfe": run.model_rows / rows, "reward_calls": run.reward_rows / rows, "decodes": 0.0, "trace": run.trace}
        return output, counts

    # -- one refinement step ------------------------------------------------------------------------------------------
    def step(self, original_step, model_output, timestep, sample, **kwargs):
        run, window = self.state, self.model.window
        step_index = int(timestep.item()) if isinstance(timestep, torch.Tensor) else int(timestep)
        if self._new_block(window):
            run.block += 1
        run.step_in_block = step_index
        if self.svdd is not None and self.svdd.num_candidates > 1:
            out = self._svdd_step(original_step, model_output, timestep, sample, window, kwargs)
        else:
            out = original_step(model_output, timestep, sample, **kwargs)
            if self.fk is not None and step_index in self.fk._at and (out.prev_sample == run.mask_token_id).any():
                out = self._resample(out, window, step_index)
        if run.trace is not None:
            tokens = window.clone()
            tokens[:, -sample.shape[1] :] = out.prev_sample
            run.trace.append({"block": run.block, "step": step_index, "tokens": tokens.cpu()})
        return out

    def _new_block(self, window) -> bool:
        width = window.shape[1]
        new = getattr(self, "_width", None) != width
        self._width = width
        return new

    def _windows(self, window, block_tokens):
        """Each candidate's whole window: the stock window with its block replaced."""
        m = len(block_tokens) // len(window)
        windows = window.repeat(m, 1)
        windows[:, -block_tokens.shape[1] :] = block_tokens
        return windows

    def _extended(self, windows) -> torch.Tensor:
        """Windows of an early block, with the rest of the sequence appended as mask tokens."""
        missing = self.state.full_length - windows.shape[1]
        if missing <= 0:
            return windows
        return torch.cat([windows, windows.new_full((len(windows), missing), self.state.mask_token_id)], dim=1)

    def _estimate(self, windows) -> _Estimate:
        """x0 estimates of the whole sequences: the model on each candidate (its later blocks still masked), every
        masked position filled with its most likely token. Only a window that is the whole sequence (the last block,
        or a single one) keeps its logits for the stock loop's next call: a shorter window's call sees fewer tokens."""
        mask, full = self.state.mask_token_id, self._extended(windows)
        if not (full == mask).any():
            return _Estimate(windows, torch.empty(0), full)
        logits = self.model.evaluate(full).logits
        x0 = torch.where(full == mask, most_likely(logits, mask), full)
        return _Estimate(windows, logits if full.shape == windows.shape else torch.empty(0), x0)

    def _generated(self, x0: torch.Tensor) -> torch.Tensor:
        return x0[:, self.state.prompt_length : self.state.prompt_length + self.state.gen_length]

    def _svdd_step(self, original_step, logits, timestep, sample, window, kwargs):
        from gen.guidance.svdd import select

        hook, run = self.svdd, self.state
        m, rows = hook.num_candidates, len(sample)
        outs = [original_step(logits, timestep, sample, **kwargs) for _ in range(m)]
        stacked = {name: torch.cat([getattr(out, name) for out in outs]) for name in ROW_FIELDS}
        windows = self._windows(window, stacked["prev_sample"])
        ctx = _TokenContext(run, rows)
        if getattr(hook.value, "needs_prediction", False):
            estimate = self._estimate(windows)
            values = hook.value.score(windows, self._generated(estimate.x0), None, ctx, run.step_in_block)
        else:
            estimate = None
            values = hook.value.score(self._generated(self._extended(windows)), None, None, ctx, run.step_in_block)  # a token value reads the masks itself
        chosen = select(values, m, rows, hook.alpha, hook.generator)
        if estimate is not None and estimate.logits.numel():
            self.model.cached = estimate.select(chosen)
        fields = {name: value[chosen] for name, value in stacked.items()}
        return type(outs[0])(**fields, pred_logits=outs[0].pred_logits)

    def _resample(self, out, window, step_index):
        """FK: score the particles' x0 estimates and resample them (whole sequences move together)."""
        hook, run = self.fk, self.state
        windows = self._windows(window, out.prev_sample)
        estimate = self._estimate(windows)
        ctx = _TokenContext(run, run.rows, next_timestep=step_index)
        prediction = _Prediction(estimate, self._generated(estimate.x0))
        _, chosen = hook.reweight(windows, prediction, ctx, step_index)
        rows = chosen.rows
        window.copy_(window[rows])  # the stock loop's window is a view of its sequence: particles move in place
        if estimate.logits.numel():
            self.model.cached = estimate.select(rows)
        fields = {name: getattr(out, name)[rows] for name in ROW_FIELDS}
        return type(out)(**fields, pred_logits=out.pred_logits)

    def _best_particles(self, output, rows: int, n: int):
        """Best-of-N and FK: each prompt's particle with the highest final reward."""
        from gen.guidance.values import score_rewards

        sequences = output.sequences if hasattr(output, "sequences") else output[0]
        values = score_rewards(self.particles.value.reward, sequences, rows, None)
        self.state.reward_rows += len(sequences)
        best = values.reshape(n, rows).argmax(0) * rows + torch.arange(rows)
        kept = sequences[best.to(sequences.device)]
        texts = output.texts if hasattr(output, "texts") else output[1]
        texts = [texts[int(i)] for i in best] if texts is not None else None
        if isinstance(output, tuple):
            return kept, texts
        return type(output)(sequences=kept, texts=texts)


@dataclass
class _Prediction:
    """FK's view of an estimate: x0 (the generated positions) and row selection."""

    estimate: _Estimate
    x0: torch.Tensor
    rows: torch.Tensor | None = field(default=None)

    def select(self, rows):
        return _Prediction(self.estimate, self.x0[rows], rows)


def _seed_source(generator) -> torch.Generator:
    """A generator to seed the hooks' own from: a copy of the run's (its state untouched), or a fixed one."""
    source = torch.Generator()
    if isinstance(generator, torch.Generator):
        source.set_state(generator.get_state())
    else:
        source.manual_seed(0)
    return source
