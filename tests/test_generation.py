"""Shared generation: adapters by name, mixed batches, stop sequences, no silent fallback."""

from __future__ import annotations

import pytest

from codetune import generation
from codetune.errors import CodetuneError

pytestmark = pytest.mark.slow

PROMPTS = ["def add(a, b):\n    return", "import os\n\ndef list_files(path):\n"]


@pytest.fixture(scope="module")
def lm(random_adapter):
    return generation.load_model(None, {"rand": random_adapter})


def test_base_and_adapter_answer_differently_and_mixed_batch_matches(lm):
    # Guards: the adapter really changes answers, and a mixed batch gives each row the
    # same answer as a single-adapter batch (no cross-talk between rows).
    base = generation.generate(lm, PROMPTS, adapters=None, max_new_tokens=8)
    tuned = generation.generate(lm, PROMPTS, adapters="rand", max_new_tokens=8)
    mixed = generation.generate(lm, PROMPTS, adapters=[None, "rand"], max_new_tokens=8)
    assert [g.text for g in base] != [g.text for g in tuned]
    assert mixed[0].text == base[0].text
    assert mixed[1].text == tuned[1].text
    assert mixed[1].adapter == "rand" and mixed[0].adapter is None
    assert all(g.completion_tokens <= 8 for g in base + tuned)


def test_unknown_adapter_is_an_error_not_a_fallback(lm):
    with pytest.raises(CodetuneError, match="unknown adapter.*rand"):
        generation.generate(lm, PROMPTS[:1], adapters="nope", max_new_tokens=4)


def test_stop_sequence_cuts_text(lm):
    g = generation.generate(lm, ["def add(a, b):\n"], max_new_tokens=24, stop=["\n"])[0]
    assert "\n" not in g.text
    assert g.finish_reason in ("stop", "length")


def test_runtime_adapter_registration(lm, random_adapter):
    generation.add_adapter(lm, "second", random_adapter)
    assert "second" in lm.adapters
    a = generation.generate(lm, PROMPTS[:1], adapters="second", max_new_tokens=6)[0].text
    b = generation.generate(lm, PROMPTS[:1], adapters="rand", max_new_tokens=6)[0].text
    assert a == b  # same weights, same answer
    generation.remove_adapter(lm, "second")
    with pytest.raises(CodetuneError):
        generation.generate(lm, PROMPTS[:1], adapters="second", max_new_tokens=4)


CB_PROMPTS = [
    "def add(a, b):\n    return",
    "import os\n\ndef list_files(path):\n",
    "class Stack:\n    def __init__(self):\n",
    "# sort a list of numbers\ndef bubble_sort(xs):\n",
    "def fib(n):\n",
]


def test_continuous_batching_matches_plain_generate(lm):
    # Guards the continuous-batching engine: with fewer slots than prompts (rows are admitted
    # mid-flight into a left-padded shared cache, finished rows leave and padding is trimmed),
    # every row — base and adapter, per-row caps, a stop sequence — gets exactly the answer
    # that plain one-batch generate gives it.
    caps = [3, 9, 6, 12, 5]
    for adapter in (None, "rand"):
        want = [
            generation.generate(lm, [p], adapters=adapter, max_new_tokens=c, stop=["\n\n"])[0]
            for p, c in zip(CB_PROMPTS, caps, strict=True)
        ]
        got = generation.generate_continuous(
            lm, CB_PROMPTS, adapters=adapter, max_new_tokens=caps, stop=["\n\n"], max_batch=2
        )
        assert [g.text for g in got] == [g.text for g in want]
        assert [g.finish_reason for g in got] == [g.finish_reason for g in want]
        assert [g.completion_tokens for g in got] == [g.completion_tokens for g in want]
    assert all(g.completion_tokens <= c for g, c in zip(got, caps, strict=True))


def test_continuous_batching_mixed_adapters_and_errors(lm):
    # Guards: per-row adapters in one continuous batch give each row its own adapter's
    # answer; an unknown adapter is an error, never the base model.
    rows = [None, "rand", None, "rand"]
    got = generation.generate_continuous(
        lm, CB_PROMPTS[:4], adapters=rows, max_new_tokens=6, max_batch=3
    )
    for p, a, g in zip(CB_PROMPTS, rows, got, strict=False):
        assert g.text == generation.generate(lm, [p], adapters=a, max_new_tokens=6)[0].text
        assert g.adapter == a
    with pytest.raises(CodetuneError, match="unknown adapter"):
        generation.generate_continuous(lm, CB_PROMPTS[:1], adapters="nope")
