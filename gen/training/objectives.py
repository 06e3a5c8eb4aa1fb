"""The training objectives of gen's diffusion trainer: noise prediction (epsilon, v or x0 targets on a DDPM
schedule, with Min-SNR weighting and offset noise, as diffusers' text-to-image scripts) and rectified flow (the
timestep densities and loss weightings of diffusers' `train_dreambooth_lora_sd3.py` / `_flux.py`, from
`diffusers.training_utils`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_loss(model, scheduler, x0, cond, generator, prediction_type: str, snr_gamma: float, channels: int, noise_offset: float = 0.0):
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    if noise_offset:  # https://www.crosslabs.org//blog/diffusion-with-offset-noise, as diffusers' --noise_offset
        noise = noise + noise_offset * torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=generator).to(x0.device, x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    target = {"epsilon": noise, "v_prediction": scheduler.get_velocity(x0, noise, t), "sample": x0}[prediction_type]
    pred = model(noisy, timestep=t, **cond, return_dict=False)[0][:, :channels]
    if not snr_gamma:
        return F.mse_loss(pred.float(), target.float())
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t)
    weight = torch.stack([snr, snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    weight = weight / snr if prediction_type == "epsilon" else weight / (snr + 1)
    per_example = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
    return (per_example * weight).mean()


def flow_matching_loss(predict, latents: torch.Tensor, scheduler, generator, config, default_weighting: str) -> torch.Tensor:
    """Rectified-flow loss as diffusers' SD3/Flux scripts compute it: u from the weighting scheme's density
    (`compute_density_for_timestep_sampling`), the scheduler's own (shifted) timestep and sigma at u, x_t =
    (1 - sigma) x0 + sigma noise, target noise - x0, weighted by `compute_loss_weighting_for_sd3`.
    `predict(noisy, timesteps)` runs the backbone and returns its output in the latents' layout."""
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

    scheme = config.weighting_scheme or default_weighting
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    u = compute_density_for_timestep_sampling(scheme, batch, config.logit_mean, config.logit_std, config.mode_scale, generator=generator)
    indices = (u * scheduler.config.num_train_timesteps).long().clamp(max=scheduler.config.num_train_timesteps - 1)
    timesteps = scheduler.timesteps[indices].to(latents.device)
    sigmas = scheduler.sigmas[indices].to(latents.device, latents.dtype).reshape(-1, *[1] * (latents.ndim - 1))
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    prediction = predict(noisy, timesteps)
    weighting = compute_loss_weighting_for_sd3(scheme, sigmas)
    target = noise - latents
    return (weighting.float() * (prediction.float() - target.float()) ** 2).reshape(batch, -1).mean(dim=1).mean()
