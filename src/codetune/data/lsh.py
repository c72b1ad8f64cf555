"""Near-duplicate index: MinHash LSH banding with datasketch's parameters and sketches.

The pipeline asks one question per function, in order: "does an earlier function share a
band with this one?" (then it is a near-duplicate and dropped); either way it is added.
datasketch's ``MinHashLSH`` answers it, but builds a ``LeanMinHash`` object, byte-swaps each
band and keeps key lists for every insert — measured at about a third of the main process's
work on site-packages. Here a band is a slice of the sketch's bytes and the index is one set
of band values per band: the same bands (datasketch's optimal ``(b, r)`` for the threshold,
the same hash ranges), so the same functions collide (a test compares the two on real code).

The permutations and band layout come from datasketch; they are cached on disk because
importing datasketch (scipy) costs about a second per process.
"""

from __future__ import annotations

import json
from importlib.metadata import version

import numpy as np

from codetune.io import write_json_atomic
from codetune.paths import codetune_home


def _params(num_perm: int, threshold: float) -> dict:
    """datasketch's affine32 permutations (seed 1) and LSH hash ranges, cached on disk."""
    key = f"minhash-{num_perm}-{threshold}-datasketch-{version('datasketch')}.json"
    path = codetune_home() / "prepare" / key
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    from datasketch import MinHash, MinHashLSH

    a, b = MinHash(num_perm=num_perm, seed=1, scheme="affine32").permutations
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    value = {
        "a": [int(x) for x in a],
        "b": [int(x) for x in b],
        "ranges": [[int(s), int(e)] for s, e in lsh.hashranges],
    }
    try:
        write_json_atomic(path, value)
    except OSError:  # a read-only home: recomputed next time
        pass
    return value


def permutations(num_perm: int, threshold: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of datasketch's ``MinHash(num_perm, seed=1, scheme="affine32")``."""
    p = _params(num_perm, threshold)
    return np.asarray(p["a"], np.uint32), np.asarray(p["b"], np.uint32)


class BandIndex:
    """Sketches (uint32 MinHash values as bytes) banded as datasketch's ``MinHashLSH``."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        self.bands = [(s * 4, e * 4) for s, e in _params(num_perm, threshold)["ranges"]]
        self.seen: list[set[bytes]] = [set() for _ in self.bands]
        self.num_perm = num_perm

    def add(self, sketch: bytes) -> bool:
        """Add ``sketch``; returns whether it shared a band with one added before (a
        near-duplicate candidate of an earlier one: datasketch's query, then insert)."""
        if len(sketch) != 4 * self.num_perm:
            raise ValueError(
                f"expected a sketch of {self.num_perm} uint32, got {len(sketch)} bytes"
            )
        near = False
        for (s, e), seen in zip(self.bands, self.seen, strict=True):
            k = sketch[s:e]
            if k in seen:
                near = True
            else:
                seen.add(k)
        return near

    def clear(self) -> None:
        for seen in self.seen:
            seen.clear()


class DedupIndex:
    """Exact (digest of the normalized code) then near (MinHash bands) duplicates, in order.

    Every function offered is remembered, duplicates included: a function is dropped when it
    repeats or resembles *any* earlier one, so a near-duplicate chain (f1 ~ f2 ~ f3) cannot
    put f1 and f3 in two splits, and whether a function is dropped depends only on the
    functions before it — which is what lets a worker that has seen some of them decide
    early (see ``worker.process_file``) exactly as the main process will."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        self.digests: set[bytes] = set()
        self.bands = BandIndex(threshold, num_perm)

    def add(self, digest: bytes, sketch: bytes) -> str | None:
        """Remember a function; returns why it is a duplicate of an earlier one
        (``"exact_duplicate"`` / ``"near_duplicate"``), or ``None``."""
        if digest in self.digests:
            return "exact_duplicate"  # its bands are those of the earlier copy
        self.digests.add(digest)
        return "near_duplicate" if self.bands.add(sketch) else None

    def __len__(self) -> int:
        return len(self.digests)

    def clear(self) -> None:
        self.digests.clear()
        self.bands.clear()
