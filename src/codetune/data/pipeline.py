"""``prepare`` end to end: discover → per-file work (2 processes) → dedup → split → write.

The main process consumes per-file results in discovery order, so every decision that spans
files (exact and near-duplicate removal, the mutation balance, per-task limits) is made in
one deterministic sequence: the same input, config and seed give byte-identical outputs.
Outputs are written into a temporary directory that is renamed into place only on success.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from codetune import __version__
from codetune.data.config import OPERATORS, PrepareConfig
from codetune.data.discover import iter_files
from codetune.data.secrets import check_plugins
from codetune.data.worker import (
    GC_EVERY_FILES,
    FileResult,
    init_pool_worker,
    init_worker,
    minhash_permutations,
    pause_gc,
    process_file,
    resume_gc,
)
from codetune.errors import CodetuneError
from codetune.io import atomic_dir, read_jsonl, write_json_atomic
from codetune.prompts import messages

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
BATCH_FILES = 512  # paths handed to the pool at a time: bounds memory on any tree size


def split_of(rel: str, fractions: dict[str, float], seed: int = 0) -> str:
    """The split of file ``rel``: a stable hash of the path (every function of a file, and
    both tasks made from it, land in the same split)."""
    h = hashlib.sha256(f"{seed}:{rel}".encode()).digest()
    x = int.from_bytes(h[:8], "big") / 2**64
    acc = 0.0
    for name in SPLITS:
        acc += fractions[name]
        if x < acc:
            return name
    return SPLITS[-1]


def _order_key(seed: int, rel: str) -> bytes:
    """Sort key of file ``rel`` in the shuffled file order (independent of the split hash)."""
    return hashlib.sha256(f"{seed}:order:{rel}".encode()).digest()


def split_quotas(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """``total`` examples shared among the splits by ``fractions`` (largest remainder), each
    split with a nonzero fraction getting at least one when ``total`` allows."""
    raw = {s: total * fractions[s] for s in SPLITS}
    quota = {s: int(raw[s]) for s in SPLITS}
    for s in sorted(SPLITS, key=lambda s: quota[s] - raw[s])[: total - sum(quota.values())]:
        quota[s] += 1
    for s in SPLITS:
        if fractions[s] > 0 and quota[s] == 0:
            donor = max(SPLITS, key=lambda d: quota[d])
            if quota[donor] > 1:
                quota[donor] -= 1
                quota[s] = 1
    return quota


def record_id(task: str, msgs: list[dict]) -> str:
    """sha256 of the record's content (its task and messages as sorted, compact JSON)."""
    import orjson

    blob = orjson.dumps({"messages": msgs, "task": task}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def record_line(task: str, msgs: list[dict], meta: dict) -> bytes:
    """The JSONL line of one record — ``orjson.dumps(rec, option=OPT_SORT_KEYS)`` of
    ``{"id": record_id(task, msgs), "task", "messages", "meta"}`` plus a line break — with
    the messages encoded once for both the id and the line (a test checks the equality).
    orjson, not ``json``: encoding the records was most of the main process's work."""
    import orjson

    m = orjson.dumps(msgs, option=orjson.OPT_SORT_KEYS)
    t = orjson.dumps(task)
    rid = hashlib.sha256(b'{"messages":' + m + b',"task":' + t + b"}").hexdigest()
    meta_json = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)
    return b'{"id":"%s","messages":%s,"meta":%s,"task":%s}\n' % (rid.encode(), m, meta_json, t)


def tokenizer_file(spec: str | None) -> Path:
    """``tokenizer.json`` of the base model ``spec`` (None: the embedded model)."""
    from codetune.model import resolve_base_model

    d = Path(resolve_base_model(spec))
    f = d / "tokenizer.json"
    if not f.is_file():
        raise CodetuneError(
            f"tokenizer: {d} has no tokenizer.json (a fast tokenizer is needed to measure "
            "lengths); set tokenizer= to a model directory that has one"
        )
    return f


