"""AuraFlow: an MMDiT over [uncond; cond] in one call, flow matching; the timestep is t / 1000 (backbone spec)."""

from gen.pipelines.stock_loop import Family

FAMILY = Family()
