"""Attack-strength audit of two CIFAR-10 students before a verdict between them is written (the 8/255 issue, item 4).

    python benchmarks/attack_audit.py                                  # PGD-AT vs SA-MDRAD, seed 0, CPU-standard
    python benchmarks/attack_audit.py --methods pgd-at,akd --restarts 3
    python benchmarks/attack_audit.py --images 200 --restarts 1 --out /tmp/audit   # a quick look

Both students are the committed seed-0 bundles (docs/results/cifar10_cpu_standard/<method>/) and are attacked on the
images their table row ran standard AutoAttack on (seed 0's block of 1,000 test images), in fp32, with attacks
AutoAttack does not contain or runs with fewer restarts:

- ``apgd-t-9xR``: APGD-T (pyautoattack) over all 9 target classes with R restarts each (AutoAttack: 1 restart);
- ``apgd-ce-xR`` and ``apgd-dlr-xR``: untargeted APGD with the cross-entropy and the DLR loss, R restarts;
- ``margin-pgd100xR``: PGD-100 ascending the Carlini-Wagner margin (best wrong logit minus true logit), R restarts;
- ``multi-targeted-pgd100xR``: PGD-100 ascending z_t - z_y for each of the 9 other classes t (Gowal et al. 2019);
- ``transfer-from-<other>``: the other student's PGD-50 (CE) and margin PGD-50 images, scored on this student;
- ``pgd20`` / ``pgd100``: plain PGD (CE, step eps/4) on the block, to split the AutoAttack-minus-PGD-20 gap into
  more iterations (PGD-20 -> PGD-100), the adaptive step (PGD-100 -> APGD-CE) and the targeted DLR loss
  (APGD-CE -> AutoAttack, read off the table's AutoAttack stages).

An image counts as robust only if it survives AutoAttack (the table's per-image verdicts) and every audit attack.
The verdict of the pair is the paired difference of those worst-case accuracies with a bootstrap over images.
Results are written after every attack to ``--out`` (.json, .md), and a re-run skips the attacks already there.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table_protocol import PROTOCOLS, describe_device, load_benchmark_data, verdict_string  # noqa: E402
from table_report import paired_bootstrap  # noqa: E402
from table_students import autoattack_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
DATA = REPO.parent / "shared" / "data" / "cifar10_jpg"
BATCH = 500


# -- attacks: each takes (model, x, y, eps, seed) and returns adversarial images -----------------------------------
def apgd(loss: str, restarts: int) -> Callable[..., torch.Tensor]:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

        if loss == "dlr-targeted":
            attack = APGDAttack_targeted(model, n_iter=100, norm="Linf", n_restarts=restarts, eps=eps, seed=seed,
                                         n_target_classes=9, device="cpu")
        else:
            attack = APGDAttack(model, n_iter=100, norm="Linf", n_restarts=restarts, eps=eps, seed=seed, loss=loss,
                                device="cpu")
        return attack.perturb(x, y)
    return run


def margin_to(target: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """z_target - z_true per sample (ascended: positive means the target class wins)."""
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
    return loss


def plain_pgd(steps: int, loss: str = "ce", restarts: int = 1) -> Callable[..., torch.Tensor]:
    """The registry's pgdNxR (cwNxR with loss 'cw'): step eps/4, random start seeded seed + restart."""
    from robustcompress.attacks import pgd_with_restarts

    return pgd_with_restarts(steps, loss, restarts)


def multi_targeted(steps: int, restarts: int) -> Callable[..., torch.Tensor]:
    """PGD on z_t - z_y for every other class t, in the order of the clean logits (most likely wrong class first)."""
    from robustcompress.attacks import pgd_with_restarts

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        with torch.no_grad():
            logits = model(x)
        order = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
        order = order.argsort(dim=1, descending=True)[:, : logits.shape[1] - 1]
        best, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool)
        for k in range(order.shape[1]):
            todo = ~fooled
            if not bool(todo.any()):
                break
            x_adv = pgd_with_restarts(steps, margin_to(order[todo, k]), restarts)(model, x[todo], y[todo], eps,
                                                                                  seed + 100 * k)
            idx = todo.nonzero().squeeze(1)
            hit = wrong(model, x_adv, y[todo])
            best[idx[hit]] = x_adv[hit]
            fooled[idx[hit]] = True
        return best
    return run