class _Overheads:
    """Tokens a rendered chat adds around the code (chat template + prompt text), measured
    with the model's own chat template via ``prompts.render_chat``. Loaded on a thread so the
    transformers import overlaps with the workers' first files; kept per process."""

    _cache: dict[tuple, _Overheads] = {}

    @classmethod
    def of(cls, spec: str | None, tok_file: Path) -> _Overheads:
        key = (spec, str(tok_file))
        if key not in cls._cache or cls._cache[key]._error is not None:
            cls._cache[key] = cls(spec, tok_file)
        return cls._cache[key]

    def __init__(self, spec: str | None, tok_file: Path) -> None:
        self._value: dict[str, int] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(spec, tok_file), daemon=True)
        self._thread.start()

    def _load(self, spec, tok_file) -> None:
        try:
            self._value = self._cached(spec, tok_file)
        except BaseException as e:  # re-raised in the main thread by get()
            self._error = e

    @staticmethod
    def _cached(spec, tok_file: Path) -> dict[str, dict[str, int]]:
        # Loading transformers costs 5-30 s on a busy 2-core box; the numbers depend only on
        # the tokenizer, its chat template and the prompt texts, so they are cached on disk
        # under a key made of exactly those.
        import inspect

        from codetune import languages, prompts
        from codetune.io import write_json_atomic
        from codetune.paths import codetune_home

        d = tok_file.parent
        # the prompt texts: their templates and how they name each language
        h = hashlib.sha256(inspect.getsource(prompts).encode())
        h.update(inspect.getsource(languages).encode())
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (d / name).is_file():
                h.update(name.encode() + (d / name).read_bytes())
        cache = codetune_home() / "prepare" / f"overheads-{h.hexdigest()[:24]}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(d))
        raw = Tokenizer.from_file(str(tok_file))

        def n(s: str) -> int:
            return len(raw.encode(s, add_special_tokens=False).ids)

        from codetune.languages import SUPPORTED

        code, answer = "x = 1", "y = 2"
        value: dict[str, dict[str, int]] = {}
        for lang in SUPPORTED:
            for task in prompts.TASKS:
                msgs = messages(task, code, answer, language=lang)
                full = prompts.render_chat(hf, msgs, add_generation_prompt=False)
                value.setdefault(lang, {})[task] = n(full) - n(code) - n(answer)
        write_json_atomic(cache, value)
        return value

    def get(self, task: str, language: str = "python") -> int:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value[language][task]


@dataclass
class _Stats:
    files_seen: int = 0
    files_used: int = 0
    bytes_seen: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    fn_skipped: Counter = field(default_factory=Counter)
    functions: int = 0
    per_task: Counter = field(default_factory=Counter)
    per_mutation: Counter = field(default_factory=Counter)
    per_split: Counter = field(default_factory=Counter)
    per_task_split: Counter = field(default_factory=Counter)
    per_language_task: Counter = field(default_factory=Counter)  # "java/bugfix" -> examples
    per_language_mutation: Counter = field(default_factory=Counter)  # (language, op): balance
    files_by_language: dict[str, Counter] = field(default_factory=dict)
    tokens: dict[str, list[int]] = field(default_factory=lambda: {"bugfix": [], "complete": []})

    def skip(self, reason: str, rel: str) -> None:
        self.skipped[reason] += 1
        ex = self.skipped_examples.setdefault(reason, [])
        if len(ex) < 20:
            ex.append(rel)


def _results(
    files: Iterator[tuple[str, str]], cfg: PrepareConfig, tok_file: Path, overheads: dict
) -> Iterator[FileResult]:
    """Per-file results in discovery order, computed by ``cfg.worker_count()`` processes."""
    perm = minhash_permutations(cfg.num_perm, cfg.near_dup_threshold)
    workers = cfg.worker_count()
    if workers == 1:
        init_worker(cfg, str(tok_file), perm, overheads)
        yield from map(process_file, files)
        return
    import multiprocessing as mp

    # spawn, not fork: the main process runs a thread importing transformers, and forking
    # during an import can leave a child holding the import lock forever.
    ctx = mp.get_context("spawn")
    with ctx.Pool(
        workers, initializer=init_pool_worker, initargs=(cfg, str(tok_file), perm, overheads)
    ) as pool:
        while True:
            batch = list(itertools.islice(files, BATCH_FILES))
            if not batch:
                return
            yield from pool.imap(process_file, batch, chunksize=4)


