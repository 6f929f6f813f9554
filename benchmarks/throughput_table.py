"""The throughput benchmark's Markdown table, without torch: gpu_check_summary.py renders merged runs with it."""
from __future__ import annotations

from typing import Any


def run_key(row: dict[str, Any]) -> str:
    """What a row measures apart from its mode: the student, and the method when several were timed."""
    if "method" not in row:
        return row["student"]
    cached = " (cached teacher outputs)" if row.get("teacher_outputs") == "cached" else ""
    return f"{row['student']} {row['method']}{cached}"


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows, each row's speed-up over its reference row and its cost over PGD-AT's step."""
    several = len({r.get("method") for r in rows}) > 1
    key = run_key if several else (lambda r: r["student"])
    reference = {key(r): r["images_per_s"] for r in rows if r["mode"] == "reference"}
    pgd_at = {(r["student"], r["mode"]): r["step_ms"] for r in rows if r.get("method") == "pgd-at"}
    lines = [
        "| student | mode | method | teachers | precision | channels_last | compile | images/s | step ms "
        "| student f+b ms | teachers ms | ideal ms | efficiency | speed-up vs reference | step cost vs PGD-AT |",
        "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["settings"]
        # "–" when the run had no reference row (or no PGD-AT row) to compare with.
        speedup = f"{r['images_per_s'] / reference[key(r)]:.2f}x" if key(r) in reference else "–"
        base = pgd_at.get((r["student"], r["mode"]))
        cost = f"{r['step_ms'] / base:.2f}x" if base else "–"
        teachers = ", ".join(r.get("teachers") or []) or "–"
        if r.get("teacher_outputs") == "cached":
            teachers += " (outputs cached)"
        lines.append(
            f"| {r['student']} | {r['mode']} | {r.get('method', '–')} | {teachers} | {s['precision']} "
            f"| {s['channels_last']} | {s['compile']} "
            f"| {r['images_per_s']:.1f} | {r['step_ms']:.1f} | {r['student_fwd_bwd_ms']:.2f} "
            f"| {r['teachers_fwd_ms']:.2f} | {r['ideal_ms']:.1f} | {r['efficiency']:.2f} | {speedup} | {cost} |"
        )
    return "\n".join(lines)
