"""The evaluation report: schema validation, charts, a self-contained HTML page, a text table."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.evaluate.suites import SMALL_STRATUM
from codetune.io import temp_file, write_json_atomic, write_text_atomic

SCHEMA_NAME = "report.schema.json"
HEADLINE = {"humaneval": "pass@1", "custom": "pass@1", "bugfix": "exact_fix"}


def schema_path() -> Path:
    """``schemas/report.schema.json``, found like every schema (:mod:`codetune.workflow.schemas`:
    ``$CODETUNE_SCHEMAS_DIR``, a checkout or Lambda asset, or an installed wheel's share/)."""
    from codetune.workflow.schemas import schemas_dir

    return schemas_dir(SCHEMA_NAME) / SCHEMA_NAME


def validate_report(report: dict) -> None:
    """Raise CodetuneError naming the first problems when ``report`` breaks the schema."""
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    errors = sorted(Draft202012Validator(schema).iter_errors(report), key=lambda e: e.path)
    if errors:
        where = "; ".join(
            f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )
        raise CodetuneError(f"report does not follow schemas/{SCHEMA_NAME}: {where}")


def load_report(path: str | Path) -> dict:
    """Read and validate a report.json; CodetuneError when missing, not JSON or off-schema."""
    path = Path(path)
    if not path.is_file():
        raise CodetuneError(f"report {path} does not exist")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CodetuneError(f"{path} is not JSON: {e}") from e
    validate_report(report)
    return report


def compare_names(report: dict) -> list[str]:
    """The extra sides of a report (e.g. ``sft``), in the order they were evaluated."""
    names = list(report.get("compare", {}))
    for s in report["suites"].values():
        names += [n for n in s.get("compare", {}) if n not in names]
    return names


def _table_rows(report: dict) -> list[tuple[str, ...]]:
    """Header + one row per suite and metric: base, extra sides, candidate, change vs base."""
    extra = compare_names(report)
    rows = [("suite", "metric", "n", "base", *extra, "candidate", "change")]
    for suite, s in report["suites"].items():
        parts = [(suite, s["n"], s["base"], s["candidate"], s.get("compare", {}))]
        langs = s.get("languages") or {}
        if set(langs) - {"python"}:  # a breakdown per language (bugfix beyond Python)
            parts += [
                (
                    f"{suite}[{lang}]",
                    n,
                    s["base"].get("by_language", {}).get(lang, {}),
                    s["candidate"].get("by_language", {}).get(lang, {}),
                    {
                        c: m.get("by_language", {}).get(lang, {})
                        for c, m in s.get("compare", {}).items()
                    },
                )
                for lang, n in langs.items()
            ]
        for name, n, base_m, cand_m, comp in parts:
            for metric, base in base_m.items():
                if not isinstance(base, (int, float)):
                    continue
                cand = cand_m.get(metric, 0.0)
                more = [comp.get(c, {}).get(metric) for c in extra]
                rows.append(
                    (
                        name,
                        metric,
                        str(n),
                        f"{base:.3f}",
                        *("-" if v is None else f"{v:.3f}" for v in more),
                        f"{cand:.3f}",
                        f"{cand - base:+.3f}",
                    )
                )
    return rows


def throughput_lines(report: dict) -> list[str]:
    """One line per suite and side: rows, new tokens, wall time, tokens/s (or files scored)."""
    out = []
    for suite, sides in (report.get("generation", {}).get("suites") or {}).items():
        for side, st in sides.items():
            if "rows" in st:
                out.append(
                    f"{suite} {side}: {st['rows']} rows, {st['completion_tokens']} new tokens "
                    f"in {st['seconds']:.1f} s ({st['tokens_per_s']:.1f} tokens/s"
                    + (f", {st['engine']})" if st.get("engine") else ")")
                )
            else:
                out.append(
                    f"{suite} {side}: {st['files']} files, {st['tokens']} tokens scored in "
                    f"{st['seconds']:.1f} s"
                )
    return out


def _side_metrics(suite_entry: dict, side: str) -> dict:
    """One side's metrics in a suite entry: base / candidate, else ``compare.<side>``."""
    if side in ("base", "candidate"):
        return suite_entry[side]
    return suite_entry.get("compare", {}).get(side, {})


def summary_table(report: dict) -> str:
    """Plain-text table: one row per suite and metric, base vs candidate and the change
    (candidate - base), with a column per extra side (e.g. ``sft``) when the report has one."""
    rows = _table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    speed = throughput_lines(report)
    if speed:
        lines += ["", "generation:", *(f"  {x}" for x in speed)]
    gate = report.get("gate", {})
    lines.append("")
    lines.append(f"gate: {'PASSED' if gate.get('passed') else 'FAILED'}")
    lines += [f"  {r}" for r in gate.get("reasons", [])]
    return "\n".join(lines)


def mutation_small_strata(bug: dict) -> list[str]:
    """Operators of a bugfix suite entry with fewer than SMALL_STRATUM problems."""
    if "small_strata" in bug:
        return list(bug["small_strata"])
    return sorted(m for m, c in bug.get("mutations", {}).items() if c < SMALL_STRATUM)


def mutation_labels(bug: dict, ops: list[str]) -> list[str]:
    """The per-operator chart's tick labels: operator, problem count, and "too few" for a
    stratum under SMALL_STRATUM problems."""
    counts = bug.get("mutations", {})
    small = set(mutation_small_strata(bug))
    return [f"{o}\n(n={counts.get(o, '?')}" + (", too few)" if o in small else ")") for o in ops]


def _save_png(fig, path: Path) -> bytes:
    fd, tmp = temp_file(path, ".png")
    os.close(fd)
    fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    os.replace(tmp, path)
    return path.read_bytes()


def write_charts(report: dict, out_dir: Path) -> dict[str, bytes]:
    """``suites.png`` (base vs candidate, headline metric per suite) and, with a bugfix suite,
    ``mutations.png`` (exact-fix rate per mutation operator). Returns name -> PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, bytes] = {}
    suites = report["suites"]
    names = [n for n in suites if n in HEADLINE]  # fractions; the general-code loss is not
    labels = [f"{n}\n{HEADLINE.get(n, '')}" for n in names]
    sides = ["base", *compare_names(report), "candidate"]
    palette = ("#e0a040", "#7fb17f", "#b07fc0")
    colors = ["#9aa5b1", *(palette[i % 3] for i in range(len(sides) - 2)), "#2f6fbb"]
    width = 0.8 / len(sides)
    fig, ax = plt.subplots(figsize=(1.8 + 0.8 * len(sides) * len(names), 3.4))
    xs = range(len(names))
    for i, (side, color) in enumerate(zip(sides, colors, strict=True)):
        values = [_side_metrics(suites[n], side).get(HEADLINE.get(n, ""), 0.0) for n in names]
        off = (i - (len(sides) - 1) / 2) * width
        ax.bar([x + off for x in xs], values, width=width, label=side, color=color)
        for x, v in zip(xs, values, strict=True):
            ax.text(x + off, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of problems")
    ax.set_title(" vs ".join(sides))
    ax.legend(loc="upper right", fontsize=8)
    charts["suites.png"] = _save_png(fig, out_dir / "suites.png")
    plt.close(fig)

    bug = suites.get("bugfix")
    if bug and bug["base"].get("by_mutation"):
        ops = sorted(bug["base"]["by_mutation"])
        b = [bug["base"]["by_mutation"][o] for o in ops]
        c = [bug["candidate"].get("by_mutation", {}).get(o, 0.0) for o in ops]
        small = set(mutation_small_strata(bug))
        fig, ax = plt.subplots(figsize=(1.8 + 1.1 * len(ops), 3.4))
        xs = range(len(ops))
        # A stratum under SMALL_STRATUM problems is drawn faded and hatched and labelled
        # "too few": its bar is a count of one or two problems, not a rate to compare.
        for offset, vals, label, color in (
            (-0.2, b, "base", "#9aa5b1"),
            (0.2, c, "candidate", "#2f6fbb"),
        ):
            bars = ax.bar([x + offset for x in xs], vals, width=0.4, label=label, color=color)
            for bar, o in zip(bars, ops, strict=True):
                if o in small:
                    bar.set_alpha(0.35)
                    bar.set_hatch("//")
        ax.set_xticks(list(xs), mutation_labels(bug, ops), fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("exact-fix rate")
        title = "bugfix: exact fix per mutation operator"
        if small:
            title += f"\n(hatched: fewer than {SMALL_STRATUM} problems, not a rate to read)"
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8)
        charts["mutations.png"] = _save_png(fig, out_dir / "mutations.png")
        plt.close(fig)
    return charts


def render_html(report: dict, charts: dict[str, bytes]) -> str:
    """A self-contained page: summary table, gate verdict, charts inlined as base64 PNGs."""
    esc = html.escape
    header, *body = _table_rows(report)
    head = "".join(f"<th>{esc(c)}</th>" for c in header)
    rows = ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body]
    compared = "".join(
        f"<li><code>{esc(n)}</code>: <code>{esc(src)}</code></li>"
        for n, src in report.get("compare", {}).items()
    )
    if compared:
        compared = f"<p>Also evaluated (not used by the gate):</p><ul>{compared}</ul>"
    gate = report.get("gate", {})
    verdict = "PASSED" if gate.get("passed") else "FAILED"
    color = "#1a7f37" if gate.get("passed") else "#cf222e"
    reasons = "".join(f"<li>{esc(r)}</li>" for r in gate.get("reasons", []))
    imgs = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{esc(name)}</figcaption></figure>'
        for name, data in charts.items()
    )
    settings = esc(json.dumps(report.get("settings", {}), sort_keys=True))
    speed = "".join(f"<li>{esc(x)}</li>" for x in throughput_lines(report))
    if speed:
        speed = f"<h2>Generation</h2><ul>{speed}</ul>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>codetune evaluation {esc(report["runId"])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:960px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
td:first-child,td:nth-child(2){{text-align:left}}figure{{display:inline-block;margin:1em}}
code{{background:#f4f4f4;padding:2px 4px}}</style></head><body>
<h1>codetune evaluation</h1>
<p>run <code>{esc(report["runId"])}</code> — base model <code>{esc(report["baseModel"])}</code>,
adapter <code>{esc(report["adapter"])}</code></p>
<h2>Quality gate: <span style="color:{color}">{verdict}</span></h2><ul>{reasons}</ul>
<h2>Results</h2>
<table><tr>{head}</tr>
{"".join(rows)}</table>
{compared}
{imgs}
{speed}
<h2>Settings</h2><p><code>{settings}</code></p>
<p>Per-problem answers and outcomes: <code>samples.jsonl</code>.</p>
</body></html>
"""


def write_report(report: dict, out_dir: Path) -> None:
    """Validate, then write ``report.json``, the charts and ``report.html`` (each atomically)."""
    validate_report(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(report, out_dir)
    write_text_atomic(out_dir / "report.html", render_html(report, charts))
    # report.json last: a consumer that sees it can rely on the rest being there.
    write_json_atomic(out_dir / "report.json", report)
