"""The CIFAR-10 benchmark's results: runs merged into one table, statistics over seeds, Markdown and plots."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from repo_paths import REPO, shown, shown_command_line
from table_protocol import (AUTOATTACK, CPU_PROTOCOL_NOTES, ISSUE_METHODS, command_line, read_json, verdict_word,
                            write_json, write_text)

#: Setting fields added after tables were made. Each names the methods it changes; a table written before the
#: field existed still merges when none of its rows is of those methods.
METHOD_LIST_FIELDS_ADDED = ("cached_teacher_outputs_for",)
#: Setting fields added later whose default is what every table written before them did: a table without the field
#: merges with a setting that keeps the default.
FIELDS_ADDED_WITH_DEFAULT = {"precision": "fp32", "aa_block_per_seed": False, "autoattack_column": "fast",
                             "robust_step_size": None, "robust_select": "last"}
#: Setting fields that only say how the robust teacher is made: a change leaves every row that never learnt from a
#: robust teacher comparable (a new recipe for the teacher does not move PGD-AT's rows aside).
ROBUST_TEACHER_FIELDS = ("robust_eps", "robust_steps", "robust_step_size", "robust_epochs", "robust_lr",
                         "robust_train_images", "robust_source", "robust_select")


def same_setting(old: dict[str, Any] | None, new: dict[str, Any], old_rows: Sequence[dict[str, Any]] = ()) -> bool:
    """Whether a table made with ``old`` holds rows comparable with runs under ``new`` (see METHOD_LIST_FIELDS_ADDED)."""
    if old is None:
        return False
    old = dict(old)
    for key, default in FIELDS_ADDED_WITH_DEFAULT.items():
        old.setdefault(key, default)
    for key in METHOD_LIST_FIELDS_ADDED:
        if key in new and key not in old:
            if {r["method"] for r in old_rows} & set(new[key]):
                return False
            old[key] = new[key]
    if not any(role.startswith("robust") for r in old_rows for role in r.get("teachers") or ()):
        for key in ROBUST_TEACHER_FIELDS:
            if key in new:
                old[key] = new[key]
    return json.loads(json.dumps(old)) == json.loads(json.dumps(new))


def same_data(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether two tables' ``data`` records name the same data: the source compared as ``shown`` prints it, since
    tables written before that rule recorded it as one machine's absolute path (``/work/shared/...``)."""
    if old is None:
        return False

    def norm(data: dict[str, Any]) -> dict[str, Any]:  # a relative source is relative to the repository
        return {**data, "source": shown(REPO / data["source"])} if data.get("source") else data
    return norm(old) == norm(new)


def merge_results(path: Path, header: dict[str, Any], new_rows: list[dict[str, Any]], command: str | None = None
                  ) -> dict[str, Any]:
    """Add rows to the table at ``path`` when it was made with the same setting and data; otherwise start over.
    ``command`` (default: this process's, ``command_line()``) joins the table's list of commands."""
    old = read_json(path)
    same = same_setting(old.get("setting"), header["setting"], old.get("rows", [])) and same_data(old.get("data"),
                                                                                                  header["data"])
    if old and not same:
        # Rows of another setting never mix with these; they are kept beside the new table, not thrown away.
        kept = path.with_name(f"{path.stem}.replaced-{old.get('date', 'undated')}{path.suffix}")
        path.replace(kept)
        print(f"note: {path} was made with another setting or data; its rows are kept in {kept}", flush=True)
    # A row trained with a re-made teacher sits beside the row of the same method and seed instead of replacing it.
    rows = {(method_label(r), r["seed"]): r for r in (old.get("rows", []) if same else [])}
    rows.update({(method_label(r), r["seed"]): r for r in new_rows})
    order = {m: i for i, m in enumerate(ISSUE_METHODS)}
    merged_rows = sorted(rows.values(), key=lambda r: (order.get(r["method"], len(order)), method_label(r), r["seed"]))
    commands = list(dict.fromkeys([*(old.get("commands", []) if same else []), command or command_line()]))
    # A table's note stays until a run gives a new one (--note): a run that adds rows has nothing to say about it.
    note = header.get("note") or (old.get("note", "") if same else "")
    return {**header, "note": note, "rows": merged_rows, "commands": commands}


#: The teacher roles of the protocol, in the order the table lists them.
TEACHER_ROLES = ("teacher1", "teacher2", "robust")


def teacher_key(row: dict[str, Any]) -> str:
    """A teacher row's key among the table's teacher rows: its role, 'role re-made DATE' for a re-made teacher, or
    'role retired DATE' for a table's teacher that was retired (retire_teacher)."""
    if row.get("remade_date"):
        return f"{row['role']} re-made {row['remade_date']}"
    return f"{row['role']} retired {row['retired_date']}" if row.get("retired_date") else row["role"]


def retire_teacher(table: dict[str, Any], role: str, date: str, ablations: dict[str, Any] | None = None) -> None:
    """Retire the table's teacher of ``role`` (in place): a teacher that is lost (its machine's cache went with the
    machine) and cannot be made again with the same weights. Its row stays, as 'role retired DATE'; the rows trained
    with it are marked † like those of a re-made teacher (out of the seed means and the verdicts). The teacher made
    for the role after it becomes the table's: the one re-made already, where there is exactly one (its rows lose
    their mark), else the next one made. Ablation rows of the same methods and seeds keep the table row they were
    compared with (``compared_with``: its teachers' weights)."""
    teacher = next((t for t in table.get("teachers", []) if teacher_key(t) == role), None)
    if teacher is None or not teacher.get("weights"):
        raise ValueError(f"the table has no teacher '{role}' with recorded weights to retire; its teachers are "
                         f"{', '.join(teacher_key(t) for t in table.get('teachers', [])) or 'none'}")
    teacher["retired_date"] = date
    marked = {}
    for r in table["rows"]:
        if (r.get("teacher_weights") or {}).get(role) == teacher["weights"]:
            marked[(r["method"], r["seed"])] = dict(r["teacher_weights"])
            r["teachers_remade"] = sorted({*r.get("teachers_remade", []), role})
    for r in (ablations or {}).get("rows", []):
        key = (r["method"].split(" [")[0], r["seed"])
        if key in marked and "compared_with" not in r:
            r["compared_with"] = marked[key]
    successors = [t for t in table["teachers"] if t["role"] == role and t.get("remade_date")]
    if len(successors) == 1:
        successor = successors[0]
        del successor["remade_date"]
        for r in table["rows"]:
            if (r.get("teacher_weights") or {}).get(role) == successor.get("weights"):
                r["teachers_remade"] = [x for x in r.get("teachers_remade", []) if x != role]
                if not r["teachers_remade"]:
                    del r["teachers_remade"]
        table["teachers"] = ordered_teacher_rows({teacher_key(t): t for t in table["teachers"]})


