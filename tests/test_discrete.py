"""Masked diffusion on tokens: the MDLM trainer writes a stock LLaDA2Pipeline folder that loads, samples and serves
`gen sample` / `gen generate` (its exact resume is tested with the other trainers in test_training_loop); the token value trainer feeds SVDD-MC; token rewards check their
output; and (slow) on the zoo's `digits-mdlm`, SVDD-PM, SVDD-MC, best-of-N and FK raise log p(3) over plain
sampling on 3 seeds, while SVDD keeping the worst candidate lowers it."""

import json

import pytest
import torch
from diffusers import LLaDA2Pipeline

from gen import cli
from gen.discrete import TokenValueNetwork, digits_tokenizer, render_digits, token_callable, token_count, token_regex
from gen.guidance import SVDD, BestOfN, FKSteering, LearnedValue, PosteriorMeanValue
from gen.pipelines import steer
from gen.pipelines.loading import load_pipeline
from gen.training.discrete import DiscreteConfig, main, train_discrete

TINY = dict(width=16, layers=1, heads=2, train_batch_size=16, sample_steps=4, max_train_steps=4, progress=False)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return train_discrete(DiscreteConfig(output_dir=str(tmp_path_factory.mktemp("mdlm") / "run"), **TINY))


def test_the_folder_is_a_stock_llada2_pipeline_with_its_sampling_call(tiny_folder):
    from transformers import AutoTokenizer

    stock = LLaDA2Pipeline.from_pretrained(tiny_folder, tokenizer=AutoTokenizer.from_pretrained(tiny_folder / "tokenizer"))
    recorded = json.loads((tiny_folder / "sampling.json").read_text())
    assert recorded["render"] == "digits-8x8" and recorded["call"]["block_length"] == 5 and recorded["call"]["num_inference_steps"] == 4
    out = stock(prompt=["", ""], **recorded["call"], generator=torch.Generator().manual_seed(0), output_type="seq")
    assert out.sequences.shape == (2, 64)
    pipe = steer(load_pipeline(tiny_folder))
    again = pipe(prompt=["", ""], **pipe.gen_sampling["call"], generator=torch.Generator().manual_seed(0), output_type="seq")
    assert torch.equal(out.sequences, again.sequences) and again.nfe == 13 * 4  # 65 tokens in 5-token blocks, 4 steps each


def test_gen_sample_and_gen_generate_render_the_digits(tiny_folder, tmp_path, capsys):
    assert cli.main(["sample", str(tiny_folder), "--num", "3", "--out", str(tmp_path / "s")]) == 0
    side = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert (tmp_path / "s" / "samples.png").is_file() and side["nfe"] == 52 and len(side["sequences"]) == 3
    assert cli.main(["sample", str(tiny_folder), "--class-labels", "3", "--out", str(tmp_path / "s2")]) == 2
    assert "masked-diffusion model of token sequences; drop --class-labels" in capsys.readouterr().err
    for batch in ("1", "3"):
        assert cli.main(["generate", str(tiny_folder), "--count", "3", "--batch-size", batch, "--out", str(tmp_path / f"g{batch}")]) == 0
    for name in sorted(p.name for p in (tmp_path / "g1").glob("*.png")):
        assert (tmp_path / "g1" / name).read_bytes() == (tmp_path / "g3" / name).read_bytes(), "a sample depends on its seed, not its batch"


def test_the_token_value_trainer_feeds_svdd_mc(tiny_folder, tmp_path):
    from gen.training.token_value import TokenValueConfig, train_token_value

    out = train_token_value(
        TokenValueConfig(
            pipeline=str(tiny_folder),
            output_dir=str(tmp_path / "value"),
            num_samples=8,
            sample_batch_size=8,
            train_batch_size=8,
            max_train_steps=3,
            progress=False,
        )
    )
    net = TokenValueNetwork.from_pretrained(out)
    pipe = steer(load_pipeline(tiny_folder))
    guided = pipe(
        prompt=["", ""],
        **pipe.gen_sampling["call"],
        generator=torch.Generator().manual_seed(0),
        output_type="seq",
        hooks=[SVDD(LearnedValue(net), num_candidates=3)],
    )
    assert guided.nfe == 52 and guided.reward_calls == 0, "SVDD-MC: one model row per step, no reward calls"


def test_token_rewards_and_rendering():
    ids = torch.tensor([[16] * 64, [0] * 63 + [17]])
    assert token_count(16)(ids).tolist() == [64.0, 0.0]
    assert render_digits(ids).shape == (2, 1, 8, 8) and render_digits(ids)[1].max() == 0  # a leftover mask renders blank
    assert token_regex(r"16 16 16", digits_tokenizer())(ids).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"reward: expected one value per sequence, shape \(2,\), got shape \(2, 64\)"):
        token_callable(lambda x: x.float())(ids)
    with pytest.raises(ValueError, match="tokens: expected \\(batch, 64\\)"):
        render_digits(torch.zeros(2, 10, dtype=torch.long))


def test_bad_trainer_input_is_one_line(tmp_path, capsys):
    assert main(["--data", "text", "--output-dir", str(tmp_path / "a")]) == 2
    assert "data: one of ('digits',)" in capsys.readouterr().err
    assert main(["--width", "30", "--heads", "4", "--output-dir", str(tmp_path / "b")]) == 2
    assert "width: must be >= 8 and a multiple of heads (4)" in capsys.readouterr().err


def _log_p3(reward, pipe, hooks, seed):
    out = pipe(prompt=[""] * 16, **pipe.gen_sampling["call"], generator=torch.Generator().manual_seed(seed), output_type="seq", hooks=hooks)
    return reward(out.sequences).mean().item()


@pytest.mark.slow
def test_value_guidance_on_digits_mdlm_raises_log_p3_and_the_mutation_loses_it(monkeypatch):
    import gen.guidance.svdd as svdd
    import gen.zoo as zoo
    from gen.discrete import digit_log_prob

    pipe = zoo.load("digits-mdlm")
    pipe.set_progress_bar_config(disable=True)
    reward = digit_log_prob(zoo.load("digits-classifier"), 3)
    value = zoo.load("digits-mdlm-value")
    for seed in (0, 1, 2):
        plain = _log_p3(reward, pipe, [], seed)
        assert _log_p3(reward, pipe, [SVDD(PosteriorMeanValue(reward), num_candidates=4)], seed) > plain + 2.0, seed
        assert _log_p3(reward, pipe, [SVDD(LearnedValue(value), num_candidates=8)], seed) > plain + 1.0, seed
        assert _log_p3(reward, pipe, [BestOfN(reward, n=4)], seed) > plain + 1.0, seed
        assert _log_p3(reward, pipe, [FKSteering(reward, num_particles=8)], seed) > plain + 1.0, seed
        with monkeypatch.context() as broken:
            select = svdd.select
            broken.setattr(svdd, "select", lambda values, *a: select(-values, *a))
            assert _log_p3(reward, pipe, [SVDD(PosteriorMeanValue(reward), num_candidates=4)], seed) < plain, seed
