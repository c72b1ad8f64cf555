"""One construct per unit; each takes keyword-only typed arguments and exposes public attributes."""