def same_teacher(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two teacher rows describe the same weights: by fingerprint where both have one, otherwise by their
    test numbers (the same setting evaluates the same images with the same attacks and seed)."""
    if old.get("weights") and new.get("weights"):
        return old["weights"] == new["weights"]
    return all(old.get(k) == new.get(k) for k in ("clean", "attacks", "autoattack", "worst_case", "n_test"))


def place_teacher_row(teacher_rows: dict[str, dict[str, Any]], row: dict[str, Any], date: str) -> bool:
    """Put a freshly evaluated teacher's row among the table's; True when it is a re-made teacher.

    A teacher made again from the same recipe is not always the same teacher: another CPU (its kernels add floats
    in another order) gives other weights. The table's row stays, since its rows were trained with it, and the new
    teacher gets a row of its own, 're-made DATE', so rows trained with it are told apart (teachers_remade).
    """
    if row["role"] not in teacher_rows:
        teacher_rows[row["role"]] = row
        return False
    for key, old in teacher_rows.items():  # the table's teacher of this role, or one re-made earlier
        if old["role"] == row["role"] and same_teacher(old, row):
            # the table's row stays; what a newer evaluation adds (weights, per-image verdicts) joins it
            teacher_rows[key] = {**old, "weights": row.get("weights") or old.get("weights"),
                                 **({"per_image": row["per_image"]} if row.get("per_image") else {})}
            return key != row["role"]
    remade = {**row, "remade_date": date}
    teacher_rows[teacher_key(remade)] = remade
    return True


def ordered_teacher_rows(teacher_rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's teacher rows, the protocol's roles first, then any re-made teachers."""
    return ([teacher_rows[r] for r in TEACHER_ROLES if r in teacher_rows]
            + [t for key, t in teacher_rows.items() if key not in TEACHER_ROLES])


def method_label(row: dict[str, Any]) -> str:
    """A row's method as the tables show it: marked † when it was trained with a re-made teacher."""
    return row["method"] + (" †" if row.get("teachers_remade") else "")


def finished_runs(rows: Sequence[dict[str, Any]], teachers: dict[str, str] | None = None) -> set[tuple[str, int]]:
    """(method, seed) of every finished row, the method as run (``"sa-mdrad [bf16]"``): what --skip-done leaves out.
    Not method_label's: its † (re-made teachers) never appears in the label a run is asked for, so a marked row was
    never found and its run repeated. ``teachers`` (role: weights fingerprint of the teacher a run would get now,
    where that is known before making it: a stored teacher) leaves out rows trained with another teacher of a role,
    so their runs are repeated with it."""
    known = teachers or {}
    return {(r["method"], r["seed"]) for r in rows if r.get("status") == "ok"
            and all((r.get("teacher_weights") or {}).get(role, weights) == weights for role, weights in known.items())}


def fmt(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def mean_std(values: Sequence[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


#: The seed methods and what each must beat (issue: "The seed methods must earn their place").
VERDICT_PAIRS = {"akd": ("pgd-at", "ard", "rslad"), "sa-mdrad": ("pgd-at", "trades"), "dual-path": ("pgd-at", "rslad")}


def t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def ci95(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean ± half-width of the 95% confidence interval (Student's t over the seeds); None below two seeds."""
    if len(values) < 2:
        return None
    return statistics.mean(values), t_quantile(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def difference_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float] | None:
    """(mean(a) - mean(b), lower, upper) with a 95% Welch interval; None when either side has fewer than two seeds."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    se = (va + vb) ** 0.5
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(max(1, round(df))) * se
    return diff, diff - half, diff + half


def verdict_lines(results: dict[str, Any], metric: str = "autoattack") -> list[str]:
    """Win / tie / loss of each seed method against its baselines on ``metric``, with the Welch 95% interval."""
    values: dict[str, list[float]] = {}
    for r in results["rows"]:  # a row trained with a re-made teacher is not a seed of the same experiment
        if r["status"] == "ok" and r.get(metric) is not None and not r.get("teachers_remade"):
            values.setdefault(r["method"], []).append(r[metric])
    lines = []
    for method, baselines in VERDICT_PAIRS.items():
        for base in baselines:
            d = difference_ci(values.get(method, []), values.get(base, []))
            if d is None:
                lines.append(f"| {method} | {base} | not yet (needs ≥ 2 seeds of both; have "
                             f"{len(values.get(method, []))} and {len(values.get(base, []))}) | |")
                continue
            diff, lo, hi = d
            word = bold_verdict(lo, hi)
            lines.append(f"| {method} | {base} | {word} | {100 * diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
    return lines


def bold_verdict(low: float, high: float) -> str:
    """verdict_word for a table cell: a win or a loss in bold, a tie plain."""
    word = verdict_word(low, high)
    return word if word == "tie" else f"**{word}**"


def paired_bootstrap(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], draws: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, lower, upper): a 95% percentile interval of mean(a) - mean(b) by a two-level bootstrap.

    ``a[s]`` and ``b[s]`` are the per-image verdicts (robust or not) of two methods for seed s on the same images
    (that seed's block). Each draw resamples the seeds, then within each drawn seed its images, the same images
    for both methods (paired), so the interval carries both training noise (seeds) and image-sampling noise.
    """
    import numpy as np

    if len(a) != len(b) or not a or any(len(x) != len(y) for x, y in zip(a, b)):
        raise ValueError("paired_bootstrap needs the same seeds and images for both methods")
    diffs = [np.asarray(x, dtype=float) - np.asarray(y, dtype=float) for x, y in zip(a, b)]
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for i in range(draws):
        chosen = rng.integers(0, len(diffs), len(diffs))
        means[i] = np.mean([diffs[s][rng.integers(0, len(diffs[s]), len(diffs[s]))].mean() for s in chosen])
    estimate = float(np.mean([d.mean() for d in diffs]))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return estimate, float(lo), float(hi)


def image_noise_lines(state: dict[str, Any]) -> list[str]:
    """What a three-seed verdict (every seed on the same images) becomes with image-sampling noise in it: the
    state written by benchmarks/cpu_scale_image_noise.py (per-block rows of the seed-0 pair and the table's
    difference with both half-widths)."""
    a, b = state["methods"]
    t = state["table"]
    rows = {r.get("sample"): r for r in state["rows"]}

    def cell(r: dict[str, Any]) -> str:
        return f"{100 * r['diff']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]"

    lines = [f"- As published ({b} minus {a}, Welch over seeds {', '.join(map(str, t['seeds']))}, all on the same "
             f"1,000 images): {100 * t['diff']:+.1f} [{100 * t['low']:+.1f}, {100 * t['high']:+.1f}].",
             f"- With image-sampling noise (the Welch half-width and seed 0's paired image-bootstrap half-width added "
             f"in quadrature): {100 * t['diff']:+.1f} [{100 * t['both_low']:+.1f}, {100 * t['both_high']:+.1f}]: "
             f"**{t['verdict']}**."]
    for r in state["rows"]:
        lines.append(f"- Seed 0 on {r['images']} test images: {100 * r['acc'][a]:.1f} vs "
                     f"{100 * r['acc'][b]:.1f}, difference {cell(r)} (paired bootstrap over images).")
    pooled, first = rows.get("all"), rows.get("table")
    if pooled and first:
        # The seeds share the table's images, so that sample's luck is (about) the same for every seed: the
        # published mean moves by seed 0's difference between the table's images and the whole sample.
        shift = pooled["diff"] - first["diff"]
        lines.append(f"- **What the verdict then is**: {t['verdict']} with both noises in the interval; as for its "
                     f"size, seed 0's difference is {100 * first['diff']:+.1f} on the table's images and "
                     f"{100 * pooled['diff']:+.1f} on all {pooled['images'].removeprefix('all ')} images, and moving "
                     f"the three-seed difference by that {100 * shift:+.1f} gives about "
                     f"{100 * (t['diff'] + shift):+.1f} points.")
    return lines


def teacher_margin_lines(results: dict[str, Any]) -> list[str]:
    """Each teacher against PGD-AT's seed-0 student on the teacher's test images, paired image by image: is the
    robust teacher worth distilling? (The teachers' images are the first of seed 0's AutoAttack block, where the
    student has per-image verdicts for PGD-20 and AutoAttack.)"""
    base = next((r for r in results["rows"] if r["method"] == "pgd-at" and r["seed"] == 0 and r["status"] == "ok"
                 and not r.get("teachers_remade") and (r.get("per_image") or {}).get("autoattack")), None)
    if base is None or (base.get("autoattack_images") or [0])[0] != 0:
        return []
    rows, listed = [], []
    for t in results.get("teachers", []):
        flags = t.get("per_image") or {}
        n = len(flags.get("autoattack", ""))
        if not n or t.get("remade_date") or len(base["per_image"]["autoattack"]) < n:
            continue
        cells = []
        for attack in ("pgd20", "autoattack"):
            if attack not in flags or attack not in base["per_image"]:
                cells.append("–")
                continue
            mine = [c == "1" for c in flags[attack]]
            theirs = [c == "1" for c in base["per_image"][attack][:n]]
            diff, lo, hi = paired_bootstrap([mine], [theirs])
            cells.append(f"{100 * statistics.mean(mine):.1f} vs {100 * statistics.mean(theirs):.1f}: "
                         f"**{100 * diff:+.1f}** [{100 * lo:+.1f}, {100 * hi:+.1f}]")
        rows.append(f"| {teacher_key(t)} | {n} | " + " | ".join(cells) + " |")
        listed.append(t["role"])
    if not rows:
        return []
    staged = [r for r in results["rows"] if r["status"] == "ok" and "apgd-t" in (r.get("autoattack_stages") or {})]
    further = [r for r in staged if r["autoattack_stages"]["apgd-t"] - r["autoattack"] > 1e-9]
    versions = {t.get("autoattack_version") for t in results.get("teachers", []) if t.get("per_image")}
    caveat = ""
    if versions == {"fast"} and base.get("autoattack_version") == "standard":
        caveat = (" The teachers run AutoAttack's APGD-CE + APGD-T and the student standard AutoAttack (also FAB-T "
                  "and Square), which can only be lower, so the AutoAttack margin is at most this much; FAB-T and "
                  f"Square broke further images in {len(further)} of the {len(staged)} student rows that record "
                  "AutoAttack's stages.")
    standard_note = ""
    if any(not role.startswith("robust") for role in listed):
        standard_note = (" The standard teachers are listed for contrast: the methods that learn from them "
                         "(SA-MDRAD, MTARD's clean teacher) take their clean-image knowledge, and they have no "
                         "robustness to pass on.")
    return ["", "### Is the robust teacher worth distilling?", "",
            "Each teacher against PGD-AT's seed-0 student on the teacher's test images (the first of seed 0's "
            "AutoAttack block), paired image by image: teacher minus student in points, 95% bootstrap interval over "
            "the images. The issue's goal for the robust teacher is +8 AutoAttack points." + caveat
            + standard_note, "",
            "| teacher | images | PGD-20: teacher vs PGD-AT, margin | AutoAttack: teacher vs PGD-AT, margin |",
            "|---|---|---|---|", *rows]


def paired_verdict_lines(results: dict[str, Any], draws: int = 10_000) -> list[str]:
    """Seed method vs baseline on the seeds both ran: AutoAttack per image (each seed's block), the paired
    difference with its two-level bootstrap interval (images and seeds) and, beside it, the Welch interval over
    the seeds' means (seed noise only when every seed attacks its own block, both noises here)."""
    verdicts: dict[str, dict[int, list[bool]]] = {}
    for r in results["rows"]:
        if r["status"] == "ok" and (r.get("per_image") or {}).get("autoattack") and not r.get("teachers_remade"):
            flags = r["per_image"]["autoattack"]  # a '0'/'1' string (a list of booleans in older rows)
            verdicts.setdefault(r["method"], {})[r["seed"]] = [f in (True, "1") for f in flags]
    lines = []
    for method, baselines in VERDICT_PAIRS.items():
        for base in baselines:
            seeds = sorted(set(verdicts.get(method, {})) & set(verdicts.get(base, {})))
            if len(seeds) < 2:
                lines.append(f"| {method} | {base} | not yet (needs ≥ 2 seeds of both; have {len(seeds)}) | | |")
                continue
            a, b = [verdicts[method][s] for s in seeds], [verdicts[base][s] for s in seeds]
            diff, lo, hi = paired_bootstrap(a, b, draws)
            welch = difference_ci([sum(x) / len(x) for x in a], [sum(x) / len(x) for x in b])
            word = bold_verdict(lo, hi)
            welch_cell = "" if welch is None else f"[{100 * welch[1]:+.1f}, {100 * welch[2]:+.1f}]"
            lines.append(f"| {method} | {base} | {word} | {100 * diff:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                         f"| {welch_cell} |")
    return lines


def precision_lines(results: dict[str, Any]) -> list[str]:
    """Each method trained with another precision (a --variant with --precision) against rows of the same method in
    the protocol's precision *with the same teachers*: the table's own rows, or, where the teachers had to be re-made
    (another machine), rows in the protocol's precision with those re-made teachers (a variant such as
    ``--variant 'fp32' --precision fp32``). The difference of the seed means of clean, every attack and AutoAttack,
    with a 95% Welch interval, and the masking checks of the variant's rows."""
    s = results["setting"]
    protocol_precision = s.get("precision", "fp32")
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in results["rows"]:
        variant = r.get("variant") or {}
        if r["status"] != "ok" or variant.get("method_kwargs") or variant.get("teacher_outputs") or variant.get(
                "teachers"):
            continue
        # the teachers a row learnt from: the table's, or re-made ones (matched by their weights)
        teachers = json.dumps(r.get("teacher_weights"), sort_keys=True) if r.get("teachers_remade") else "table"
        precision = variant.get("precision") or protocol_precision
        groups.setdefault((r["method"].split(" [")[0], teachers), {}).setdefault(precision, []).append(r)
    compared = [(key, p) for key, by in sorted(groups.items()) for p in sorted(by) if p != protocol_precision]
    if not compared:
        return []
    metrics = [("clean", lambda r: r["clean"])] + [(a, lambda r, a=a: r["attacks"].get(a)) for a in s["attacks"]]
    metrics.append(("AutoAttack", lambda r: r["autoattack"]))
    lines = ["", f"## Training precision: {' / '.join(sorted({p for _, p in compared}))} against "
             f"{protocol_precision}", "",
             f"Rows trained in another precision than the table's ({protocol_precision}), with everything else the "
             "protocol's (evaluation always in fp32), minus the rows of the same method and teachers trained in "
             f"{protocol_precision}, in points: the difference of the seed means with a 95% Welch interval. A "
             "difference whose interval lies below 0 means the precision costs accuracy beyond the seed noise. "
             "Teachers re-made on another machine (†) are compared only with rows that learnt from the same re-made "
             "teachers. Cost: the mean training time in calibration units, this precision vs the protocol's; "
             "'(steps)' marks a comparison of the training epochs alone, used where both sides recorded them, "
             "because a one-time pass of the teachers over the training set (teacher_outputs='cached', shared "
             "through its cache) lands in whichever run came first.", "",
             "| method | teachers | precision | seeds | " + " | ".join(name for name, _ in metrics)
             + " | masking checks | train (units), mean |",
             "|---|---|---|---|" + "---|" * len(metrics) + "---|---|"]
    for (method, teachers), precision in compared:
        rows, base = groups[(method, teachers)][precision], groups[(method, teachers)].get(protocol_precision, [])
        cells = []
        for _, get in metrics:
            d = difference_ci([get(r) for r in rows if get(r) is not None],
                              [get(r) for r in base if get(r) is not None])
            cells.append("–" if d is None else f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]")
        cost = precision_cost(rows, base)
        who = "–" if teachers == "table" and not rows[0].get("teachers") else (
            "the table's" if teachers == "table" else "re-made †")
        seeds = ", ".join(str(r["seed"]) for r in rows)
        if not base:
            seeds += f" (no {protocol_precision} rows with these teachers yet)"
        lines.append(f"| {method} | {who} | {precision} | {seeds} | {' | '.join(cells)} | {checks_cell(rows)} "
                     f"| {cost} |")
    return lines


def precision_cost(rows: list[dict[str, Any]], base: list[dict[str, Any]]) -> str:
    """Mean training cost in calibration units, ``rows`` vs ``base``: the training epochs alone (each history
    entry's seconds) where every row of both sides recorded them, else the whole training time ('–' without it)."""
    def epochs_units(r: dict[str, Any]) -> float | None:
        seconds = [h.get("seconds") for h in r.get("history") or []]
        if not seconds or None in seconds or not r.get("unit_s"):
            return None
        return sum(seconds) / r["unit_s"]

    steps, base_steps = [epochs_units(r) for r in rows], [epochs_units(r) for r in base]
    if rows and base and None not in steps + base_steps:
        return f"{statistics.mean(steps):.0f} vs {statistics.mean(base_steps):.0f} (steps)"  # type: ignore[arg-type]
    units = [r["train_units"] for r in rows if r.get("train_units")]
    base_units = [r["train_units"] for r in base if r.get("train_units")]
    return "–" if not units or not base_units else f"{statistics.mean(units):.0f} vs {statistics.mean(base_units):.0f}"


def fmt_setting(name: str, value: Any) -> str:
    if name in ("eps", "step_size", "robust_eps") and isinstance(value, float):
        return f"{value * 255:g}/255"
    if value is None:
        return "all"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def checks_cell(rows: Sequence[dict[str, Any]]) -> str:
    checks = [c for r in rows for c in r.get("masking_checks") or []]
    if not checks:
        return "not run"
    warned = sorted({c["name"] for c in checks if c["status"] == "warn"})
    return "warn: " + ", ".join(warned) if warned else "pass"


#: The CPU-scale table whose ranking the CPU-standard page compares with its own.
CPU_SCALE_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "cifar10_cpu.json"
IMAGE_NOISE_RESULTS = CPU_SCALE_RESULTS.with_name("cifar10_cpu_image_noise.json")
#: The attack-strength audit of the CPU-standard table's seed-0 pair (benchmarks/attack_audit.py).
AUDIT_RESULTS = CPU_SCALE_RESULTS.with_name("cifar10_cpu_standard_audit.json")


def audit_lines(audit: dict[str, Any]) -> list[str]:
    """The CPU-standard page's summary of the attack-strength audit (state written by benchmarks/attack_audit.py):
    how far along it is, what it broke beyond AutoAttack, the AutoAttack-minus-PGD-20 gap split into its steps, and
    the pair's verdict before and after it."""
    methods, done = audit["methods"], audit.get("attacks", {})
    planned = audit.get("planned") or {}
    progress = [f"{m} {len(done.get(m, {}))}" + (f" of {len(planned[m])}" if m in planned else "") for m in methods]
    complete = bool(planned) and all(set(planned[m]) <= set(done.get(m, {})) for m in methods)
    lines = ["", "## Attack-strength audit (seed 0)", "",
             f"`benchmarks/attack_audit.py` attacks the seed-0 students of {' and '.join(methods)} on seed 0's "
             f"AutoAttack block ({audit['images']} test images) with attacks AutoAttack lacks or runs with fewer "
             f"restarts ({audit['restarts']} restarts each: APGD-T over all 9 target classes, APGD-CE and APGD-DLR, "
             "margin PGD-100, multi-targeted PGD-100, transfer from the other student), all in fp32; an image counts "
             f"as robust only if it survives AutoAttack and every audit attack (details: "
             f"{shown(AUDIT_RESULTS.with_suffix('.md'))}). "
             + ("The audit is complete." if complete else
                f"**In progress** (attacks done: {', '.join(progress)}); the verdicts wait for it."), "",
             "| method | AutoAttack (table) | worst case after the audit | broken beyond AutoAttack | PGD-20 | PGD-100 "
             "| APGD-CE (AutoAttack's first stage) | gap: PGD-20 minus AutoAttack |", "|---|" + "---|" * 7]

    def pct(value: float | None) -> str:
        return "–" if value is None or value != value else f"{100 * value:.1f}"

    for m in methods:
        g, extra = audit["gap"][m], audit["extra_breaks"][m]
        by_attack = extra["by_attack"] if isinstance(extra["by_attack"], str) else ", ".join(
            f"{name} {count}" for name, count in extra["by_attack"].items())
        lines.append(f"| {m} | {pct(audit['autoattack'][m])} | {pct(audit['worst_case'][m])} | {extra['count']} of "
                     f"{extra['aa_robust']} ({by_attack}) | {pct(g['pgd20'])} | {pct(g['pgd100'])} | "
                     f"{pct(g['apgd-ce'])} | {pct(g['pgd20'] - g['autoattack'])} |")
    explained = []
    for m in methods:  # where each method's AutoAttack-minus-PGD-20 gap comes from, once its steps are measured
        g = audit["gap"][m]
        steps = [g["pgd20"], g["pgd100"], g["apgd-ce"], g["autoattack"]]
        if any(v is None or v != v for v in steps):
            continue
        transfer = [(name, r["accuracy"]) for name, r in done.get(m, {}).items() if name.startswith("transfer-from-")]
        whitebox = min((r["accuracy"] for name, r in done.get(m, {}).items()
                        if not name.startswith("transfer-from-")), default=None)
        note = "".join(f"; transfer from {name.removeprefix('transfer-from-')} leaves {pct(acc)}" for name, acc in
                       transfer)
        if transfer and whitebox is not None and all(acc > whitebox for _, acc in transfer):
            note += f", above every white-box attack (at least {pct(whitebox)}): no sign of gradient masking"
        explained += [f"- **{m}**: of its {pct(steps[0] - steps[3])}-point gap, more iterations (PGD-20 to PGD-100) "
                      f"give {pct(steps[0] - steps[1])}, APGD's adaptive step size (to APGD-CE) "
                      f"{pct(steps[1] - steps[2])} and AutoAttack's targeted and black-box stages (APGD-T, FAB-T, "
                      f"Square) {pct(steps[2] - steps[3])}{note}."]
    lines += [""] + explained if explained else []
    if "verdict" in audit and len(methods) == 2:
        v = audit["verdict"]

        def diff(name: str) -> str:
            return (f"{100 * v[name]['difference']:+.1f} [{100 * v[name]['low']:+.1f}, "
                    f"{100 * v[name]['high']:+.1f}]: {bold_verdict(v[name]['low'], v[name]['high'])}")
        lines += ["", f"{methods[1]} minus {methods[0]} on these images (seed 0, paired, 95% bootstrap over the "
                      f"images): AutoAttack {diff('autoattack')}; worst case after the audit {diff('worst_case')}."]
    return lines


def method_means(results: dict[str, Any], metric: str = "autoattack") -> dict[str, float]:
    """Each method's mean ``metric`` over its seeds (rows of the protocol's own setting: no variant, own teachers)."""
    values: dict[str, list[float]] = {}
    for r in results["rows"]:
        if r["status"] == "ok" and r.get(metric) is not None and not r.get("variant") and not r.get("teachers_remade"):
            values.setdefault(r["method"], []).append(r[metric])
    return {m: statistics.mean(v) for m, v in values.items()}


def rank_agreement_lines(results: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """How far the cheap protocol's ranking (``reference``) predicts this one: Spearman and Kendall rank correlation
    of the methods' mean AutoAttack accuracy, over the methods both tables have."""
    from scipy.stats import kendalltau, rankdata, spearmanr

    # Rounded, so that methods whose seed means differ only by float noise tie (their ranks are averaged).
    here, there = ({m: round(v, 9) for m, v in method_means(r).items()} for r in (results, reference))
    common = sorted(set(here) & set(there), key=lambda m: (-here[m], m))  # ties by name: a set has no stable order
    lines = ["", "## Does the CPU-scale ranking predict this one?", "",
             "Mean AutoAttack accuracy per method (seeds of the protocol's own setting) here and in the CPU-scale "
             "table (4/255, FGSM-RS, 3 epochs), and the rank correlation over the methods both have (tied methods "
             "share the mean of their ranks).", ""]
    if len(common) < 3:
        return lines + [f"Not yet: {len(common)} method(s) in both tables ({', '.join(common) or 'none'}); a rank "
                        "correlation needs at least 3."]
    ours, theirs = [here[m] for m in common], [there[m] for m in common]
    rho, kendall = spearmanr(ours, theirs).statistic, kendalltau(ours, theirs)
    rank_here, rank_there = rankdata([-v for v in ours]), rankdata([-v for v in theirs])
    lines += ["| method | here: AutoAttack | rank | CPU-scale: AutoAttack | rank |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {100 * here[m]:.1f} | {rank_here[i]:g} | {100 * there[m]:.1f} | {rank_there[i]:g} |"
              for i, m in enumerate(common)]
    # A correlation over a handful of methods can be large by chance; Kendall's p (exact without ties) says how large.
    return lines + ["", f"Spearman's rho {rho:+.2f}, Kendall's tau {kendall.statistic:+.2f} over {len(common)} methods "
                    f"(Kendall's two-sided p = {kendall.pvalue:.2f}: the chance of a correlation this strong, either "
                    "way, if the two rankings were unrelated)."]


def render_markdown(results: dict[str, Any]) -> str:
    """The results file people read: setting, what was reduced, teachers' rows, one row per method."""
    s, env, data = results["setting"], results["environment"], results["data"]
    attacks = list(s["attacks"])
    smoke = results["mode"] == "smoke"
    title = "CIFAR-10 benchmark" + (" — SMOKE RUN (a plumbing check; the numbers mean nothing)" if smoke else "")
    lines = [f"# {title}", ""]
    if results.get("note"):
        lines += [results["note"], ""]
    if results.get("protocol") in CPU_PROTOCOL_NOTES:
        lines += [CPU_PROTOCOL_NOTES[results["protocol"]], ""]
    if results["reduced_from_fixed_setting"]:
        lines += ["**This is not the benchmark's fixed setting.** Changed for this run (fixed → used):", ""]
        lines += [f"- `{k}`: {fmt_setting(k, v[0])} → {fmt_setting(k, v[1])}"
                  for k, v in results["reduced_from_fixed_setting"].items()]
        lines.append("")
    epochs = f"{s['epochs']} epoch{'s' * (s['epochs'] != 1)}"
    aa_standard = f"; standard for {', '.join(s['autoattack_standard_for'])}" if s["autoattack_standard_for"] else ""
    dates = sorted({r.get("date", "") for r in results["rows"]} | {results["date"]})
    lines += [
        f"**Data**: `{shown(data['source'])}`, {data['train_size']} of its {data['train_available']} training images, the first "
        f"{data['test_used']} test images.",
        "",
        f"**Training** (the same for every method): student `{s['student']}` (timm, small-input stem, from scratch), "
        f"{epochs}, SGD lr {s['lr']} momentum {s['momentum']} weight decay {s['weight_decay']}, {s['schedule']} "
        f"schedule, batch {s['batch_size']}, random crop + flip; L∞ eps {fmt_setting('eps', s['eps'])}, "
        f"PGD-{s['steps']} with step "
        f"{fmt_setting('step_size', s['step_size'])}. Each method keeps its own default hyperparameters (per row in the "
        f"JSON).",
        "",
        f"**Evaluation** at eps {fmt_setting('eps', s['eps'])}: clean, {', '.join(attacks) or 'no PGD attacks'} "
        f"(step eps/4, random start; cw30 is PGD on the Carlini-Wagner margin), AutoAttack {s['autoattack']}{aa_standard}; worst case "
        f"counts a test image only if it survives every attack. Masking checks: robustcompress.verify, level "
        f"`{s['checks']}`, transfer attacks from every teacher.",
        "",
        f"**Device**: {env['device']}; torch {env['torch']}; {', '.join(d for d in dates if d)}.",
    ]
    if env.get("load_average") is not None:
        busy = env["load_average"] > env["cpu_count"]
        lines += ["", f"Times are wall-clock seconds on the CPU (1-minute load average {env['load_average']:.1f} on "
                      f"{env['cpu_count']} cores just before the last run started"
                      + ("; other jobs shared the machine, so the times are inflated and noisy)." if busy else
                         "; the machine was otherwise idle then).")]
    t_attacks = [a for a in results["teacher_attacks"] if a not in AUTOATTACK.values()]
    t_aa = any(a in AUTOATTACK.values() for a in results["teacher_attacks"])
    header = ["clean", *t_attacks, *(["AutoAttack"] if t_aa else []), "worst case", "test images", "training time (s)"]
    lines += ["", "## Teachers", "",
              "Shared by every method and seed (made once with seed 0, then cached). Accuracy in %.", "",
              "| teacher | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for t in results["teachers"]:
        aa = [fmt(t["autoattack"]) + f" ({t['autoattack_version']})"] if t_aa else []
        cells = [fmt(t["clean"]), *(fmt(t["attacks"].get(a)) for a in t_attacks), *aa, fmt(t["worst_case"]),
                 str(t["n_test"]), "–" if t["train_time_s"] is None else f"{t['train_time_s']:.0f}"]
        role = (f"{teacher_key(t)} (used only by the rows marked †)" if t.get("remade_date") or t.get("retired_date")
                else t["role"])
        lines.append(f"| {role}: {t['description']} | " + " | ".join(cells) + " |")
    lines += teacher_margin_lines(results)
    header = ["teachers", "clean", *attacks, "AutoAttack", "worst case", "masking checks", "training time (s)", "seeds"]
    lines += ["", "## Students", "", "Accuracy in % on the test images; mean ± std where there are several seeds.", "",
              "| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in results["rows"]:
        by_method.setdefault(method_label(r), []).append(r)
    for method, rows in by_method.items():
        ok = [r for r in rows if r["status"] == "ok"]
        if not ok:
            lines.append(f"| {method} | " + " | ".join(["failed (see below)", *[""] * (len(header) - 1)]) + " |")
            continue
        versions = sorted({r["autoattack_version"] for r in ok if r["autoattack_version"]})
        cells = [
            ", ".join(ok[0]["teachers"]) or "–",
            mean_std([r["clean"] for r in ok]),
            *(mean_std([r["attacks"].get(a) for r in ok]) for a in attacks),
            mean_std([r["autoattack"] for r in ok]) + (f" ({'/'.join(versions)})" if versions else ""),
            mean_std([r["worst_case"] for r in ok]),
            checks_cell(ok),
            f"{statistics.mean(r['train_time_s'] for r in ok):.0f}",
            ", ".join(str(r["seed"]) for r in ok),
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Teachers: `robust` = the robust teacher, `teacher1` / `teacher2` = the standard ones, in the order the "
              "method receives them."]
    if any(r.get("teachers_remade") for r in results["rows"]):
        remade = [teacher_key(t) for t in results["teachers"] if t.get("remade_date")]
        retired = [teacher_key(t) for t in results["teachers"] if t.get("retired_date")]
        why = []
        if remade:
            why.append(f"teachers made again from the same recipes, whose weights differ from those the other rows used "
                       f"({', '.join(remade)}; another CPU adds floats in another order)")
        if retired:
            why.append(f"a teacher the table has retired ({', '.join(retired)}: lost with its machine's cache, it "
                       f"cannot be made again with the same weights; the teacher made for the role after it is the "
                       f"table's)")
        lines += ["", f"†: trained with {' or with '.join(why)}. Their own rows are in the teachers' table. These rows "
                      f"stay out of the seed means and the verdicts."]
    if any(r.get("last_epoch") or r.get("train_units") for r in results["rows"]):
        lines += selection_lines(by_method, attacks)
    if results.get("protocol") in CPU_PROTOCOL_NOTES:
        version = "standard: APGD-CE, APGD-T, FAB-T, Square" if s.get("autoattack_column") == "standard" else (
            "APGD-CE + APGD-T")
        lines += ["", "## Do the seed methods earn their place?", ""]
        if s.get("aa_block_per_seed"):
            lines += [f"AutoAttack accuracy ({version}) of the best-validation checkpoint, seed method minus "
                      "baseline, in points, paired image by image (both methods of a seed attack the same block; "
                      "every seed its own block), with a 95% interval from a bootstrap over seeds and, within "
                      "each, over images (10,000 draws), and the 95% Welch interval over the seeds' means beside "
                      "it. Win: the bootstrap interval above 0; loss: below 0; tie: it contains 0.", "",
                      "| seed method | baseline | verdict | difference [95% bootstrap CI] | Welch 95% CI |",
                      "|---|---|---|---|---|", *paired_verdict_lines(results)]
        else:
            lines += [f"AutoAttack accuracy ({version}) of the best-validation checkpoint, seed method minus "
                      "baseline, in points, with a 95% Welch interval over the seeds (t distribution, "
                      "Welch–Satterthwaite degrees of freedom). Win: the whole interval above 0; loss: below 0; tie: "
                      "it contains 0.", "", "| seed method | baseline | verdict | difference [95% CI] |",
                      "|---|---|---|---|", *verdict_lines(results)]
    if results.get("protocol") == "cpu-scale" and IMAGE_NOISE_RESULTS.is_file():
        noise = json.loads(IMAGE_NOISE_RESULTS.read_text())
        if noise.get("table"):
            lines += ["", "### With image-sampling noise", "",
                      "Every seed above attacked the same 1,000 test images, so the Welch intervals hold training "
                      "noise only. `benchmarks/cpu_scale_image_noise.py` re-attacked the committed seed-0 students "
                      f"on those images and on further ones ({shown(IMAGE_NOISE_RESULTS.with_suffix('.md'))}):", "",
                      *image_noise_lines(noise)]
    if results.get("protocol") == "cpu-standard" and AUDIT_RESULTS.is_file():
        lines += audit_lines(json.loads(AUDIT_RESULTS.read_text()))
    if results.get("protocol") == "cpu-standard" and CPU_SCALE_RESULTS.is_file():
        lines += rank_agreement_lines(results, json.loads(CPU_SCALE_RESULTS.read_text()))
    lines += precision_lines(results)
    failed = [r for r in results["rows"] if r["status"] != "ok"]
    if failed:
        lines += ["", "**Failed runs**:", ""] + [f"- {r['method']} seed {r['seed']}: {r['status']}" for r in failed]
    if results["missing_methods"]:
        lines += ["", "**Not run**, because this robustcompress has no such method registered: "
                  + ", ".join(results["missing_methods"]) + "."]
    warnings = [(r, c) for r in results["rows"] for c in r.get("masking_checks") or [] if c["status"] == "warn"]
    if warnings:
        lines += ["", "**Masking-check warnings** (the robust numbers of these rows may be overestimates):", ""]
        lines += [f"- {r['method']} seed {r['seed']}, `{c['name']}`: {c['message']}" for r, c in warnings]
    lines += ["", "## Commands", "", *[f"    {shown_command_line(c)}" for c in results["commands"]], ""]
    return "\n".join(lines)


def selection_lines(by_method: dict[str, list[dict[str, Any]]], attacks: Sequence[str]) -> list[str]:
    """Best vs last epoch, 95% intervals and cost in calibration units, per method."""
    def ci_cell(values: list[float]) -> str:
        c = ci95(values)
        return "–" if c is None else f"{100 * c[0]:.1f} ± {100 * c[1]:.1f}"

    first = attacks[0] if attacks else None
    lines = ["", "### Best vs last epoch, intervals, cost", "",
             "Best = the epoch with the best PGD-10 accuracy on the validation split (what the table above reports); "
             f"last = the final epoch, on clean and {first or 'the PGD attack'}. 95% CI = mean ± t(0.975, n−1)·sd/√n "
             "over the seeds. Cost in units of ../shared/tools/calibrate.py measured at the start of the same run.", "",
             "| method | best epoch(s) | AutoAttack 95% CI | standard AA (seed 0) | last: clean | "
             f"last: {first} | train (s) | train (units) | eval (units) |", "|---|" + "---|" * 8]
    for method, rows in by_method.items():
        ok = [r for r in rows if r["status"] == "ok"]
        if not ok:
            continue
        epochs = [str((r.get("selection") or {}).get("best_epoch", "last")) for r in ok]
        lasts = [r["last_epoch"] for r in ok if r.get("last_epoch")]
        standard = [r["autoattack_standard"] for r in ok if r.get("autoattack_standard") is not None and r["seed"] == 0]
        units = [r["train_units"] for r in ok if r.get("train_units")]
        eval_units = [r["eval_units"] for r in ok if r.get("eval_units")]
        lines.append("| " + " | ".join([
            method, ", ".join(epochs), ci_cell([r["autoattack"] for r in ok if r.get("autoattack") is not None]),
            fmt(standard[0]) if standard else "–",
            mean_std([x["clean"] for x in lasts]) if lasts else "–",
            mean_std([x["attacks"].get(first) for x in lasts]) if lasts and first else "–",
            f"{statistics.mean(r['train_time_s'] for r in ok):.0f}",
            f"{statistics.mean(units):.0f}" if units else "–",
            f"{statistics.mean(eval_units):.0f}" if eval_units else "–",
        ]) + " |")
    return lines


def render_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars per method (clean, each attack, AutoAttack, worst case), for people who would rather look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in results["rows"]:
        if r["status"] == "ok":
            by_method.setdefault(method_label(r), []).append(r)
    if not by_method:
        return None
    if results.get("protocol") in CPU_PROTOCOL_NOTES:
        return render_scatter(by_method, results, path)
    attacks = {a: (lambda r, a=a: r["attacks"].get(a)) for a in results["setting"]["attacks"]}
    series = {"clean": lambda r: r["clean"], **attacks, "AutoAttack": lambda r: r["autoattack"], "worst case": lambda r: r["worst_case"]}
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(by_method)), 3.8))
    for i, (label, get) in enumerate(series.items()):
        means = [statistics.mean([v for v in map(get, rows) if v is not None] or [float("nan")]) * 100
                 for rows in by_method.values()]
        ax.bar([m + (i - (len(series) - 1) / 2) * width for m in range(len(by_method))], means, width, label=label)
    ax.set_xticks(range(len(by_method)), list(by_method), rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    smoke = " (smoke run)" if results["mode"] == "smoke" else ""
    eps = fmt_setting("eps", results["setting"]["eps"])
    ax.set_title(f"{results['data']['test_used']} CIFAR-10 test images, eps {eps}{smoke}")
    ax.legend(ncol=len(series), fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    from robustcompress.io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def render_scatter(by_method: dict[str, list[dict[str, Any]]], results: dict[str, Any], path: Path) -> Path:
    """Clean accuracy vs AutoAttack accuracy, one point per method (mean over seeds, bars = one std)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    seed_methods = set(VERDICT_PAIRS)
    for method, rows in by_method.items():
        clean = [100 * r["clean"] for r in rows]
        robust = [100 * r["autoattack"] for r in rows if r.get("autoattack") is not None]
        if not robust:
            continue
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        ax.errorbar(statistics.mean(clean), statistics.mean(robust), xerr=sd(clean), yerr=sd(robust),
                    fmt="*" if method in seed_methods else "o", markersize=11 if method in seed_methods else 7,
                    capsize=3, label=f"{method} ({len(rows)} seed{'s' * (len(rows) != 1)})")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("AutoAttack accuracy (%)")
    eps = fmt_setting("eps", results["setting"]["eps"])
    ax.set_title(f"CIFAR-10 JPEGs, {results['setting']['student']}, L∞ eps {eps} (★ = seed method)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    from robustcompress.io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def write_results(out: Path, results: dict[str, Any], name: str, plot: bool = True) -> None:
    """``name``.json, .png and .md in ``out``: the JSON, the plot and the Markdown table that shows it (without the
    plot: JSON and table only, as after each row of a run, where drawing the plot every time cost more than a smoke
    run's training)."""
    write_json(out / f"{name}.json", results)
    plot = render_plot(results, out / f"{name}.png") if plot else None
    markdown = render_markdown(results)
    if plot is not None:
        markdown = markdown.replace("\n## Teachers\n", f"\n![accuracy per method]({plot.name})\n\n## Teachers\n", 1)
    write_text(out / f"{name}.md", markdown)


def validation_of(row: dict[str, Any]) -> tuple[float, float] | None:
    """(clean, PGD-10) on the validation split at a row's selected epoch, or None when it was not selected on it
    (the table's rows and the ablations' alike keep it in their selection record)."""
    best = (row.get("selection") or {}).get("best")
    return None if not best else (best["val_clean"], best["val_pgd10"])


def render_ablations(results: dict[str, Any], table: dict[str, Any], table_name: str) -> str:
    """Ablations on the validation split beside the rows of the same method and seed (and PGD-AT's) of the table
    ``table`` (docs/results/``table_name``.md)."""
    def reference(method: str, seed: int, compared_with: dict[str, str] | None) -> tuple[str, Any] | None:
        """(label, validation numbers) of the table row an ablation row is compared with: the one it names by its
        teachers' weights (compared_with: a retired teacher's row), else the table's own."""
        return next(((method_label(r), validation_of(r)) for r in table.get("rows", [])
                     if r["status"] == "ok" and (r["method"], r["seed"]) == (method, seed)
                     and (r.get("teacher_weights") == compared_with if compared_with is not None
                          else not r.get("teachers_remade"))), None)

    used: dict[tuple[str, int], Any] = {}
    val_n = results["data"].get("val_size") or 0
    se = 100 * (0.4 * 0.6 / val_n) ** 0.5 if val_n else float("nan")
    lines = [
        "# CIFAR-10 ablations on the validation split", "",
        *([results["note"], ""] if results.get("note") else []),
        f"Variants of the seed methods' reconstructed parts (docs/methods.md), trained under the table's protocol "
        f"(`{results.get('protocol')}`, the same student, data, epochs and attack budget) and scored on the "
        f"{val_n} validation images carved out of the training set: clean and PGD-10 accuracy at the epoch "
        "best-robust selection keeps. The test split is never touched here; a variant that wins is made the "
        "method's default and then run on the test split like every other row "
        f"(`docs/results/{table_name}.md`). One standard error of a validation "
        f"PGD-10 accuracy near 40% is about {se:.1f} points: a single-seed difference smaller than about "
        f"{2 * se:.0f} points decides nothing.", "",
        "| variant | changed | seed | val clean | val PGD-10 | vs the default (same seed) | vs PGD-AT (same seed) "
        "| training (s) |", "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | | {r['seed']} | {r['status']} | | | | |")
            continue
        base = r["method"].split(" [")[0]
        variant = r.get("variant") or {}
        changed = ", ".join([*(f"{k}={v}" for k, v in (variant.get("method_kwargs") or {}).items()),
                             *([f"teacher outputs {variant['teacher_outputs']}"] if variant.get("teacher_outputs")
                               else []),
                             *([f"teachers {' + '.join(variant['teachers'])}"] if variant.get("teachers") else [])]) or "–"
        clean, pgd = validation_of(r)

        def delta(method: str, compared_with: dict[str, str] | None = None) -> str:
            label, ref = reference(method, r["seed"], compared_with) or ("", None)
            if ref is None:
                return "–"
            used[(label, r["seed"])] = ref
            return f"{100 * (pgd - ref[1]):+.1f} (PGD-10), {100 * (clean - ref[0]):+.1f} (clean)"

        lines.append(f"| {r['method']} | {changed} | {r['seed']} | {fmt(clean)} | {fmt(pgd)} | "
                     f"{delta(base, r.get('compared_with'))} | {delta('pgd-at')} | {r['train_time_s']:.0f} |")
    lines += ["", "The table's own rows on the same validation images (protocol settings):", "",
              "| method | seed | val clean | val PGD-10 |", "|---|---|---|---|"]
    for (label, seed), ref in sorted(used.items()):
        lines.append(f"| {label} | {seed} | {fmt(ref[0])} | {fmt(ref[1])} |")
    if any(label.endswith("†") for label, _ in used):
        lines += ["", "†: the table's row trained with a teacher it has since retired or re-made (its Teachers "
                      "section); the ablations of that method and seed were run with that teacher, so they are "
                      "compared with that row."]
    lines += ["", f"**Device**: {results['environment']['device']}; {results['date']}.", "",
              "## Commands", "", *[f"    {shown_command_line(c)}" for c in results["commands"]], ""]
    return "\n".join(lines)


def ablations_name(table_name: str) -> str:
    """The file name (without suffix) of a table's ablations."""
    return f"{table_name}_ablations"


def write_ablations(out: Path, results: dict[str, Any], table_name: str) -> None:
    """The ablations' JSON and Markdown, beside the table ``table_name``.json in ``out`` they compare with."""
    name = ablations_name(table_name)
    write_json(out / f"{name}.json", results)
    write_text(out / f"{name}.md", render_ablations(results, read_json(out / f"{table_name}.json"), table_name))
