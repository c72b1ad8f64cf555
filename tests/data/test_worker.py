"""Shortcuts the per-file worker takes for speed, checked against the slow exact way."""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from pathlib import Path

import pytest

from codetune.data.extract import iter_function_nodes, segment, stub_of
from codetune.data.mutations import CATALOGUE, Mutator, parse_function
from codetune.data.worker import TokenCounter, _reparse_free

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["textwrap.py", "heapq.py", "shlex.py", "json/decoder.py", "tokenize.py", "calendar.py"]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    from codetune.data.pipeline import tokenizer_file

    return Tokenizer.from_file(str(tokenizer_file(None)))  # the embedded model's


def _segments():
    """(code, file def node, first line, indent) of every extractable function of MODULES."""
    for name in MODULES:
        text = (STDLIB / name).read_text()
        lines = text.split("\n")
        for _, node in iter_function_nodes(ast.parse(text)):
            seg = segment(lines, node)
            if seg is not None:
                code, first = seg
                head = lines[first - 1]
                yield code, node, first, head[: len(head) - len(head.lstrip())]


def test_token_counter_is_exact(tokenizer) -> None:
    # Guards the pre-token memo: its counts equal the real tokenizer's on real code and on
    # the cases where the fast path must step aside (non-ASCII, special tokens) or where
    # the ASCII form of the split pattern could differ (control characters, contractions,
    # digit runs, whitespace runs before words and at the end).
    texts = [code for code, *_ in _segments()]
    texts += [
        "x = 'it's' + \"we're\" 'll 've 'd 'm 't 's 'S\n",
        "a\x0bb\x0cc\x1cd\x1fe\x7f  \t\t x\r\ny   \n\n\n    ",
        "n = 1234567890 + 3.14e-10j; s = x[::-1] >>= 0x1F\n",
        "    \n\tdef f(a, *b, **c):  # trailing   \n",
        "café = 'naïve'  # non-ASCII goes to the real tokenizer\n",
        "s = '<|im_start|>user'  # a special token's text inside code\n",
        "",
    ]
    # random text over the characters where the split decides: spaces before words,
    # punctuation and contractions, whitespace runs of every kind
    rng = random.Random(0)
    alphabet = [
        " ",
        "  ",
        "\t",
        "\n",
        "\n    ",
        "\r",
        "\x0b",
        "'",
        "'s",
        "'ll",
        "ab",
        "Z",
        "7",
        "(",
        "):",
        ".",
        "#",
    ]
    texts += ["".join(rng.choices(alphabet, k=rng.randrange(1, 40))) for _ in range(400)]
    counter = TokenCounter(tokenizer)
    assert counter.fast  # the embedded tokenizer is byte-level BPE: the shortcut is used
    got = counter(texts)
    want = [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert got == want


def test_file_ast_stands_in_for_a_reparse() -> None:
    # Guards skipping the standalone parse of each function: (1) every segment the worker
    # does not re-parse does parse on its own (the claim in _reparse_free), and (2) the
    # file's AST, shifted, gives exactly the edits and stub a parse of the segment gives.
    n = 0
    for code, node, first, indent in _segments():
        if not _reparse_free(code, indent):
            continue
        fn = parse_function(code)  # raises if the claim were wrong
        n += 1
        from_file = Mutator(code, node, first, len(indent))
        reparsed = Mutator(code, fn)
        assert stub_of(code, node, first) == stub_of(code, fn)
        for op in CATALOGUE:
            a = from_file.sites(op, random.Random(1))
            b = reparsed.sites(op, random.Random(1))
            assert a == b, (op, code[:80])
        assert from_file.candidates() == reparsed.candidates()
    assert n > 100


def test_reparse_guard_catches_tab_indentation() -> None:
    # Guards the exception the guard exists for: a method whose body mixes a tab into its
    # indentation parses inside its class but not once the class indentation is removed.
    p = " " * 7
    src = f"class A:\n{p}def f(self):\n{p}\tx = 1\n{p} return x\n"
    tree = ast.parse(src)  # in the file both body lines sit at column 8 either way
    (_, node), *_ = iter_function_nodes(tree)
    code, _ = segment(src.split("\n"), node)
    with pytest.raises(SyntaxError):  # alone: the tab reaches column 8, the space column 1
        parse_function(code)
    assert not _reparse_free(code, p)


def test_stub_tokens_from_the_code_prefix(tokenizer) -> None:
    # Guards the worker's stub count: tokens(stub) = tokens(code prefix) + tokens("\n") and
    # tokens(code) = tokens(prefix) + tokens(rest), because the cut falls where no
    # pre-token continues (after a non-space, before a space).
    counter = TokenCounter(tokenizer)
    n = 0
    for code, node, first, _ in _segments():
        stub = stub_of(code, node, first)
        if stub is None:
            continue
        n += 1
        head, rest, nl = counter([stub[:-1], code[len(stub) - 1 :], "\n"])
        want_stub, want_code = (
            len(e.ids) for e in tokenizer.encode_batch([stub, code], add_special_tokens=False)
        )
        assert (head + nl, head + rest) == (want_stub, want_code)
    assert n > 30


def test_minhash_equals_datasketch(monkeypatch) -> None:
    # Guards the numpy MinHash: the same hash values as datasketch's own MinHash
    # (affine32, seed 1) fed with the same shingle hashes — here computed the slow way, one
    # token at a time — so the LSH thresholds mean what datasketch documents and stored
    # sketches stay comparable across versions of this code.
    import re

    import numpy as np
    from datasketch import MinHash

    from codetune.data import worker

    def fmix32(h: int) -> int:
        h ^= h >> 16
        h = (h * 0x85EBCA6B) % 2**32
        h ^= h >> 13
        h = (h * 0xC2B2AE35) % 2**32
        return h ^ (h >> 16)

    def token_hash(tok: bytes) -> int:
        return fmix32(sum(c * 1_000_003**j for j, c in enumerate(tok)) % 2**32)

    perm = worker.minhash_permutations(64)
    worker._STATE.update(perm=perm)
    monkeypatch.setattr(worker, "MINHASH_BATCH_BYTES", 3000)  # several batches
    codes = [code for code, *_ in list(_segments())[:60]]
    codes += ["def f():\n    return 'naïve — ok'\n", "def g(): pass\n"]  # non-ASCII; < 5 tokens
    token = re.compile(rb"[A-Za-z0-9_\x80-\xff]+|[^A-Za-z0-9_\x80-\xff\t\n\x0b\x0c\r ]")
    norms = [worker.normalize(code) for code in codes]
    for norm, got in zip(norms, worker.minhashes(norms), strict=True):
        toks = [token_hash(t) for t in token.findall(norm.encode())]
        toks += [0] * (5 - len(toks))
        shingles = set()
        for i in range(len(toks) - 4):
            h = 0
            for t in toks[i : i + 5]:
                h = (h * 1_000_003 + t) % 2**32
            shingles.add(h)
        ref = MinHash(num_perm=64, seed=1, scheme="affine32", hashfunc=int, permutations=perm)
        ref.update_batch(sorted(shingles))
        assert got == ref.hashvalues.astype(np.uint32).tobytes()
        assert worker.minhash_of(norm) == got  # alone or in a batch: the same sketch


@pytest.mark.parametrize(
    "secret",
    [
        'KEY = "AKIA' + "Z" * 16 + '"',  # AWS access key id
        "-----BEGIN RSA PRIVATE KEY-----",
        'tok = "ghp_' + "a1B2" * 9 + '"',  # GitHub token, after other "gh" lines
        'AWS_secret_KEY = "' + "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYab" + '"',  # mixed case
        'hook = "https://hooks.slack.com/services/T0000000/B0000000/' + "X" * 24 + '"',
    ],
)
def test_secret_found_on_any_line(secret: str) -> None:
    # Guards the line-local prefilter of has_secret: a credential on one line of a large
    # file, after many lines holding the same literals (`gh`, `aws`) without a secret, is
    # still found — and the same file without that line is clean.
    from codetune.data.config import PrepareConfig
    from codetune.data.secrets import has_secret

    plugins = PrepareConfig().secret_plugins
    filler = "".join(
        f"def high_{i}(aws_thing):\n    return 'through' + aws_thing\n" for i in range(300)
    )
    assert not has_secret("a.py", filler, plugins)
    assert has_secret("a.py", filler + secret + "\n" + filler, plugins)


def test_band_index_decides_as_datasketch_lsh(tmp_path, monkeypatch) -> None:
    # Guards the near-duplicate index: on real functions and edited copies of them (so that
    # near-duplicates exist), BandIndex finds exactly the near-duplicates datasketch's
    # MinHashLSH (same threshold, query then insert) finds, with datasketch's permutations.
    import numpy as np
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    from codetune.data import worker
    from codetune.data.lsh import BandIndex

    monkeypatch.setenv("CODETUNE_HOME", str(tmp_path))  # the parameter cache starts empty
    perm = worker.minhash_permutations(128)
    ref_perm = MinHash(num_perm=128, seed=1, scheme="affine32").permutations
    assert all((x == y).all() for x, y in zip(perm, ref_perm, strict=True))
    worker._STATE.update(perm=perm)
    codes = [code for code, *_ in _segments()][:300]
    rng = random.Random(0)
    edited = []
    for code in codes[:150]:  # one or two lines changed: some stay above the threshold
        lines = code.split("\n")
        for _ in range(rng.choice((1, 2))):
            i = rng.randrange(len(lines))
            lines[i] = lines[i] + "  # x" if rng.random() < 0.5 else lines[i].replace("a", "b")
        edited.append("\n".join(lines))
    sketches = [worker.minhash_of(worker.normalize(c)) for c in codes + edited]
    ref = MinHashLSH(threshold=0.85, num_perm=128)
    ours = BandIndex(0.85, 128)
    want, got = [], []
    for i, sk in enumerate(sketches):
        mh = LeanMinHash(seed=1, hashvalues=np.frombuffer(sk, np.uint32), scheme="affine32")
        want.append(bool(ref.query(mh)))
        ref.insert(i, mh, check_duplication=False)
        got.append(ours.add(sk))
    assert got == want
    assert 20 < sum(want) < len(want) - 100  # both decisions occur, many times


def test_dedup_index_remembers_dropped_functions(tmp_path, monkeypatch) -> None:
    # A near-duplicate chain f1 ~ f2 ~ f3 (f3 not near f1): f3 is dropped too, because the
    # index remembers f2 although f2 was dropped — what makes the decision depend on the
    # earlier functions only, and lets a worker take it early.
    import numpy as np

    from codetune.data.lsh import DedupIndex

    monkeypatch.setenv("CODETUNE_HOME", str(tmp_path))
    index = DedupIndex(0.85, 64)
    (s0, e0), (s1, e1) = index.bands.bands[:2]
    rng = np.random.default_rng(0)
    f1, f2, f3 = (bytearray(rng.integers(0, 2**32, 64, dtype=np.uint32).tobytes()) for _ in "abc")
    f2[s0:e0] = f1[s0:e0]  # f2 shares band 0 with f1
    f3[s1:e1] = f2[s1:e1]  # f3 shares band 1 with f2 only
    sketches = [bytes(f) for f in (f1, f2, f3)]
    assert index.add(b"d1", sketches[0]) is None
    assert index.add(b"d2", sketches[1]) == "near_duplicate"
    assert index.add(b"d3", sketches[2]) == "near_duplicate"
    assert index.add(b"d1", sketches[2]) == "exact_duplicate"
    assert len(index) == 3


def test_worker_flags_the_duplicates_it_has_seen(tmp_path, monkeypatch) -> None:
    # A duplicate the worker has seen (earlier in the file, or in an earlier file it
    # processed) is sent as digest + sketch only, with no work spent on it; the first copy
    # is built in full.
    from codetune.config import load_config
    from codetune.data import worker
    from codetune.data.config import PrepareConfig
    from codetune.data.pipeline import tokenizer_file

    cfg = load_config(PrepareConfig, None, [])
    worker.init_worker(cfg, str(tokenizer_file(None)))
    body = "        total = 0\n        for x in items:\n            total += x * 2\n        return total\n"
    src = f"class A:\n    def f(self, items):\n{body}\nclass B:\n    def f(self, items):\n{body}"
    (tmp_path / "a.py").write_text(src)
    (tmp_path / "b.py").write_text(src.replace("class A", "class C"))
    first = worker.process_file(("a.py", str(tmp_path / "a.py")))
    again = worker.process_file(("b.py", str(tmp_path / "b.py")))
    assert [f.dup for f in first.functions] == [False, True]
    assert [f.dup for f in again.functions] == [True, True]
    built, dup = first.functions
    assert built.mutants and built.code and not dup.code and not dup.mutants
    assert dup.digest == built.digest and dup.minhash == built.minhash
    # a full index starts afresh (bounded memory): earlier files are forgotten, this one not
    monkeypatch.setattr(worker, "WORKER_INDEX_MAX", 0)
    again = worker.process_file(("b.py", str(tmp_path / "b.py")))
    assert [f.dup for f in again.functions] == [False, True]


def test_operator_order_follows_the_weights() -> None:
    # Guards the one-sort weighted sampling: the first operator drawn is op with probability
    # (weight / prior) / sum(weight / prior), as drawing one at a time would give.
    from codetune.config import load_config
    from codetune.data.config import PrepareConfig
    from codetune.data.worker import PRIOR, sample_operators

    weights = {"compare_flip": 1.0, "wrong_variable": 1.0, "missing_colon": 3.0, "arith_op": 0}
    cfg = load_config(PrepareConfig, None, [f"mutation_weights={json.dumps(weights)}"])
    rng = random.Random(0)
    firsts: dict[str, int] = {}
    for _ in range(20_000):
        order = sample_operators(cfg, list(weights), rng)
        assert sorted(order) == ["compare_flip", "missing_colon", "wrong_variable"]
        firsts[order[0]] = firsts.get(order[0], 0) + 1
    share = {op: w / PRIOR[op] for op, w in weights.items() if w}
    total = sum(share.values())
    for op, v in share.items():
        assert abs(firsts[op] / 20_000 - v / total) < 0.015, (op, firsts, share)
