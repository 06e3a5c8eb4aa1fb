"""`steer(LLaDA2Pipeline)`: with no hooks the stock call's output, case by case for every parameter of its
`__call__` (a parameter stock gains without a case fails); hooks on token states (SVDD-PM, best-of-N, FK, trace)
steer a reward and are counted; bad input is named before any model call."""

import pytest
import torch
from diffusers import LLaDA2Pipeline
from diffusers.callbacks import PipelineCallback
from test_steer_conformance import assert_every_parameter_has_a_case, assert_stock_and_steered_agree, parametrized

from gen import testing as tiny
from gen.discrete import token_callable, token_count
from gen.guidance import SVDD, BestOfN, FKSteering, PosteriorMeanValue
from gen.pipelines import steer

CHAT = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def chat_pipeline():
    pipe = tiny.llada2_pipeline()
    pipe.tokenizer.chat_template = CHAT
    return pipe


def eos_pipeline():
    pipe = tiny.llada2_pipeline()
    pipe.eos_token_id = 16  # full ink ends a row: the stock EOS path
    return pipe


class PositionLogits(torch.nn.Module):
    """A model with no tokenizer and no weights: each position votes for a token by its index, more surely further
    right (the kind of stand-in diffusers' own LLaDA2 tests use), so greedy commits are deterministic."""

    def __init__(self, vocab_size: int = 32):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("anchor", torch.empty(0))

    @property
    def dtype(self):
        return torch.float32

    @property
    def device(self):
        return self.anchor.device

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        batch, length = input_ids.shape
        positions = torch.arange(length, dtype=torch.float32)
        logits = torch.zeros(batch, length, self.vocab_size)
        logits[:, torch.arange(length), torch.arange(length) % (self.vocab_size - 2)] = 1.0 + 0.1 * positions
        return type("Output", (), {"logits": logits})()


def untokenized_pipeline():
    from diffusers import BlockRefinementScheduler

    return LLaDA2Pipeline(model=PositionLogits(), scheduler=BlockRefinementScheduler())


UNTOKENIZED = dict(prompt=None, input_ids=torch.tensor([[5, 6, 7, 8], [1, 2, 3, 4]]), use_chat_template=False, mask_token_id=31, threshold=2.0, temperature=0.0)


class Stamp(PipelineCallback):
    tensor_inputs = ["block_x"]

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        block_x = callback_kwargs["block_x"].clone()
        block_x[:, -1] = 5
        return {"block_x": block_x}


def stamp_last(pipe, step, timestep, kwargs):
    if step == 2:
        kwargs["block_x"][:, -2] = 7
    return kwargs