def _token_stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "min": v[0],
        "mean": round(sum(v) / len(v), 1),
        "p50": v[len(v) // 2],
        "p95": v[min(len(v) - 1, int(len(v) * 0.95))],
        "max": v[-1],
    }


def prepare(
    cfg: PrepareConfig,
    codebase: Path,
    out: Path,
    *,
    shard_index: int = 0,
    num_shards: int = 1,
    progress: bool = True,
) -> dict:
    """Build the dataset of ``codebase`` into ``out``; returns the manifest.

    Raises ``CodetuneError`` when the codebase is missing or empty, when no file matches, when
    no file parses, or when nothing survives the filters; ``out`` is then left untouched.
    """
    t0 = time.time()
    codebase = Path(codebase)
    if not codebase.is_dir():
        raise CodetuneError(f"--codebase {codebase}: not a directory; point it at your source tree")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise CodetuneError(
            f"--shard-index {shard_index} --num-shards {num_shards}: need 0 <= index < shards"
        )
    check_plugins(cfg.secret_plugins)
    tok_file = tokenizer_file(cfg.tokenizer)
    overheads = _Overheads.of(cfg.tokenizer, tok_file)

    from tqdm import tqdm

    st = _Stats()
    content_hash = hashlib.sha256()
    order = cfg.file_order
    if order == "auto":
        order = "shuffled" if cfg.max_examples_per_task and not cfg.max_files else "walk"
    files = _discovered(codebase, cfg, st, order, shard_index, num_shards)

    with atomic_dir(out) as tmp:
        handles = {s: open(tmp / f"{s}.jsonl", "wb") for s in SPLITS}
        gc_was = pause_gc()  # see worker.pause_gc; the dedup index is millions of objects
        try:
            examples = _Examples(cfg, overheads, st, handles)
            bar = tqdm(
                desc="prepare",
                unit="file",
                file=sys.stderr,
                disable=not progress or None,
                mininterval=1.0,
            )
            # Workers skip building examples that cannot fit, so they need the template's
            # share first (from the disk cache; measured with transformers on a miss).
            ovh = {
                lang: {t: overheads.get(t, lang) for t in cfg.tasks}
                for lang in cfg.language_names()
            }
            results = _results(files, cfg, tok_file, ovh)
            for res in results:
                _count_file(st, res, content_hash, bar)
                if res.skip:
                    st.skip(res.skip, res.rel)
                    continue
                examples.add_file(res)
                if examples.done():
                    break
            results.close()  # stops the worker pool when a limit ended the run early
            bar.close()
        finally:
            resume_gc(gc_was)
            for h in handles.values():
                h.close()
        durations = {"process_s": round(time.time() - t0, 2)}
        _check_outcome(codebase, cfg, st)
        manifest = _manifest(
            codebase, cfg, st, content_hash.hexdigest(), order, (shard_index, num_shards), tok_file
        )
        manifest["durations"] = durations
        # Durations make manifests differ between runs; the data files never do.
        write_json_atomic(tmp / "manifest.json", manifest)
    manifest["durations"]["total_s"] = round(time.time() - t0, 2)
    return manifest


def _discovered(
    codebase: Path, cfg: PrepareConfig, st: _Stats, order: str, shard_index: int, num_shards: int
) -> Iterator[tuple[str, str]]:
    """The files to read, as (relative path, text), in ``order``; stops at ``max_files``."""
    n = 0
    items = iter_files(codebase, cfg, st.skipped, shard_index, num_shards)
    if order == "shuffled":
        # A run that stops early would otherwise take its examples from the first
        # directories of the walk; in a seeded hash order they sample the whole tree.
        items = iter(sorted(items, key=lambda it: _order_key(cfg.seed, it[0])))
    for item in items:
        if cfg.max_files and n >= cfg.max_files:
            return
        n += 1
        yield item


