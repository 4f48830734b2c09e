"""Golden trajectories of the sampler: the exact ids of every step, for every strategy and option, on tiny seeded
models, replayed against tests/fixtures/golden/sampler.json (recorded from the loop this test guards).

Record again (only after a change meant to alter trajectories, naming the cases in the commit):
    HF_HUB_OFFLINE=1 .venv/bin/python tests/test_sampler_golden.py [CASE ...]
"""

import copy
import hashlib
import json
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

from textdiffusion import blocks, models, sampling
from textdiffusion.data import corpus, tokenization

FIXTURE = Path(__file__).parent / "fixtures" / "golden" / "sampler.json"
LENGTH = 20
BLOCK = 8

# name -> (model, prompt, SamplerConfig options, seed). Models: mlm (a tiny RoBERTa whose large initial weights make
# its certainties differ from position to position), mlm-end (the same, leaning to the end token), block / block-nocache
# (a tiny block-diffusion model with / without the key-value cache), block-end (the same, ending early). Prompts:
# "" (all masked), a prefix, or an infill template; "end:" before one means the end token may be sampled (a model of
# line-by-line documents), "guide:" that the tiny GPT-2 guides.
STRATEGY_CASES = {
    "random": ("mlm", "", {"strategy": "random", "steps": 5}, 0),
    "confidence-prob": ("mlm", "", {"strategy": "confidence", "steps": 5}, 1),
    "confidence-margin": ("mlm", "", {"strategy": "confidence", "confidence": "margin", "steps": 5}, 2),
    "confidence-entropy": ("mlm", "", {"strategy": "confidence", "confidence": "entropy", "steps": 5}, 3),
    "threshold-prob": ("mlm", "", {"strategy": "threshold", "threshold": 0.5, "steps": LENGTH}, 4),
    "threshold-margin": ("mlm", "", {"strategy": "threshold", "confidence": "margin", "threshold": 0.55, "steps": LENGTH}, 5),
    "threshold-entropy": ("mlm", "", {"strategy": "threshold", "confidence": "entropy", "threshold": 0.8, "steps": LENGTH}, 6),
    "threshold-capped": ("mlm", "", {"strategy": "threshold", "threshold": 0.9, "steps": 4}, 7),
    "entropy-bounded": ("mlm", "", {"strategy": "entropy-bounded", "entropy_budget": 3.0, "steps": LENGTH}, 8),
    "entropy-bounded-margin": ("mlm", "", {"strategy": "entropy-bounded", "confidence": "margin", "entropy_budget": 2.0, "steps": LENGTH}, 9),
    "entropy-bounded-capped": ("mlm", "", {"strategy": "entropy-bounded", "entropy_budget": 1.0, "steps": 4}, 10),
    "adaptive": ("mlm", "", {"strategy": "adaptive", "threshold": 0.5, "steps": 5}, 11),
    "adaptive-margin": ("mlm", "", {"strategy": "adaptive", "confidence": "margin", "threshold": 0.55, "steps": 5}, 12),
    "remask": ("mlm", "", {"strategy": "remask", "schedule": "linear", "steps": 6}, 13),
    "remdm-cap": ("mlm", "", {"strategy": "remdm", "schedule": "linear", "remask_eta": 0.3, "steps": 8}, 14),
    "remdm-rescale": ("mlm", "", {"strategy": "remdm", "remask_schedule": "rescale", "remask_eta": 0.8, "steps": 8}, 15),
    "remdm-conf": ("mlm", "", {"strategy": "remdm", "remask_schedule": "conf", "remask_eta": 0.8, "steps": 8}, 16),
    "remdm-loop": ("mlm", "", {"strategy": "remdm", "remask_schedule": "loop", "remask_eta": 0.4, "schedule": "linear", "steps": 10}, 17),
}

