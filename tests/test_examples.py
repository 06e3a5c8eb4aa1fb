"""The scripts in examples/ run on the zoo and do what their docstrings say, at small sizes."""

import importlib.util
from pathlib import Path

import pytest

from gen.core.tiling import tile_starts

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parent.parent / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_value_guidance_example_raises_the_reward_at_m_evaluations_per_step(tmp_path):
    summary = example("value_guidance")(["--samples", "8", "--steps", "10", "--candidates", "4", "--seeds", "0", "1", "2", "--out", str(tmp_path)])
    plain, guided = summary["plain"], summary["SVDD-PM M=4"]
    assert all(g > p + 1.0 for g, p in zip(guided["per_seed"], plain["per_seed"]))
    assert "**holds here**" in summary["claim"]  # the sentence the demo prints, from the same seeds
    assert (plain["nfe"], guided["nfe"], guided["reward_calls"]) == (10, 1 + 4 * 9, 4 * 9)
    assert (tmp_path / "value_guidance.png").stat().st_size > 0


def test_large_image_example_makes_the_requested_size_from_its_grid(tmp_path):
    summary = example("large_image")(["--size", "96", "--overlap", "8", "--steps", "3", "--guidance", "2", "--out", str(tmp_path)])
    tiles = len(tile_starts(96, 32, 24)) ** 2
    assert summary["size"] == [96, 96] and summary["grid"] == [4, 4, 64]  # one embedding per tile
    assert summary["tiles"] == tiles and summary["nfe"] == tiles * 3 * 2
    coarse = example("large_image")(["--size", "96", "--overlap", "8", "--grid-stride", "32", "--steps", "1", "--out", str(tmp_path)])
    assert coarse["grid"] == [3, 3, 64] and coarse["tiles"] == tiles


def test_hybrid_example_costs_the_distilled_budget_not_the_base(tmp_path):
    summary = example("hybrid_distillation")(["--per-class", "2", "--base-schedule", "20", "--seeds", "0", "1", "--out", str(tmp_path)])
    k, steps = 2, 4  # gen.demo.HYBRID: two guided base steps (2 rows each), then the distilled model's two
    assert summary["base"]["nfe"] == 40 and summary["hybrid"]["nfe"] <= 2 * k + (steps - k) < summary["base"]["nfe"]
    assert len(summary["claims"]) == 2 and all(claim.startswith("Claim: ") for claim in summary["claims"])
    assert all((tmp_path / f"dt_{name}.png").exists() for name in ("base", "distilled", "hybrid"))


@pytest.mark.parametrize("argv", [["--candidates", "0"], ["--eta", "0"]])
def test_value_guidance_example_refuses_bad_settings_before_writing(tmp_path, argv):
    with pytest.raises(ValueError):
        example("value_guidance")([*argv, "--samples", "2", "--steps", "2", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())