def _count_file(st: _Stats, res: FileResult, content_hash, bar) -> None:
    """Count a processed file (used or skipped) in the stats, the input hash and the bar."""
    st.files_seen += 1
    if st.files_seen % GC_EVERY_FILES == 0:
        gc.collect()
    st.bytes_seen += res.nbytes
    bar.update(1)
    if st.files_seen % 50 == 0:
        bar.set_postfix_str(
            f"{st.bytes_seen / 1e6:.0f} MB, {st.per_task['bugfix']} bugfix, "
            f"{st.per_task['complete']} complete"
        )
    content_hash.update(f"{res.rel}\0{res.sha256}\n".encode())
    by_lang = st.files_by_language.get(res.language)
    if by_lang is None:
        by_lang = st.files_by_language[res.language] = Counter()
    by_lang["processed"] += 1
    by_lang["bytes"] += res.nbytes


class _Examples:
    """Turns each file's functions into examples written to the split files (``handles``):
    near-duplicates across the whole run are dropped, the bugfix mutation furthest below its
    share is chosen, and each task/split stops at its quota."""

    def __init__(self, cfg: PrepareConfig, overheads: _Overheads, st: _Stats, handles: dict):
        from codetune.data.lsh import DedupIndex

        self.cfg = cfg
        self.overheads = overheads
        self.st = st
        self.handles = handles
        self.index = DedupIndex(cfg.near_dup_threshold, cfg.num_perm)
        self.weights = {op: cfg.mutation_weights.get(op, 0.0) for op in OPERATORS}
        # Per task and split: the cap is shared by the split fractions, each split stops alone.
        self.quota = (
            split_quotas(cfg.max_examples_per_task, cfg.split)
            if cfg.max_examples_per_task
            else None
        )

    def room(self, task: str, split: str) -> bool:
        return self.quota is None or self.st.per_task_split[f"{task}/{split}"] < self.quota[split]

    def done(self) -> bool:
        """Every task and split reached its quota."""
        return self.quota is not None and not any(
            self.room(t, s) for t in self.cfg.tasks for s in SPLITS
        )

    def add_file(self, res: FileResult) -> None:
        # Locals: this loop runs once per function of the codebase.
        cfg, st, overheads, weights = self.cfg, self.st, self.overheads, self.weights
        index_add, room, emit = self.index.add, self.room, self._emit
        st.files_used += 1
        st.files_by_language[res.language]["used"] += 1
        lang = res.language
        st.fn_skipped.update(res.fn_skips)
        split = split_of(res.rel, cfg.split, cfg.seed)
        for fr in res.functions:
            st.functions += 1
            dup = index_add(fr.digest, fr.minhash)
            if dup:
                # Dropped, never assigned elsewhere: a near-duplicate cluster keeps
                # its first member only, so no cluster can straddle two splits.
                st.fn_skipped[dup] += 1
                continue
            if fr.dup:  # the worker's index is a subset of this one: cannot be
                raise RuntimeError(f"{res.rel}:{fr.symbol}: duplicate indexes disagree")
            if fr.over:
                st.fn_skipped["over_max_tokens"] += fr.over
            elif not fr.mutants and not fr.stub:
                st.fn_skipped["no_task"] += 1
            if fr.mutants and room("bugfix", split):
                # Balance: the candidate whose operator is furthest below its share
                # (in its language: operators apply unevenly across languages).
                i = min(
                    range(len(fr.mutants)),
                    key=lambda k: (
                        (st.per_language_mutation[(lang, fr.mutants[k][0])] + 1)
                        / weights[fr.mutants[k][0]]
                    ),
                )
                op, mutant = fr.mutants[i]
                n = overheads.get("bugfix", lang) + res.n_path + fr.n_mutants[i] + fr.n_code
                if n <= cfg.max_tokens:
                    emit("bugfix", mutant, fr.code, res, fr, op, split, n)
                else:
                    st.fn_skipped["over_max_tokens"] += 1
            if fr.stub and room("complete", split):
                n = overheads.get("complete", lang) + res.n_path + fr.n_stub + fr.n_code
                if n <= cfg.max_tokens:
                    emit("complete", fr.stub, fr.code, res, fr, None, split, n)
                else:
                    st.fn_skipped["over_max_tokens"] += 1

    def _emit(self, task: str, code: str, answer: str, res, fr, mutation, split, n) -> None:
        st = self.st
        lang = res.language
        msgs = messages(task, code, answer, path=res.rel, language=lang)
        meta = {
            "path": res.rel,
            "language": lang,
            "symbol": fr.symbol,
            "lineno": fr.lineno,
            "mutation": mutation,
            "split": split,
            "tokens": n,
        }
        self.handles[split].write(record_line(task, msgs, meta))
        st.per_task[task] += 1
        st.per_split[split] += 1
        st.per_task_split[f"{task}/{split}"] += 1
        st.per_language_task[f"{lang}/{task}"] += 1
        st.tokens[task].append(n)
        if mutation:
            st.per_mutation[mutation] += 1
            st.per_language_mutation[(lang, mutation)] += 1


