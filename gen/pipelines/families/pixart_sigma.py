"""PixArt-Σ: PixArt-α's transformer (learned sigma, split off before the step) with T5 prompts up to 300 tokens;
its loop has the deprecated `callback`/`callback_steps` as parameters and no `callback_on_step_end`."""

from gen.pipelines.stock_loop import Family

FAMILY = Family(callback_tensors={}, legacy_callback="arguments")
