"""The throughput benchmark's Markdown table, without torch: gpu_check_summary.py renders merged runs with it."""
from __future__ import annotations

from typing import Any, Callable


def run_key(row: dict[str, Any]) -> str:
    """What a row measures apart from its mode: the student, and the method when several were timed."""
    if "method" not in row:
        return row["student"]
    cached = " (cached teacher outputs)" if row.get("teacher_outputs") == "cached" else ""
    return f"{row['student']} {row['method']}{cached}"


def group_key(rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """The key that groups a row with its reference row: the student, the method when several were timed, and the
    training attack's PGD steps when rows of several step counts were timed."""
    several_methods = len({r.get("method") for r in rows}) > 1
    several_steps = len({r.get("steps") for r in rows}) > 1

    def key(r: dict[str, Any]) -> str:
        base = run_key(r) if several_methods else r["student"]
        return base + (f" PGD-{r['steps']}" if several_steps else "")

    return key


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows, each row's speed-up over its reference row and its cost over PGD-AT's step."""
    key = group_key(rows)
    reference = {key(r): r["images_per_s"] for r in rows if r["mode"] == "reference"}

    def variant(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["student"], r["mode"], r["settings"]["precision"], r.get("steps")

    pgd_at = {variant(r): r["step_ms"] for r in rows if r.get("method") == "pgd-at"}
    lines = [
        "| student | mode | method | teachers | PGD steps | precision | channels_last | compile | images/s | step ms "
        "| first step s | student f+b ms | teachers ms | ideal ms | efficiency | speed-up vs reference "
        "| step cost vs PGD-AT |",
        "|---|---|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["settings"]
        # "–" when the run had no reference row (or no PGD-AT row) to compare with.
        speedup = f"{r['images_per_s'] / reference[key(r)]:.2f}x" if key(r) in reference else "–"
        base = pgd_at.get(variant(r))
        cost = f"{r['step_ms'] / base:.2f}x" if base else "–"
        teachers = ", ".join(r.get("teachers") or []) or "–"
        if r.get("teacher_outputs") == "cached":
            teachers += " (outputs cached)"
        first = f"{r['first_step_s']:.1f}" if r.get("first_step_s") is not None else "–"
        lines.append(
            f"| {r['student']} | {r['mode']} | {r.get('method', '–')} | {teachers} | {r.get('steps', '–')} "
            f"| {s['precision']} | {s['channels_last']} | {s['compile']} "
            f"| {r['images_per_s']:.1f} | {r['step_ms']:.1f} | {first} | {r['student_fwd_bwd_ms']:.2f} "
            f"| {r['teachers_fwd_ms']:.2f} | {r['ideal_ms']:.1f} | {r['efficiency']:.2f} | {speedup} | {cost} |"
        )
    return "\n".join(lines)
