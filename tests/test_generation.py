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


@pytest.fixture(scope="module")
def bugfix_prompts(lm, repo_root, tmp_path_factory):
    """Real bugfix prompts as evaluation renders them (chat template + opening fence), the 4
    shortest of a small standard-library set, with their evaluation caps."""
    import json
    import math
    import sys

    from codetune.evaluate import suites as S
    from codetune.evaluate.runner import BUGFIX_MARGIN
    from codetune.prompts import answer_prefix, render_chat

    sys.path.insert(0, str(repo_root / "benchmarks"))
    try:
        from _bugfix_data import build
    finally:
        sys.path.pop(0)
    d = build(tmp_path_factory.mktemp("bugfix"), 40)
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: len(r["messages"][-1]["content"]))
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    tok = lm.tokenizer
    out = []
    for item in S.load_bugfix(d, None):
        ref = len(tok(item.reference, add_special_tokens=False)["input_ids"])
        prompt = render_chat(tok, S.bugfix_messages(item)) + answer_prefix(item.language)
        out.append((prompt, math.ceil(ref * 1.25) + BUGFIX_MARGIN))
    return out


def test_prompt_lookup_drafts_are_the_plain_greedy_answers(lm, bugfix_prompts):
    # Guards speculative decoding with prompt-lookup drafts: on real bugfix prompts, rows of
    # different lengths admitted mid-flight (3 slots, 5 rows), base and adapter rows in one
    # batch (the adapter's drafts are mostly rejected: the rollback path), no stop string so
    # rows end on EOS — which the prompt holds right after the code, so it arrives inside a
    # draft — every answer is token for token the one plain greedy decoding gives.
    from codetune.evaluate import suites as S

    prompts = [p for p, _ in bugfix_prompts] + [CB_PROMPTS[1]]
    caps = [c for _, c in bugfix_prompts] + [12]
    rows = [None, "rand", None, None, "rand"]
    eos = lm.tokenizer.eos_token_id
    drafted_eos = []

    def spy(module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1 and kwargs["past_key_values"].get_seq_length() > 0:
            drafted_eos.append(bool((ids[:, 1:] == eos).any()))

    for stop in (None, S.STOP):
        plain = generation.generate_continuous(
            lm, prompts, adapters=rows, max_new_tokens=caps, stop=stop, max_batch=3
        )
        stats: dict = {}
        hook = lm.model.register_forward_pre_hook(spy, with_kwargs=True)
        try:
            fast = generation.generate_continuous(
                lm,
                prompts,
                adapters=rows,
                max_new_tokens=caps,
                stop=stop,
                max_batch=3,
                draft_tokens=8,
                stats=stats,
            )
        finally:
            hook.remove()
        assert [g.text for g in fast] == [g.text for g in plain]
        assert [g.completion_tokens for g in fast] == [g.completion_tokens for g in plain]
        assert [g.finish_reason for g in fast] == [g.finish_reason for g in plain]
        # the drafts did work: a good part of the answers came from accepted drafts
        assert stats["accepted"] > 0.3 * sum(g.completion_tokens for g in fast)
        assert stats["drafted"] > stats["accepted"]  # and some were rejected
    assert any(drafted_eos)
    assert any(g.finish_reason == "stop" for g in plain)
    assert lm.model.config._attn_implementation == "sdpa"  # the packed attention is undone


def test_prompt_lookup_drafts_ragged_and_capped_by_the_step_budget(lm, bugfix_prompts, monkeypatch):
    # Guards ragged verification and the per-step draft budget on base-model rows (no
    # per-row adapters, so the padding of short drafts is skipped): the answers are the plain
    # greedy ones with rows of different draft lengths in one step, and with room for 8
    # positions a step of 3-4 rows drafts at most 1 token per row (width 2), wider steps
    # coming only as rows leave.
    from codetune.evaluate import suites as S

    prompts = [p for p, _ in bugfix_prompts]
    caps = [c for _, c in bugfix_prompts]
    plain = generation.generate_continuous(
        lm, prompts, max_new_tokens=caps, stop=S.STOP, max_batch=4
    )
    shapes, ragged = [], []

    def spy(module, args, kwargs):
        if kwargs["past_key_values"].get_seq_length() > 0:
            shapes.append(tuple(kwargs["input_ids"].shape))

    enter = generation._OnlyPositions.__enter__

    def counted(self):
        ragged.append(int(self.keep.numel()))
        return enter(self)

    monkeypatch.setattr(generation._OnlyPositions, "__enter__", counted)
    hook = lm.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        for budget in (generation.DRAFT_POSITIONS, 8):
            monkeypatch.setattr(generation, "DRAFT_POSITIONS", budget)
            shapes.clear()
            fast = generation.generate_continuous(
                lm, prompts, max_new_tokens=caps, stop=S.STOP, max_batch=4, draft_tokens=8
            )
            assert [g.text for g in fast] == [g.text for g in plain]
            assert [g.completion_tokens for g in fast] == [g.completion_tokens for g in plain]
            if budget == 8:
                assert all(w <= max(2, 8 // rows) for rows, w in shapes)
                assert (4, 2) in shapes and any(w > 2 for _, w in shapes)
            else:
                assert any(w > 2 for _, w in shapes) and ragged  # padding was skipped
    finally:
        hook.remove()
    assert "forward" not in lm.model.lm_head.__dict__


def test_prompt_lookup_follows_the_copy_across_one_changed_token():
    # Guards the draft source: a copy continues where it left off, and after one token the
    # answer changed (the fix) it resumes right after the replaced prompt token.
    lk = generation._PromptLookup([9, 1, 2, 3, 4, 5, 6, 7, 8], ngram=3, k_max=4)
    assert lk.draft([1, 2], 3) == [3, 4, 5]
    lk.advance(3, 3)  # 3, 4, 5 accepted, then the model's own 6
    assert lk.draft([1, 2, 3, 4, 5, 6], 2) == [7, 8]
    lk.advance(0, 2)  # the model wrote 70 instead of 7: the next draft is shorter
    assert lk.draft([1, 2, 3, 4, 5, 6, 70], 9) == [8]
    assert lk.k == 2
    assert generation._PromptLookup([1, 2, 3], 3).draft([42], 4) == []
    with pytest.raises(ValueError, match="greedy"):
        generation.generate_continuous(None, ["x"], temperature=0.7, draft_tokens=4)


def _prefill_ops(model) -> set[str]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(100, 1000, (2, 5))
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
    return {e.key for e in prof.key_averages()}


def test_loaded_and_merged_models_prefill_with_one_matmul_per_projection(lm, random_adapter):
    # Guards: a model with adapters (PEFT freezes the base weights) and the evaluation's
    # merged candidate keep torch's folded matmul for 3-D inputs; with frozen weights it takes
    # its batched path (aten::bmm over the weight expanded per row), which in bf16 on the CPU
    # copies every weight once per prompt: an 18x slower prefill (benchmarks/RESULTS.md).
    import copy

    from peft import PeftModel

    from codetune.evaluate.runner import _side_model

    assert "aten::bmm" not in _prefill_ops(lm.model)
    generation.add_adapter(lm, "later", random_adapter)
    try:
        assert "aten::bmm" not in _prefill_ops(lm.model)
    finally:
        generation.remove_adapter(lm, "later")
    base = generation.load_model(None)
    side, _, _ = _side_model(base, random_adapter, merge=True)
    assert "aten::bmm" not in _prefill_ops(side.model)
    frozen = PeftModel.from_pretrained(copy.deepcopy(base.model), str(random_adapter))
    assert "aten::bmm" in _prefill_ops(frozen)  # what PEFT alone leaves: the batched path
