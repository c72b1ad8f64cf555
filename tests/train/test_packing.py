"""Examples batched together never attend to each other: an example's logits are the same
alone and inside a padding-free (flattened) or a padded batch."""

from __future__ import annotations

import pytest
from train_fixtures import PAIRS, TINY, one_torch_thread, record

from codetune.train.config import load_train_config
from codetune.train.data import make_collator, tokenize_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(embedded_model_dir):
    with one_torch_thread():
        yield _setup(embedded_model_dir)


def _setup(embedded_model_dir):
    import torch
    from transformers import AutoTokenizer

    from codetune.train.runner import load_model

    # quantization=none: isolation is a property of the attention mask, and the bf16/fp32 load
    # takes 1 s instead of the 4-bit quantization's minute on a shared CPU. The model comes
    # from the training code path (load_model), so its KV-cache setting is the one training uses.
    cfg = load_train_config("cpu-smollm2", TINY + ["quantization=none"])
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = load_model(cfg, str(embedded_model_dir), torch.float32, cuda=False).eval()
    recs = [record(i, b, f, "train") for i, (b, f) in enumerate(PAIRS[:3])]
    feats, _ = tokenize_records(tok, recs, 256)
    return model, tok, feats


def _logits(model, **batch):
    import torch

    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_padding_free_batch_matches_alone(setup):
    # Guards isolation in the default batching: position_ids restart per example.
    import torch

    model, tok, feats = setup
    alone = _logits(model, input_ids=torch.tensor([feats[1]["input_ids"]]))
    batch = make_collator(tok, "padding_free")(feats)
    packed = _logits(model, **batch)
    start = len(feats[0]["input_ids"])
    piece = packed[:, start : start + len(feats[1]["input_ids"])]
    assert torch.allclose(piece, alone, atol=1e-3, rtol=1e-3), (piece - alone).abs().max()
    # Negative control: without the restarts the second example would see the first.
    leaky = dict(batch)
    leaky["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None]
    leak = _logits(model, **leaky)[:, start : start + len(feats[1]["input_ids"])]
    assert (leak - alone).abs().max() > 1e-2


def test_padded_batch_matches_alone(setup):
    # Guards isolation in the length-grouped padded batching (padding is masked out).
    import torch

    model, tok, feats = setup
    batch = make_collator(tok, "padded")(feats)
    padded = _logits(model, **batch)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        alone = _logits(model, input_ids=torch.tensor([f["input_ids"]]))
        if tok.padding_side == "left":
            row = padded[i : i + 1, -n:]
        else:
            row = padded[i : i + 1, :n]
        assert torch.allclose(row, alone, atol=1e-3, rtol=1e-3), (i, (row - alone).abs().max())


def test_loss_only_on_assistant_tokens(setup):
    # Prompt tokens carry label -100; the answer (ending with the end-of-turn token) carries loss.
    _, tok, feats = setup
    f = feats[0]
    n_prompt = f["labels"].index(next(x for x in f["labels"] if x != -100))
    assert all(x == -100 for x in f["labels"][:n_prompt])
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:]
    answer = tok.decode(f["input_ids"][n_prompt:])
    assert answer.startswith("```python") and "<|im_end|>" in answer


@pytest.mark.parametrize("batching", ["padding_free", "padded"])
def test_loss_on_answer_positions_only_is_the_same_loss(setup, batching):
    # Guards the training speed-up: computing logits only where a label is predicted gives
    # the model's own full-logits loss (same targets, same normalization) and its gradient,
    # for flattened and padded batches.
    import torch

    from codetune.train.data import loss_positions_only

    model, tok, feats = setup
    batch = make_collator(tok, batching)(feats)
    n_items = (batch["labels"][:, 1:] != -100).sum()
    full = model(**batch, num_items_in_batch=n_items)
    fast_in = loss_positions_only(batch)
    fast = model(**fast_in, num_items_in_batch=n_items)
    assert fast.logits.shape[1] == len(fast_in["logits_to_keep"]) < batch["input_ids"].shape[1]
    assert torch.allclose(full.loss, fast.loss, atol=1e-5), (full.loss, fast.loss)
    params = [p for p in model.parameters() if p.requires_grad][:4] or [next(model.parameters())]
    g_full = torch.autograd.grad(full.loss, params, allow_unused=True)
    g_fast = torch.autograd.grad(fast.loss, params, allow_unused=True)
    for a, b in zip(g_full, g_fast, strict=True):
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
