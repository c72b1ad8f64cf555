"""The decoding attention for several positions per row over a grouped-query KV cache."""

from __future__ import annotations

import pytest

from codetune import generation


class _Attn:
    num_key_value_groups = 3


def _inputs(seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    b, h_kv, n_rep, q, k, d = 2, 2, 3, 4, 11, 8
    query = torch.randn(b, h_kv * n_rep, q, d, generator=g)
    key = torch.randn(b, h_kv, k, d, generator=g)
    value = torch.randn(b, h_kv, k, d, generator=g)
    # row 0: 2 left-padding positions; row 1: a rejected draft position in the middle; both
    # causal over the 4 new positions
    mask = torch.ones(b, 1, q, k, dtype=torch.bool)
    mask[0, :, :, :2] = False
    mask[1, :, :, 5] = False
    mask[:, :, :, k - q :] &= torch.ones(q, q, dtype=torch.bool).tril()
    return query, key, value, mask


def test_packed_gqa_attention_equals_repeated_kv(monkeypatch):
    # Guards the verifying step's attention: stacking a KV head's query heads along the query
    # axis (no copy of the cache) gives what transformers' repeat_kv SDPA path gives, head by
    # head and position by position, with a padding + causal + hole mask.
    import torch
    from transformers.integrations import sdpa_attention as stock

    query, key, value, mask = _inputs()
    want, _ = stock.sdpa_attention_forward(_Attn(), query, key, value, mask, scaling=0.3)

    def no_stock(*args, **kwargs):
        raise AssertionError("the stock path (repeat_kv) was used")

    monkeypatch.setattr(stock, "sdpa_attention_forward", no_stock)
    got, _ = generation._packed_gqa_sdpa(_Attn(), query, key, value, mask, scaling=0.3)
    assert got.shape == want.shape == (2, 4, 6, 8)  # (batch, positions, heads, dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["one position", "prefill", "no mask"])
def test_packed_gqa_attention_leaves_other_steps_to_transformers(case):
    from transformers.integrations import sdpa_attention as stock

    query, key, value, mask = _inputs(1)
    if case == "one position":
        query, mask = query[:, :, -1:], mask[:, :, -1:]
    elif case == "prefill":
        key, value, mask = key[:, :, -4:], value[:, :, -4:], mask[..., -4:]
    else:
        mask = None
    calls = []
    original = stock.sdpa_attention_forward

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(stock, "sdpa_attention_forward", spy):
        generation._packed_gqa_sdpa(_Attn(), query, key, value, mask, scaling=0.3)
    assert calls == [1]


def test_only_positions_computes_the_kept_positions_and_restores_the_module():
    # Guards ragged verification: inside the context a per-position module computes only the
    # kept (row, position) entries — the same values as without it — and zeros elsewhere;
    # afterwards it is the module it was.
    import torch

    seen = []

    class Recorded(torch.nn.Linear):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return super().forward(x)

    torch.manual_seed(0)
    lin = Recorded(6, 5)
    x = torch.randn(3, 4, 6)
    keep = torch.tensor([0, 1, 4, 9, 10, 11])  # row 0: 2 positions, row 1: 1, row 2: 3
    want = lin(x)
    with generation._OnlyPositions([lin], keep):
        got = lin(x)
    assert seen[-1] == (6, 6)  # the module saw the 6 kept positions only
    flat_got, flat_want = got.reshape(12, 5), want.reshape(12, 5)
    torch.testing.assert_close(flat_got[keep], flat_want[keep])
    dropped = [i for i in range(12) if i not in keep.tolist()]
    assert flat_got[dropped].abs().sum() == 0
    assert "forward" not in lin.__dict__
    torch.testing.assert_close(lin(x), want)
