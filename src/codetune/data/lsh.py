"""Near-duplicate index: MinHash LSH banding with datasketch's parameters and sketches.

The pipeline asks one question per function, in order: "does an earlier kept function share
a band with this one?" (then it is a near-duplicate and dropped), and otherwise adds it.
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

    def add_unless_near(self, sketch: bytes) -> bool:
        """Add ``sketch`` unless it shares a band with one already added; returns whether it
        was added (``False``: a near-duplicate candidate of an earlier one)."""
        if len(sketch) != 4 * self.num_perm:
            raise ValueError(
                f"expected a sketch of {self.num_perm} uint32, got {len(sketch)} bytes"
            )
        keys = [sketch[s:e] for s, e in self.bands]
        if any(k in seen for k, seen in zip(keys, self.seen, strict=True)):
            return False
        for k, seen in zip(keys, self.seen, strict=True):
            seen.add(k)
        return True
