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