def _manifest(
    codebase: Path,
    cfg: PrepareConfig,
    st: _Stats,
    input_sha256: str,
    order: str,
    shard: tuple[int, int],
    tok_file: Path,
) -> dict:
    """manifest.json without its ``durations``."""
    return {
        "codetune_version": __version__,
        "codebase": str(codebase),
        "input_sha256": input_sha256,
        "config": cfg.to_dict(),
        "shard": {"index": shard[0], "count": shard[1]},
        "workers": cfg.worker_count(),
        "tokenizer": str(tok_file.parent),
        "files": {
            "order": order,
            "processed": st.files_seen,
            "used": st.files_used,
            "bytes": st.bytes_seen,
            "skipped": dict(sorted(st.skipped.items())),
            "skipped_examples": st.skipped_examples,
            "by_language": {
                lang: dict(sorted(c.items())) for lang, c in sorted(st.files_by_language.items())
            },
        },
        "functions": {
            "extracted": st.functions,
            "skipped": dict(sorted(st.fn_skipped.items())),
        },
        "counts": {
            "task": dict(sorted(st.per_task.items())),
            "mutation": dict(sorted(st.per_mutation.items())),
            "split": dict(sorted(st.per_split.items())),
            "task_split": dict(sorted(st.per_task_split.items())),
            "language_task": dict(sorted(st.per_language_task.items())),
            "language_mutation": {
                f"{lang}/{op}": n for (lang, op), n in sorted(st.per_language_mutation.items())
            },
        },
        "tokens": {t: _token_stats(v) for t, v in st.tokens.items()},
    }


class NothingToPrepare(CodetuneError):
    """The codebase holds no file of the configured languages (or no file at all)."""


def _check_outcome(codebase: Path, cfg: PrepareConfig, st: _Stats) -> None:
    if st.files_seen == 0:
        if not any(codebase.iterdir()):
            raise NothingToPrepare(f"--codebase {codebase}: the directory is empty")
        raise NothingToPrepare(
            f"--codebase {codebase}: no file matches languages={list(cfg.language_names())} "
            f"include={cfg.include} (skipped: {dict(st.skipped)}); change "
            "languages/include/exclude/exclude_dirs with --set"
        )
    if st.files_used == 0:
        raise CodetuneError(
            f"--codebase {codebase}: none of the {st.files_seen} matching files could be used "
            f"(skipped: {dict(st.skipped)}); is it source of "
            f"{', '.join(cfg.language_names())} that parses?"
        )
    if not sum(st.per_task.values()):
        raise CodetuneError(
            f"--codebase {codebase}: {st.functions} functions found but no example survived "
            f"the filters ({dict(st.fn_skipped)}); relax min_function_lines or max_tokens"
        )