OPTION_CASES = {
    "schedule-linear": ("mlm", "", {"strategy": "confidence", "schedule": "linear", "steps": 6}, 20),
    "schedule-geometric": ("mlm", "", {"strategy": "random", "schedule": "geometric", "steps": 6}, 21),
    "schedule-logarithmic": ("mlm", "", {"strategy": "confidence", "schedule": "logarithmic", "steps": 6}, 22),
    "greedy": ("mlm", "", {"strategy": "confidence", "sampling": "greedy", "steps": 4}, 23),
    "nucleus": ("mlm", "", {"strategy": "confidence", "sampling": "nucleus", "top_p": 0.8, "temperature": 0.7, "steps": 4}, 24),
    "full-logits": ("mlm", "", {"strategy": "threshold", "threshold": 0.5, "sparse_logits": False, "steps": 6}, 25),
    "candidates": ("mlm", "tom found", {"strategy": "confidence", "candidates": 3, "steps": 4}, 26),
    "prefix-threshold": ("mlm", "tom found a red ball", {"strategy": "threshold", "threshold": 0.5, "steps": 10}, 27),
    "infill-confidence": ("mlm", "infill:tom found a [MASK]*3 in the [MASK]*2 .", {"strategy": "confidence", "steps": 3}, 28),
    "infill-threshold": ("mlm", "infill:tom found a [MASK]*3 in the [MASK]*2 .", {"strategy": "threshold", "threshold": 0.5, "steps": 5}, 29),
    "infill-remdm": ("mlm", "infill:tom found a [MASK]*3 in the [MASK]*2 .", {"strategy": "remdm", "remask_eta": 0.5, "steps": 4}, 30),
    "cfg-confidence": ("mlm", "tom found a red ball", {"strategy": "confidence", "cfg_scale": 1.5, "steps": 4}, 31),
    "cfg-threshold": ("mlm", "tom found a red ball", {"strategy": "threshold", "threshold": 0.5, "cfg_scale": 1.0, "steps": 8}, 32),
    "cfg-infill": ("mlm", "infill:tom found a [MASK]*3 in the [MASK]*2 .", {"strategy": "adaptive", "threshold": 0.5, "cfg_scale": 2.0, "steps": 3}, 33),
    "guide-confidence": ("mlm", "guide:tom found", {"strategy": "confidence", "guide_weight": 0.5, "steps": 4}, 34),
    "guide-remdm": ("mlm", "guide:", {"strategy": "remdm", "guide_weight": 0.3, "remask_eta": 0.5, "steps": 4}, 35),
    "guide-threshold": ("mlm", "guide:", {"strategy": "threshold", "guide_weight": 0.7, "threshold": 0.5, "steps": 8}, 36),
}

# Semi-autoregressive decoding (--block-size on a plain model): every strategy, blocks of 8 over 19 generated tokens.
SEMI_AR_CASES = {
    f"semi-ar-{strategy}": ("mlm", "", {"strategy": strategy, "block_size": BLOCK, "steps": steps, "threshold": 0.5}, 40 + i)
    for i, (strategy, steps) in enumerate((("random", 6), ("confidence", 6), ("threshold", LENGTH), ("entropy-bounded", LENGTH),
                                            ("adaptive", 6), ("remask", 6), ("remdm", 9)))
}

# The end token: certainty-ordered strategies with end-after-text on and off, and the others (which ignore it).
END_CASES = {
    f"end-{strategy}-{'after-text' if after else 'anywhere'}": (
        "mlm-end", "end:", {"strategy": strategy, "end_after_text": after, "threshold": 0.5, "steps": steps}, 50 + i)
    for i, (strategy, after, steps) in enumerate((
        ("threshold", True, LENGTH), ("threshold", False, LENGTH), ("confidence", True, 8), ("confidence", False, 8),
        ("entropy-bounded", True, LENGTH), ("entropy-bounded", False, LENGTH), ("adaptive", True, 6), ("adaptive", False, 6),
        ("random", True, 6), ("remdm", True, 8), ("remask", True, 6),
    ))
}
END_CASES["end-semi-ar-threshold"] = ("mlm-end", "end:", {"strategy": "threshold", "block_size": BLOCK, "threshold": 0.5, "steps": LENGTH}, 62)
END_CASES["end-infill-threshold"] = ("mlm-end", "end:infill:tom found a [MASK]*3 in the [MASK]*2 .", {"strategy": "threshold", "threshold": 0.5, "steps": 6}, 63)

# A block-diffusion model: its own blocks of 8, aligned from position 0, with and without the key-value cache.
BLOCK_CASES = {}
for i, (strategy, steps) in enumerate((("confidence", 9), ("threshold", LENGTH), ("random", 6), ("remdm", 9), ("adaptive", 6),
                                       ("entropy-bounded", LENGTH), ("remask", 6))):
    for model in ("block", "block-nocache"):
        BLOCK_CASES[f"{model}-{strategy}"] = (model, "the", {"strategy": strategy, "steps": steps, "threshold": 0.5}, 70 + i)
BLOCK_CASES["block-end-confidence"] = ("block-end", "end:", {"strategy": "confidence", "steps": 9}, 80)
BLOCK_CASES["block-end-threshold"] = ("block-end", "end:the", {"strategy": "threshold", "threshold": 0.5, "steps": LENGTH}, 81)

CASES = {**STRATEGY_CASES, **OPTION_CASES, **SEMI_AR_CASES, **END_CASES, **BLOCK_CASES}


@cache
def tokenizer():
    return tokenization.train_tokenizer(corpus.generate_corpus(300), "bpe", 500)


def _built(objective: str, seed: int):
    torch.manual_seed(seed)
    return models.build_model(objective, "tiny", tokenizer(), 32, initializer_range=0.5).eval()


def _leaning_to_end(model, bias: float):
    leaning = copy.deepcopy(model)
    with torch.no_grad():
        leaning.get_output_embeddings().bias[tokenization.end_token_id(tokenizer())] += bias
    return leaning


@cache
def network(name: str):
    """The seeded tiny network behind a case's model (before any block wrapper)."""
    return {
        "mlm": lambda: _built("diffusion", 0),
        "mlm-end": lambda: _leaning_to_end(network("mlm"), 22.0),
        "block": lambda: _built("diffusion", 1),
        "block-end": lambda: _leaning_to_end(network("block"), 10.0),
        "gpt2": lambda: _built("ar", 2),
    }[name]()


def denoiser(name: str):
    if name.startswith("block"):
        return blocks.BlockModel(network("block-end" if name == "block-end" else "block"), BLOCK, cache=name != "block-nocache")
    return network(name)


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def inputs(prompt: str) -> tuple[torch.Tensor, bool, bool]:
    """(input ids (2, LENGTH), whether the end token may be sampled, whether the GPT-2 guides)."""
    end = prompt.startswith("end:")
    prompt = prompt.removeprefix("end:")
    guide = prompt.startswith("guide:")
    prompt = prompt.removeprefix("guide:")
    infill = prompt.removeprefix("infill:") if prompt.startswith("infill:") else None
    ids = sampling.build_inputs(tokenizer(), "" if infill is not None else prompt, LENGTH, 2, infill, end_token=infill is not None)
    return ids, end, guide


def run(name: str, input_ids: torch.Tensor | None = None) -> sampling.SampleResult:
    model, prompt, options, seed = CASES[name]
    ids, end, guide = inputs(prompt)
    tok = tokenizer()
    banned = sampling.banned_token_ids(tok, allow_end=end)
    return sampling.sample(
        denoiser(model), ids if input_ids is None else input_ids, tok.mask_token_id, sampling.SamplerConfig(**options),
        banned, torch.Generator().manual_seed(seed), guide=network("gpt2") if guide else None,
        end_token_id=tokenization.end_token_id(tok) if end else None,
    )


def trajectory_record(result: sampling.SampleResult) -> dict:
    """The exact ids of every step, with nfe, the block each step worked on, the candidates (if recorded) and the
    confidence in thousandths (compared within a tolerance: it is a float)."""
    return {
        "nfe": result.nfe,
        "guide_nfe": result.guide_nfe,
        "ids": [step.ids.tolist() for step in result.trajectory],
        "active": [None if step.active is None else step.active[0].nonzero().flatten().tolist() for step in result.trajectory],
        "candidates": [None if step.candidates is None else step.candidates.tolist() for step in result.trajectory],
        "confidence": [step.confidence.mul(1000).round().int().tolist() for step in result.trajectory],
    }


def digests() -> dict:
    return {name: weights_digest(network(name)) for name in ("mlm", "mlm-end", "block", "block-end", "gpt2")}


def record(names: list[str]) -> None:
    torch.set_num_threads(1)  # as the tests run (conftest)
    stored = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {"cases": {}}
    stored["weights"] = digests()
    for name in names or CASES:
        stored["cases"][name] = trajectory_record(run(name))
    stored["cases"] = {name: stored["cases"][name] for name in CASES if name in stored["cases"]}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"  {json.dumps(name)}: {json.dumps(case, separators=(',', ':'))}" for name, case in stored["cases"].items()]
    FIXTURE.write_text('{"weights": ' + json.dumps(stored["weights"]) + ',\n"cases": {\n' + ",\n".join(lines) + "\n}}\n")


@pytest.fixture(scope="module")
def golden():
    return json.loads(FIXTURE.read_text())


def test_every_case_is_recorded_and_the_models_are_the_recorded_ones(golden):
    assert list(golden["cases"]) == list(CASES)
    assert golden["weights"] == digests(), "the tiny models changed (models.build_model): record the fixtures again"


@pytest.mark.parametrize("name", list(CASES))
def test_sampler_reproduces_the_golden_trajectory(golden, name):
    expected = golden["cases"][name]
    result = run(name, torch.tensor(expected["ids"][0]))
    got = trajectory_record(result)
    assert (got["nfe"], got["guide_nfe"]) == (expected["nfe"], expected["guide_nfe"])
    assert len(got["ids"]) == len(expected["ids"])
    for step, (ids, want) in enumerate(zip(got["ids"], expected["ids"])):
        assert ids == want, f"step {step}"
    assert got["active"] == expected["active"]
    assert got["candidates"] == expected["candidates"]
    confidence, want = torch.tensor(got["confidence"]), torch.tensor(expected["confidence"])
    assert ((confidence - want).abs() <= 2).all()


if __name__ == "__main__":
    record(sys.argv[1:])