def wrong(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


def robust_flags(model: nn.Module, attack: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float,
                 seed: int, start: torch.Tensor, progress: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image robust flags under ``attack`` and the adversarial images, attacking only the images still robust in
    ``start``; batch b is seeded with seed + the index of its first image (as robustcompress.verify does)."""
    from tqdm.auto import tqdm

    flags, x_adv = start.clone(), x.clone()
    for b in tqdm(range(0, len(x), BATCH), desc=progress, leave=False):
        sl = slice(b, b + BATCH)
        todo = start[sl].nonzero().squeeze(1) + b
        if len(todo) == 0:
            continue
        adv = attack(model, x[todo], y[todo], eps, seed + b).detach()
        x_adv[todo] = adv
        flags[todo] = ~wrong(model, adv, y[todo])
    return flags, x_adv


# -- the report --------------------------------------------------------------------------------------------------------
def accuracy(flags: list[bool] | torch.Tensor) -> float:
    return float(torch.as_tensor(flags, dtype=torch.float32).mean())


def render(state: dict[str, Any]) -> str:
    methods = state["methods"]
    lines = [f"# Attack-strength audit: {' vs '.join(methods)} (CIFAR-10, {state['protocol']}, seed {state['seed']})",
             "",
             f"Generated by `{state['command']}` on {state['date']}; device {state['device']}; "
             f"{state['images']} test images (positions {state['block'][0]}-{state['block'][1] - 1} of the shuffled "
             f"test split, the block the table's standard AutoAttack ran on), L-inf eps {state['eps'] * 255:.0f}/255, "
             f"every attack in fp32. Accuracy in %; an image is robust in the last row only if it survives AutoAttack "
             f"and every audit attack. Times are wall seconds on 2 cores.", ""]
    names = list(dict.fromkeys(n for m in methods for n in state["attacks"].get(m, {})))
    lines += ["| attack | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]

    def cell(m: str, n: str) -> str:
        r = state["attacks"].get(m, {}).get(n)
        return "—" if r is None else f"{100 * r['accuracy']:.1f} ({r['seconds']:.0f} s)"
    lines.append("| clean | " + " | ".join(f"{100 * state['clean'][m]:.1f}" for m in methods) + " |")
    lines.append("| AutoAttack, standard (table) | " + " | ".join(f"{100 * state['autoattack'][m]:.1f}"
                                                              for m in methods) + " |")
    lines += [f"| {n} | " + " | ".join(cell(m, n) for m in methods) + " |" for n in names]
    lines.append("| **worst case: AutoAttack + every audit attack** | "
                 + " | ".join(f"**{100 * state['worst_case'][m]:.1f}**" for m in methods) + " |")
    lines += ["", "## What the audit adds to AutoAttack", ""]
    for m in methods:
        w = state["worst_case"][m]
        a = state["autoattack"][m]
        extra = state["extra_breaks"][m]
        lines.append(f"- **{m}**: the audit breaks {extra['count']} of the {extra['aa_robust']} images AutoAttack "
                     f"left robust ({100 * (a - w):.1f} points): {extra['by_attack']}.")
    lines += ["", "## The AutoAttack-minus-PGD-20 gap, step by step (same images)", "",
              "| method | PGD-20 | PGD-100 | APGD-CE (AutoAttack stage 1) | AutoAttack (+ APGD-T, FAB-T, Square) | gap |",
              "|---|---|---|---|---|---|"]
    for m in methods:
        g = state["gap"][m]
        cells = [g["pgd20"], g["pgd100"], g["apgd-ce"], g["autoattack"], g["pgd20"] - g["autoattack"]]
        # nan: not measured yet, or (APGD-CE) the table's stage is over more images than the audit attacks
        lines.append(f"| {m} | " + " | ".join("–" if v != v else f"{100 * v:.1f}" for v in cells) + " |")
    if len(methods) == 2 and "verdict" in state:
        v = state["verdict"]
        lines += ["", "## The pair's verdict after the audit", "",
                  f"{methods[1]} minus {methods[0]}, paired per image, 95% bootstrap interval over the "
                  f"{v['worst_case']['n']} images (seed noise is not in it: one seed):", "",
                  f"- AutoAttack (table): {100 * v['autoattack']['difference']:+.1f} "
                  f"[{100 * v['autoattack']['low']:+.1f}, {100 * v['autoattack']['high']:+.1f}]",
                  f"- worst case after the audit: {100 * v['worst_case']['difference']:+.1f} "
                  f"[{100 * v['worst_case']['low']:+.1f}, {100 * v['worst_case']['high']:+.1f}]"]
    return "\n".join(lines) + "\n"


def summarise(state: dict[str, Any], flags: dict[str, dict[str, torch.Tensor]], aa: dict[str, torch.Tensor]) -> None:
    methods = state["methods"]
    for m in methods:
        worst = aa[m].clone()
        by_attack: dict[str, int] = {}
        for name, f in flags[m].items():
            if name in ("pgd20", "pgd100"):
                continue
            broken_new = aa[m] & ~f
            if int(broken_new.sum()):
                by_attack[name] = int(broken_new.sum())
            worst &= f
        state["worst_case"][m] = accuracy(worst)
        state["extra_breaks"][m] = {"count": int((aa[m] & ~worst).sum()), "aa_robust": int(aa[m].sum()),
                                    "by_attack": by_attack or "none"}
        state["worst_flags"][m] = verdict_string(worst.tolist())
        done = state["attacks"].get(m, {})  # the second method has none until its first attack finishes
        state["gap"][m] = {"pgd20": done.get("pgd20", {}).get("accuracy", float("nan")),
                           "pgd100": done.get("pgd100", {}).get("accuracy", float("nan")),
                           "apgd-ce": state["autoattack_stages"][m].get("apgd-ce", float("nan")),
                           "autoattack": state["autoattack"][m]}
    if len(methods) == 2:
        bits = {m: np.array([c == "1" for c in state["worst_flags"][m]]) for m in methods}
        n = len(bits[methods[0]])
        state["verdict"] = {
            name: dict(zip(("difference", "low", "high"), paired_bootstrap([list(a)], [list(b)])), n=n)
            for name, a, b in (("autoattack", aa[methods[1]].tolist(), aa[methods[0]].tolist()),
                               ("worst_case", bits[methods[1]].tolist(), bits[methods[0]].tolist()))}


def write(out: Path, state: dict[str, Any]) -> None:
    from robustcompress.io import atomic_write_bytes

    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(state, indent=1) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), render(state).encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", default="cpu-standard", choices=["cpu-standard"])
    p.add_argument("--methods", default="pgd-at,sa-mdrad", help="two (or more) methods with seed-0 bundles")
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--images", type=int, default=1000, help="the first N images of the AutoAttack block")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=RESULTS / "cifar10_cpu_standard_audit")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = PROTOCOLS[args.protocol]
    seed = 0
    methods = args.methods.split(",")
    results = json.loads((RESULTS / "cifar10_cpu_standard.json").read_text())
    rows = {m: next(r for r in results["rows"] if r["method"] == m and r["seed"] == seed and r["status"] == "ok"
                    and not r.get("variant")) for m in methods}
    from robustcompress import RobustCompressor

    models = {m: RobustCompressor.load(RESULTS / "cifar10_cpu_standard" / m, device="cpu").student.eval().float()
              for m in methods}
    data = load_benchmark_data(args.data, setting, progress=False)
    block = autoattack_block(setting, seed)
    n = min(args.images, block.stop - block.start)
    x, y = (t[block.start: block.start + n] for t in data.test.tensors[:2])
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    eps = setting.eps
    state_path = args.out.with_suffix(".json")
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("methods") != methods or state.get("images") != n or state.get("restarts") != args.restarts:
        state = {"methods": methods, "images": n, "restarts": args.restarts, "attacks": {}}
    state.update(protocol=args.protocol, seed=seed, eps=eps, block=[block.start, block.start + n], clean={},
                 autoattack={}, autoattack_stages={}, worst_case={}, extra_breaks={}, worst_flags={}, gap={})
    provenance = {"date": datetime.date.today().isoformat(), "device": describe_device(torch.device("cpu")),
                  "command": "python " + " ".join(["benchmarks/attack_audit.py"] + (argv or sys.argv[1:]))}
    if "device" not in state:  # a pass that attacks nothing keeps the date, device and command of the passes that did
        state.update(provenance)
    aa = {m: torch.tensor([c == "1" for c in rows[m]["per_image"]["autoattack"][:n]]) for m in methods}
    clean = {m: ~wrong(models[m], x, y) for m in methods}
    for m in methods:
        state["clean"][m] = accuracy(clean[m])
        state["autoattack"][m] = accuracy(aa[m])
        # The table's stage accuracies are over its whole block: comparable only when the audit uses all of it.
        whole = rows[m].get("n_test_autoattack") == n
        state["autoattack_stages"][m] = rows[m].get("autoattack_stages", {}) if whole else {}
    r = args.restarts
    plan: list[tuple[str, Callable[..., torch.Tensor]]] = [
        ("pgd20", plain_pgd(20)), ("pgd100", plain_pgd(100)),
        (f"apgd-ce-x{r}", apgd("ce", r)), (f"apgd-dlr-x{r}", apgd("dlr", r)),
        (f"margin-pgd100x{r}", plain_pgd(100, "cw", r)), (f"apgd-t-9x{r}", apgd("dlr-targeted", r)),
        (f"multi-targeted-pgd100x{r}", multi_targeted(100, r))]
    state["planned"] = {m: [name for name, _ in plan] + [f"transfer-from-{o}" for o in methods if o != m]
                        for m in methods}
    flags: dict[str, dict[str, torch.Tensor]] = {m: {} for m in methods}
    for m in methods:
        for name, done in state["attacks"].get(m, {}).items():
            flags[m][name] = torch.tensor([c == "1" for c in done["flags"]])
    for m in methods:
        for name, attack in plan:
            if name in flags[m]:
                continue
            t0 = time.perf_counter()
            f, _ = robust_flags(models[m], attack, x, y, eps, seed, clean[m], f"{m} {name}")
            record(state, flags, m, name, f, time.perf_counter() - t0, provenance)
            summarise(state, flags, aa)
            write(args.out, state)
            print(f"{m} {name}: {100 * accuracy(f):.1f}% ({time.perf_counter() - t0:.0f} s)", flush=True)
    for source in methods:  # transfer: the other students' PGD-50 (CE and margin) images scored on each student
        for target in methods:
            name = f"transfer-from-{source}"
            if source == target or name in flags[target]:
                continue
            t0 = time.perf_counter()
            robust = clean[target].clone()
            for loss in ("ce", "cw"):
                _, x_adv = robust_flags(models[source], plain_pgd(50, loss), x, y, eps, seed,
                                        torch.ones(n, dtype=torch.bool), f"{source} -> {target} {loss}")
                robust &= ~wrong(models[target], x_adv, y)
            record(state, flags, target, name, robust, time.perf_counter() - t0, provenance)
            summarise(state, flags, aa)
            write(args.out, state)
            print(f"{target} {name}: {100 * accuracy(robust):.1f}%", flush=True)
    summarise(state, flags, aa)
    write(args.out, state)
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


def record(state: dict[str, Any], flags: dict[str, dict[str, torch.Tensor]], method: str, name: str,
           f: torch.Tensor, seconds: float, provenance: dict[str, str]) -> None:
    flags[method][name] = f
    state.update(provenance)
    state["attacks"].setdefault(method, {})[name] = {
        "accuracy": accuracy(f), "seconds": seconds, "flags": verdict_string(f.tolist())}


if __name__ == "__main__":
    raise SystemExit(main())