IDS = torch.tensor([[18, 3, 4], [18, 5, 6]])
BASE = dict(prompt=["3 4", "5 6"], gen_length=12, block_length=8, num_inference_steps=4, temperature=1.0, output_type="seq")
TOKENS = {
    LLaDA2Pipeline: (
        tiny.llada2_pipeline,
        BASE,
        {
            "prompt": [("one", {"prompt": "3 4 5"}, None), ("batch of 3", {"prompt": ["1", "2 2", "3 3 3"]}, None)],
            "messages": [
                ("chat", {"prompt": None, "messages": [{"role": "user", "content": "1 2"}]}, chat_pipeline),
                ("with prompt", {"messages": [{"role": "user", "content": "1"}]}, None),
            ],
            "input_ids": [
                ("2d", {"prompt": None, "input_ids": IDS}, None),
                ("1d", {"prompt": None, "input_ids": IDS[0]}, None),
                ("float", {"prompt": None, "input_ids": IDS.float()}, None),
            ],
            "attention_mask": [("padding", {"prompt": None, "input_ids": IDS, "attention_mask": torch.tensor([[1, 1, 1], [0, 1, 1]])}, None)],
            "use_chat_template": [("off", {"use_chat_template": False}, chat_pipeline), ("on", {"prompt": "1 2", "use_chat_template": True}, chat_pipeline)],
            "add_generation_prompt": [("off", {"prompt": "1 2", "add_generation_prompt": False}, chat_pipeline)],
            "gen_length": [("one block", {"gen_length": 5}, None), ("zero", {"gen_length": 0}, None)],
            "block_length": [("4", {"block_length": 4}, None), ("default", {"block_length": None}, None), ("zero", {"block_length": 0}, None)],
            "num_inference_steps": [
                ("2", {"num_inference_steps": 2}, None),
                ("clamped", {"num_inference_steps": 40}, None),
                ("zero", {"num_inference_steps": 0}, None),
            ],
            "temperature": [("greedy", {"temperature": 0.0}, None), ("hot", {"temperature": 2.0}, None), ("negative", {"temperature": -1.0}, None)],
            "top_p": [("0.5", {"top_p": 0.5}, None)],
            "top_k": [("3", {"top_k": 3}, None)],
            "sampling_method": [
                ("greedy", {"sampling_method": "greedy"}, None),
                ("auto", {"sampling_method": "auto"}, None),
                ("bad", {"sampling_method": "beam"}, None),
            ],
            "threshold": [("0.1", {"threshold": 0.1}, None), ("top-k only", {"threshold": 1.5}, None)],
            "editing_threshold": [("off", {"editing_threshold": None}, None), ("0.05", {"editing_threshold": 0.05}, None)],
            "max_post_steps": [("2", {"editing_threshold": 0.05, "max_post_steps": 2}, None)],
            "minimal_topk": [("3", {"minimal_topk": 3}, None), ("zero", {"minimal_topk": 0}, None)],
            "eos_early_stop": [("on", {"eos_early_stop": True}, eos_pipeline), ("off", {"eos_early_stop": False}, eos_pipeline)],
            "eos_token_id": [("given", {"eos_token_id": 2}, None)],
            "mask_token_id": [
                ("given", {"mask_token_id": 17}, None),
                ("another", {"mask_token_id": 0}, None),
                ("no tokenizer", UNTOKENIZED, untokenized_pipeline),
                ("missing", {**UNTOKENIZED, "mask_token_id": None}, untokenized_pipeline),
            ],
            "generator": [("none, greedy", {"generator": None, "temperature": 0.0}, None)],
            "output_type": [
                ("text", {"output_type": "text"}, None),
                ("bad", {"output_type": "pil"}, None),
                ("text without a tokenizer", {**UNTOKENIZED, "output_type": "text"}, untokenized_pipeline),
            ],
            "return_dict": [("tuple", {"return_dict": False}, None), ("tuple, no tokenizer", {**UNTOKENIZED, "return_dict": False}, untokenized_pipeline)],
            "callback_on_step_end": [
                ("edits block", {"callback_on_step_end": stamp_last, "callback_on_step_end_tensor_inputs": ["block_x"]}, None),
                ("object", {"callback_on_step_end": Stamp()}, None),
            ],
            "callback_on_step_end_tensor_inputs": [("bad", {"callback_on_step_end": stamp_last, "callback_on_step_end_tensor_inputs": ["latents"]}, None)],
        },
    )
}


@pytest.mark.parametrize("cls, parameter, case", parametrized(TOKENS))
def test_steer_is_stock_for_every_parameter(cls, parameter, case):
    assert_stock_and_steered_agree(TOKENS, cls, case)


def test_every_stock_parameter_has_a_case():
    assert_every_parameter_has_a_case(TOKENS, LLaDA2Pipeline)


def _mean(reward, out):
    return reward(out.sequences).mean().item()


def test_hooks_raise_a_token_reward_and_a_mutation_loses_the_gain(monkeypatch):
    """SVDD-PM, best-of-N and FK raise the count of full-ink tokens over plain sampling on 3 seeds; SVDD keeping
    the worst candidate (the reward negated inside selection) drops below plain."""
    import gen.guidance.svdd as svdd

    pipe = steer(tiny.llada2_pipeline())
    reward = token_count(16)
    args = {**BASE, "prompt": ["1", "2", "3", "4", "5", "6", "7", "8"], "gen_length": 16}
    runs = lambda hooks, seed: pipe(**args, generator=torch.Generator().manual_seed(seed), hooks=hooks)  # noqa: E731
    for seed in (0, 1, 2):
        plain = _mean(reward, runs([], seed))
        for hook in (
            SVDD(PosteriorMeanValue(reward), num_candidates=6),
            BestOfN(reward, n=6),
            FKSteering(reward, num_particles=6, resample_every=1, resample_window=(0.0, 1.0), ess_threshold=None),
        ):
            assert _mean(reward, runs([hook], seed)) > plain + 0.5, (seed, hook)
        with monkeypatch.context() as broken:
            select = svdd.select
            broken.setattr(svdd, "select", lambda values, *a: select(-values, *a))
            assert _mean(reward, runs([SVDD(PosteriorMeanValue(reward), num_candidates=6)], seed)) < plain, seed