def merge(shards: list[Path], out: Path, cfg: PrepareConfig) -> dict:
    """Merge shard outputs into one dataset, removing exact and near duplicates across shards.

    A function is identified by (path, symbol); the first shard (in the given order) that
    holds a function, or a near-duplicate of it, keeps it. Splits are by path hash, so the
    shards already agree on them. Raises ``CodetuneError`` for a missing shard directory.
    """
    import orjson

    from codetune.data import worker
    from codetune.data.lsh import DedupIndex
    from codetune.prompts import extract_code

    t0 = time.time()
    for d in shards:
        if not (Path(d) / "manifest.json").is_file():
            raise CodetuneError(f"--merge {d}: not a prepared dataset (no manifest.json)")
    worker._STATE.update(cfg=cfg, perm=minhash_permutations(cfg.num_perm, cfg.near_dup_threshold))
    index = DedupIndex(cfg.near_dup_threshold, cfg.num_perm)
    owner: dict[tuple[str, str], int | None] = {}  # (path, symbol) → owning shard, or None
    written: set[str] = set()  # record ids (overlapping shards hold identical records)
    counts: Counter = Counter()
    per_task: Counter = Counter()
    per_split: Counter = Counter()
    per_mutation: Counter = Counter()
    per_language_task: Counter = Counter()
    dropped: Counter = Counter()

    with atomic_dir(out) as tmp:
        for split in SPLITS:
            with open(tmp / f"{split}.jsonl", "wb") as fh:
                for i, d in enumerate(shards):
                    f = Path(d) / f"{split}.jsonl"
                    if not f.is_file():
                        continue
                    for rec in read_jsonl(f):
                        key = (rec["meta"]["path"], rec["meta"]["symbol"])
                        lang = rec["meta"].get("language") or "python"
                        if key not in owner:
                            code = extract_code(rec["messages"][-1]["content"])
                            norm = worker.normalize(code, lang)
                            digest = hashlib.blake2b(norm.encode(), digest_size=16).digest()
                            sketch = worker.minhash_of(norm)
                            keep = index.add(digest, sketch) is None
                            owner[key] = i if keep else None
                        # one shard owns a function: another shard's copy of it may carry a
                        # different mutation (each shard balances its own mix)
                        if owner[key] != i or rec["id"] in written:
                            dropped[rec["task"]] += 1
                            continue
                        written.add(rec["id"])
                        fh.write(orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) + b"\n")
                        counts[f"{rec['task']}/{split}"] += 1
                        per_language_task[f"{lang}/{rec['task']}"] += 1
                        per_task[rec["task"]] += 1
                        per_split[split] += 1
                        if rec["meta"].get("mutation"):
                            per_mutation[rec["meta"]["mutation"]] += 1
        if not counts:
            raise CodetuneError(
                f"--merge: the shards {', '.join(map(str, shards))} hold no records"
            )
        parts = [json.loads((Path(d) / "manifest.json").read_text()) for d in shards]
        files = Counter()
        for m in parts:
            for k in ("processed", "used", "bytes"):
                files[k] += (m.get("files") or {}).get(k, 0)
        manifest = {
            "codetune_version": __version__,
            "merged_from": [m.get("input_sha256") for m in parts],
            "input_sha256": hashlib.sha256(
                "\n".join(str(m.get("input_sha256")) for m in parts).encode()
            ).hexdigest(),
            "config": cfg.to_dict(),
            "files": dict(files),
            "counts": {
                "task": dict(sorted(per_task.items())),
                "mutation": dict(sorted(per_mutation.items())),
                "split": dict(sorted(per_split.items())),
                "task_split": dict(sorted(counts.items())),
                "language_task": dict(sorted(per_language_task.items())),
            },
            "dropped_duplicates": dict(sorted(dropped.items())),
            "durations": {"merge_s": round(time.time() - t0, 2)},
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest
