"""Gradient guidance: steering by the gradient of a classifier or of a differentiable reward.

- `ClassifierGuidance(classifier, target, scale)`: classifier guidance (Dhariwal & Nichol 2021) with a
  noise-aware classifier ``classifier(x_t, t) -> logits``, or a set of experts, each responsible for one range of
  noise levels (PPAP, Go et al. 2023): the score moves by scale * grad log p(target | x_t), whatever the model
  predicts (epsilon, v, x0 or flow: the output is converted to epsilon, shifted by -sigma * scale * grad, and
  converted back; at pure noise, where no prediction type but epsilon is defined, the step is left unguided).
- `RewardGradientGuidance(reward, scale)`: DPS-style guidance through the x0 estimate: after each step,
  x_{t-1} += scale * grad_{x_t} reward(decode(x0(x_t))), the gradient taken through the backbone and the decoder.

Both are counted: backbone rows (the gradient pass is its own evaluation), reward or classifier gradients per
sample. No graph outlives its step; `checkpoint=True` recomputes the backbone's activations in the backward
pass instead of keeping them (memory for time).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint as checkpointed

from gen.core import prediction
from gen.core.denoiser import Denoiser, DenoiserOutput
from gen.core.hooks import SamplingHook
from gen.errors import ArgumentError, ArgumentTypeError, require_number


class ClassifierGuidance(SamplingHook):
    """Classifier guidance with a noise-aware classifier ``(x_t, t) -> logits`` or PPAP experts.

    Args:
        classifier: a callable ``(x_t, t) -> logits``, or a list of ``(low, high, classifier)`` experts covering
            the timesteps: the expert whose [low, high) holds t guides at t.
        target: the class to steer toward (one for all samples, or one per sample).
        scale: the guidance strength (0 is plain sampling).
    """

    def __init__(self, classifier, target, scale: float = 1.0):
        self.experts = list(classifier) if isinstance(classifier, (list, tuple)) else [(float("-inf"), float("inf"), classifier)]
        for expert in self.experts:
            if not (isinstance(expert, tuple) and len(expert) == 3 and callable(expert[2])):
                raise ArgumentTypeError("classifier: expected a callable (x_t, t) -> logits, or a list of (low, high, classifier) experts.")
        self.target, self.scale = torch.as_tensor(target).long(), require_number(scale, "scale")
        self.rows = 0  # classifier gradients taken since the loop last counted them

    @classmethod
    def from_pretrained(cls, folder, target, scale: float = 1.0, classifier=None) -> "ClassifierGuidance":
        """Guidance by the PPAP experts `python -m gen.training.ppap` saved in folder (`gen.guidance.experts`);
        `classifier`: their teacher, where the folder does not name one gen loads by name."""
        from gen.guidance.experts import NoiseExperts

        return cls(NoiseExperts.from_pretrained(folder, classifier=classifier), target, scale)

    def transition(self, state, ctx):
        """Count the classifier's gradients (as reward calls) where the loop's counts are reachable."""
        ctx.count_rewards(self.rows)
        self.rows = 0
        new = ctx.proceed(state)
        ctx.count_rewards(self.rows)
        self.rows = 0
        return new

    def expert(self, t) -> Callable:
        value = float(t)
        for low, high, classifier in self.experts:
            if low <= value < high:
                return classifier
        raise ArgumentError(f"classifier: no expert covers timestep {value}; the experts' ranges are {[(low, high) for low, high, _ in self.experts]}.")

    def denoiser(self, step, current: Denoiser) -> Denoiser:
        return current if self.scale == 0 else _ClassifierGuided(current, self)


class _ClassifierGuided(Denoiser):
    def __init__(self, inner: Denoiser, guidance: ClassifierGuidance):
        self.__dict__.update(inner.__dict__)
        self._inner, self._guidance = inner, guidance

    def __call__(self, x, t, cond=None, uncond=None, guidance_scale=1.0, guidance_rescale=0.0) -> DenoiserOutput:
        out = self._inner(x, t, cond=cond, uncond=uncond, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale)
        guidance, level = self._guidance, self.noise_level(t)
        if float(level.alpha) <= 0:  # pure noise (a flow schedule's first step): no signal for a classifier to read
            return out
        with torch.enable_grad():
            x_grad = x.detach().float().requires_grad_(True)
            logits = guidance.expert(t)(x_grad, t)
            target = (
                guidance.target.to(logits.device).expand(len(logits))
                if guidance.target.ndim == 0
                else guidance.target.to(logits.device).repeat(len(logits) // len(guidance.target))
            )
            log_p = logits.log_softmax(-1).gather(1, target[:, None]).sum()
            grad = torch.autograd.grad(log_p, x_grad)[0].to(x.dtype)
        guidance.rows += x.shape[0]
        eps = prediction.convert(self.prediction_of(out.output), x, level, self.prediction_type, "epsilon")
        eps = eps - level.sigma.to(x.dtype) * guidance.scale * grad
        guided = prediction.convert(eps, x, level, "epsilon", self.prediction_type)
        return DenoiserOutput(output=guided, evaluations=out.evaluations, x0_fn=lambda: self.x0(x, guided, t))


class RewardGradientGuidance(SamplingHook):
    """DPS-style guidance: after each step, x_{t-1} += scale * grad_{x_t} reward(decode(x0(x_t))).

    Args:
        reward: a differentiable callable on images in [0, 1], (B, C, H, W) -> (B,).
        scale: the step size on the reward's gradient (0 is plain sampling).
        checkpoint: recompute the backbone's activations in the backward pass (less memory, one more forward).
    """

    def __init__(self, reward: Callable[[torch.Tensor], torch.Tensor], scale: float = 1.0, checkpoint: bool = False):
        if not callable(reward):
            raise ArgumentTypeError(f"reward: expected a differentiable callable on images, got {type(reward).__name__}.")
        self.reward, self.scale, self.checkpoint = reward, require_number(scale, "scale"), bool(checkpoint)

    def validate(self, run) -> None:
        if not run.has_decoder:
            raise ArgumentError(
                "reward: RewardGradientGuidance scores decoded x0 estimates but the run has no decoder; sample through a gen pipeline or steer(), or pass decode= to sample()."
            )

    def transition(self, state, ctx):
        new = ctx.proceed(state)
        if self.scale == 0 or ctx.is_last:
            return new
        with torch.enable_grad():
            x = state.x.detach().requires_grad_(True)
            if self.checkpoint:
                output = checkpointed(lambda v: ctx.predict(v).output, x, use_reentrant=False)
                x0 = ctx.denoiser.x0(x, output, state.step.timestep)
            else:
                x0 = ctx.predict(x).x0
            rewards = self.reward(ctx.decode(x0))
            if not isinstance(rewards, torch.Tensor) or not rewards.requires_grad:
                raise ArgumentError(
                    "reward: RewardGradientGuidance needs a differentiable reward (a tensor with a gradient); wrap models without torch.no_grad."
                )
            grad = torch.autograd.grad(rewards.sum(), x)[0]
        ctx.count_rewards(x.shape[0])
        return ctx.next_state(new.x + self.scale * grad.to(new.x.dtype))