def test_counts_and_trace():
    pipe = steer(tiny.llada2_pipeline())
    plain = pipe(**BASE, generator=torch.Generator().manual_seed(0), trace=True)
    assert plain.nfe == 8 and plain.reward_calls == 0  # 2 blocks (3 prompt + 12 tokens over 8-token blocks) x 4 steps
    assert len(plain.trace) == 8 and plain.trace[-1]["block"] == 1 and plain.trace[-1]["tokens"].shape == (2, 16)
    assert torch.equal(plain.trace[-1]["tokens"][:, 3:15], plain.sequences)
    best = pipe(**BASE, generator=torch.Generator().manual_seed(0), hooks=[BestOfN(token_count(16), n=3)])
    assert best.nfe == 24 and best.reward_calls == 3 and best.sequences.shape == (2, 12)
    guided = pipe(**BASE, generator=torch.Generator().manual_seed(0), hooks=[SVDD(PosteriorMeanValue(token_count(16)), num_candidates=3)])
    assert 8 < guided.nfe <= 8 + 3 * 8 and guided.reward_calls == 3 * 8
    again = pipe(**BASE, generator=torch.Generator().manual_seed(0), hooks=[SVDD(PosteriorMeanValue(token_count(16)), num_candidates=3)])
    assert torch.equal(guided.sequences, again.sequences), "same seed, same output"


def test_bad_input_is_named_before_any_model_call():
    pipe = steer(tiny.llada2_pipeline())
    svdd = SVDD(PosteriorMeanValue(token_count(16)), num_candidates=2)
    with pytest.raises(ValueError, match="temperature: SVDD draws several candidates .* pass temperature=1.0"):
        pipe(**{**BASE, "temperature": 0.0}, hooks=[svdd])
    with pytest.raises(ValueError, match="temperature: FKSteering"):
        pipe(**{**BASE, "sampling_method": "greedy"}, hooks=[FKSteering(token_count(16), num_particles=2)])
    with pytest.raises(ValueError, match="resample_every: with 4 refinement steps per block"):
        pipe(**BASE, hooks=[FKSteering(token_count(16), num_particles=2, resample_every=9, resample_window=(0.9, 1.0))])
    with pytest.raises(ValueError, match="input_ids: the prompt holds the mask token"):
        pipe(**{**BASE, "prompt": None, "input_ids": torch.tensor([[18, 17, 3]])}, hooks=[svdd])
    with pytest.raises(ValueError, match="gen_length"):
        pipe(**{**BASE, "gen_length": 0}, hooks=[svdd])
    with pytest.raises(ValueError, match=r"reward"):
        pipe(**BASE, hooks=[SVDD(PosteriorMeanValue(lambda ids: ids.float()), num_candidates=2)])
    with pytest.raises(RuntimeError, match=r"reward raised at step 0.*expected one value per sequence, shape \(4,\), got shape \(4, 12\)"):
        pipe(**BASE, hooks=[SVDD(PosteriorMeanValue(token_callable(lambda ids: ids.float())), num_candidates=2)])
    with pytest.raises(ValueError, match="num_candidates: 100000000 candidates .* use at most about"):
        pipe(**BASE, hooks=[SVDD(PosteriorMeanValue(token_count(16)), num_candidates=100_000_000)])
    with pytest.raises(TypeError, match="hooks: CADS works on images"):
        from gen.conditioning import CADS

        pipe(**BASE, hooks=[CADS()])
    with pytest.raises(ValueError, match="guider: diffusers' guiders combine image predictions"):
        from diffusers.guiders import ClassifierFreeGuidance

        pipe(**BASE, guider=ClassifierFreeGuidance())
