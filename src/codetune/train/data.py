"""Training data: read the prepare output, tokenize with loss on the assistant's tokens only,
cap the length, and batch without padding to a fixed length.

Tokenization matches inference exactly: the prompt is rendered with
``render_chat(..., add_generation_prompt=True)`` (what evaluation and serving send) and
tokenized alone; the answer suffix is tokenized separately and appended. Prompt tokens get
label ``-100``; the answer (including the end-of-turn token, so the model learns to stop)
carries the loss.

Two batchings keep examples from attending to each other:

- ``padding_free``: a micro-batch is flattened into one row; ``position_ids`` restart at 0
  for each example. transformers detects the restarts and builds a block-diagonal causal
  mask (sdpa/eager) or uses varlen kernels (flash-attention), so no token is wasted on padding.
- ``padded``: examples are grouped by length and padded to the longest in the micro-batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.io import read_jsonl
from codetune.prompts import render_chat

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class TokenizeStats:
    examples: int = 0
    kept: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    max_length: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {
            "examples": self.examples,
            "kept": self.kept,
            "dropped_overlong": self.dropped_overlong,
            "truncated": self.truncated,
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
            "max_length": self.max_length,
        }


def load_records(path: Path, *, required: bool, option: str = "--data") -> list[dict]:
    """Read and check one split; raises CodetuneError naming the file and line.

    Each record needs ``messages`` ending with a non-empty assistant turn after a user turn.
    """
    path = Path(path)
    if not path.is_file():
        if required:
            raise CodetuneError(
                f"{option}: {path} does not exist (expected the output of 'codetune prepare': "
                "train.jsonl, validation.jsonl, test.jsonl)"
            )
        return []
    try:
        rows = list(read_jsonl(path))
    except ValueError as e:
        raise CodetuneError(f"{option}: {e}") from e
    for i, row in enumerate(rows, 1):
        msgs = row.get("messages") if isinstance(row, dict) else None
        where = f"{path} record {i}" + (f" (id {row.get('id')})" if isinstance(row, dict) else "")
        if not isinstance(msgs, list) or not msgs:
            raise CodetuneError(f"{where}: no 'messages' list")
        last = msgs[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            raise CodetuneError(
                f"{where}: no assistant turn (the last message must be the assistant's answer)"
            )
        if not str(last.get("content") or "").strip():
            raise CodetuneError(f"{where}: the assistant turn is empty")
        if not any(isinstance(m, dict) and m.get("role") == "user" for m in msgs[:-1]):
            raise CodetuneError(f"{where}: no user turn before the assistant's answer")
    if required and not rows:
        raise CodetuneError(f"{option}: {path} has no records; the training set is empty")
    return rows


def tokenize_record(tokenizer, msgs: list[dict]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one conversation; labels are -100 on the prompt."""
    prompt = render_chat(tokenizer, msgs[:-1], add_generation_prompt=True)
    full = render_chat(tokenizer, msgs, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise CodetuneError(
            "the tokenizer's chat template renders the prompt differently with and without the "
            "answer; codetune cannot locate the assistant's tokens for this model"
        )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    return p_ids + a_ids, [IGNORE] * len(p_ids) + list(a_ids)


def tokenize_records(
    tokenizer, records: list[dict], max_seq_length: int, overlong: str = "drop"
) -> tuple[list[dict], TokenizeStats]:
    """Tokenize records under the hard length cap; counts dropped and truncated examples."""
    stats = TokenizeStats()
    out: list[dict] = []
    for rec in records:
        stats.examples += 1
        ids, labels = tokenize_record(tokenizer, rec["messages"])
        if len(ids) > max_seq_length:
            n_prompt = sum(1 for x in labels if x == IGNORE)
            # Truncation only makes sense while some answer tokens survive the cut.
            if overlong == "truncate" and n_prompt < max_seq_length - 1:
                ids, labels = ids[:max_seq_length], labels[:max_seq_length]
                stats.truncated += 1
            else:
                stats.dropped_overlong += 1
                continue
        n_loss = sum(1 for x in labels if x != IGNORE)
        stats.kept += 1
        stats.tokens += len(ids)
        stats.loss_tokens += n_loss
        stats.max_length = max(stats.max_length, len(ids))
        stats.lengths.append(len(ids))
        out.append({"input_ids": ids, "labels": labels})
    return out, stats


def make_collator(tokenizer, batching: str):
    """The data collator for ``batching`` (see module docstring)."""
    if batching == "padding_free":
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
    from transformers import DataCollatorForSeq2Seq

    # Pads input_ids with pad_token_id and labels with -100, to the longest in the batch only.
    return DataCollatorForSeq2Seq(
        tokenizer, padding="longest", label_pad_token_id=IGNORE, pad_to_multiple_of=8
    )


def loss_positions_only(inputs: dict) -> dict:
    """``inputs`` rewritten so the model computes logits only where a label is predicted.

    The loss is on the assistant's tokens only, yet a causal LM computes the 49k-151k-wide
    vocabulary projection for every position. Passing ``logits_to_keep`` = the positions whose
    next token is labelled (union over the batch rows) and the matching ``shift_labels`` gives
    the same loss (same sum over the same targets, same ``num_items_in_batch`` normalization)
    while skipping the projection — and its logits, the largest activation — for prompt
    tokens: ~2/3 of the tokens in the bugfix examples. transformers' causal-LM loss uses
    ``shift_labels`` as given instead of shifting ``labels``.
    """
    import torch

    labels = inputs.get("labels")
    if labels is None:
        return inputs
    shift = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    keep = (shift != IGNORE).any(0).nonzero().squeeze(-1)
    if keep.numel() == 0:
        return inputs
    target = shift[:, keep].contiguous()
    return {**inputs, "labels": target, "shift_labels": target, "logits_to_keep": keep}
