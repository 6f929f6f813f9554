"""Write a verification as report.json (schema in docs/verification.md), report.md and an accuracy-vs-eps PNG."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from robustcompress.io import atomic_write, write_json

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_PNG = "accuracy_vs_eps.png"
_STATUS = {"pass": "pass", "warn": "**WARN**", "skip": "skip"}


def plot_accuracy_vs_eps(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Draw every model's accuracy-vs-eps curve from report['eps_sweep'] into a PNG (matplotlib, Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sweep = report.get("eps_sweep")
    if not sweep:
        raise ValueError("the report has no eps sweep to plot; run the verification with eps_sweep=True "
                         "(CLI: --eps-sweep)")
    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [e * 255 for e in sweep["eps"]]
    for i, (label, accs) in enumerate(sweep["accuracy"].items()):
        ax.plot(x, accs, marker="o", linewidth=2.4 if i == 0 else 1.4, label=label, zorder=3 if i == 0 else 2)
    ax.axvline(report["eps"] * 255, color="grey", linestyle="--", linewidth=1,
               label=f"verified eps {report['eps'] * 255:.3g}/255")
    ax.set_xlabel(f"eps ({report.get('norm', 'Linf')}, in 1/255 pixel units)")
    ax.set_ylabel(f"accuracy under {sweep['attack']}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"Accuracy vs eps ({report['n_examples']} images, {report.get('data', {}).get('name', 'data')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _numbers(numbers: Mapping[str, Any]) -> str:
    parts = []
    for key, value in numbers.items():
        if key == "time_s":
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.3g}")
        elif isinstance(value, (list, dict)):
            parts.append(f"{key} {json.dumps(value, default=str)[:160]}")
        else:
            parts.append(f"{key} {value}")
    return "; ".join(parts).replace("|", "\\|") or "(no numbers)"


def render_markdown(report: Mapping[str, Any], plot_name: str | None = None) -> str:
    """A GitHub-readable report: verdict, accuracy table, sanity checks, eps sweep, gate, settings."""
    model = report.get("model", {})
    data = report.get("data", {})
    n_warn = sum(c["status"] == "warn" for c in report["checks"])
    verdict = ("all sanity checks passed" if n_warn == 0 else
               f"{n_warn} sanity check{'s' if n_warn > 1 else ''} warn: the robust accuracy below may be an "
               "overestimate")
    gate = report.get("gate")
    lines = [
        f"# Robustness verification: {model.get('name', 'model')}",
        "",
        f"**{'OK' if n_warn == 0 else 'WARNING'}**: {verdict}."
        + ("" if gate is None else f" Gate: **{'PASSED' if gate['passed'] else 'FAILED'}**."),
        "",
        f"{report['n_examples']} images of {data.get('name', 'the data')}, {report['norm']} eps = "
        f"{report['eps']:.4f} ({report['eps_255']:.3g}/255), seed {report['seed']}, batch size "
        f"{report['batch_size']}, device {report['device']} ({report.get('device_name', '')})"
        + (f", preset `{report['preset']}`" if report.get("preset") else "") + ".",
        "",
        "| attack | accuracy | time (s) |",
        "|---|---:|---:|",
        f"| clean | {_pct(report['clean_acc'])} | {report['timings_s'].get('clean', 0):.1f} |",
    ]
    for name, acc in report["robust_acc"].items():
        lines.append(f"| {name} | {_pct(acc)} | {report['timings_s'].get(name, 0):.1f} |")
    lines += [
        f"| **worst case** (per sample, over all of the above) | **{_pct(report['worst_case_acc'])}** | |",
        "",
        "## Gradient-masking sanity checks",
        "",
        "| check | status | what it found |",
        "|---|---|---|",
    ]
    for check in report["checks"]:
        lines.append(f"| {check['name']} | {_STATUS.get(check['status'], check['status'])} | "
                     f"{check['message'].replace('|', '/')} |")
    if not report["checks"]:
        lines.append("| (checks were not run) | | |")
    lines += ["", "<details><summary>numbers behind the checks</summary>", ""]
    lines += [f"- **{c['name']}**: {_numbers(c['numbers'])}" for c in report["checks"]]
    lines += ["", "</details>", ""]
    sweep = report.get("eps_sweep")
    if sweep:
        labels = list(sweep["accuracy"])
        lines += [f"## Accuracy vs eps ({sweep['attack']})", ""]
        if plot_name:
            lines += [f"![accuracy vs eps]({plot_name})", ""]
        lines += ["| eps | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for i, eps in enumerate(sweep["eps"]):
            lines.append(f"| {eps * 255:.3g}/255 | " + " | ".join(_pct(sweep["accuracy"][k][i]) for k in labels) + " |")
        lines.append("")
    if gate is not None:
        lines += ["## Gate", ""]
        lines += [f"- {'met' if r['met'] else '**not met**'}: `{r['text']}` (measured {r['value']:.4f})"
                  for r in gate["requirements"]]
        lines += [f"- **failure**: {f}" for f in gate["failures"] if f.startswith("sanity check")]
        lines.append("")
    lines += ["## Attack settings", ""]
    lines += [f"- **{name}**: {json.dumps(s)}" for name, s in report["attack_settings"].items()]
    for name, messages in report.get("attack_warnings", {}).items():
        lines += [f"- AutoAttack flag during {name}: {m}" for m in messages]
    lines += [
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()),
        "",
        f"Created {report.get('created', '')} with "
        + ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items()) + ".",
        "",
    ]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any] | Any, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md and (when the report has an eps sweep) accuracy_vs_eps.png into out_dir.

    ``report`` is a Verification or its ``to_dict()``. Returns the paths written, by kind.
    """
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the report folder {out} ({exc.strerror}); pass a writable --out") from exc
    paths: dict[str, Path] = {}
    if data.get("eps_sweep"):
        paths["plot"] = plot_accuracy_vs_eps(data, out / PLOT_PNG)
    files = {**paths, "json": out / REPORT_JSON, "markdown": out / REPORT_MD}
    data["files"] = {kind: p.name for kind, p in files.items()}
    write_json(out / REPORT_JSON, data, default=str)
    markdown = render_markdown(data, PLOT_PNG if "plot" in paths else None)
    atomic_write(out / REPORT_MD, lambda tmp: Path(tmp).write_text(markdown))
    paths["json"], paths["markdown"] = out / REPORT_JSON, out / REPORT_MD
    return paths


def format_summary(result: Any) -> str:
    """A Verification as a few printable lines: clean, each attack, the per-sample worst case, the checks' warnings."""
    report, model = result.report, result.model
    lines = [f"{model.get('label', model.get('name'))}: {report.n_examples} images of {result.data.get('name')}, "
             f"{report.norm} eps {report.eps:.4f} ({report.eps * 255:.3g}/255), device {report.device}"]
    if model.get("attacked_via"):
        lines.append(f"attacks: {model['attacked_via']}")
    lines.append(f"  {'clean':16s} {report.clean_acc:.4f}")
    for name, acc in report.robust_acc.items():
        lines.append(f"  {name:16s} {acc:.4f}   ({report.timings_s.get(name, 0):.1f} s)")
    lines.append(f"  {'worst-case':16s} {report.worst_case_acc:.4f}   (per sample, over every attack above)")
    if result.checks:
        counts = {s: sum(c.status == s for c in result.checks) for s in ("pass", "warn", "skip")}
        lines.append(f"sanity checks: {counts['pass']} pass, {counts['warn']} warn, {counts['skip']} skip")
        lines += [f"  WARN {c.name}: {c.message}" for c in result.checks if c.status == "warn"]
    return "\n".join(lines)
