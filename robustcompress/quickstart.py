"""The quickstart pipeline: standard teachers -> distilled student vs PGD-AT baseline -> verify -> ONNX, on digits."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import torch

from robustcompress.bundle import is_bundle
from robustcompress.compressor import RobustCompressor
from robustcompress.data import data_fingerprint, load_data
from robustcompress.io import atomic_write, cache_dir, check_writable, write_json
from robustcompress.methods import create_method
from robustcompress.teachers import train_teacher
from robustcompress.runtime_env import resolve_device
from robustcompress.verify import evaluate

# Sized to finish in about a minute on a 2-core laptop CPU (docs/results/quickstart_profile.md). The digits stay at
# their native 8x8: upscaling them adds no information and made every phase two to four times slower.
SETTINGS: dict[str, Any] = {
    "dataset": "digits",
    "input_size": 8,
    # Two standard teachers of different depth and width that reach 96-99% on 8x8 digits in 3 epochs (RegNetX-200MF,
    # MobileNetV2 and DLA, tried first, stay at 22-84% at this size: their downsampling leaves nothing to see).
    "teachers": ["resnet10t", "test_resnet"],
    "teacher_epochs": 3,
    "teacher_lr": 0.05,
    "student": "test_efficientnet",  # timm's 0.1M-parameter EfficientNet, 4-50x smaller than the teachers
    # Chosen from docs/results/quickstart_seeds.md (3 seeds each, these settings): ARD's student beat the PGD-AT
    # baseline under AutoAttack on every seed (+16, +6, +12 points; mean +11.3, a tie by its paired interval on 100
    # images); SA-MDRAD +4.7, AKD -0.3, RSLAD -1.0.
    "method": "ard",
    # The digits have 17 grey levels (0..16): 16/255 is about one level, the smallest change a pixel can show.
    "eps": 16 / 255,
    "steps": 5,
    "epochs": 5,
    "batch_size": 64,
    "lr": 0.1,
    # 100 of the 360 held-out digits (one standard error of an accuracy near 0.6 is about 5 points; student and
    # baseline are attacked on the same images, and quickstart_seeds.md pairs them over seeds): 200 cost 9 more
    # seconds of AutoAttack on each process (docs/results/quickstart_profile.md).
    "eval_examples": 100,
    "attacks": ["pgd20", "autoattack-fast"],
    # The teachers are the reference, not the product: PGD-20 only (an upper bound on their robust accuracy);
    # AutoAttack on them would double the quickstart's time.
    "teacher_attacks": ["pgd20"],
    # For methods whose teachers see clean images only through a plan (SA-MDRAD, MTARD's clean teacher), their
    # outputs are computed once before training (robustcompress.methods.teacher_outputs); others run them live.
    "teacher_outputs": "cached",
    "seed": 0,
}


#: Bumped when the baseline's training or evaluation changes, so a cached baseline from older code is not reused.
BASELINE_RECIPE = 1
#: The CPU threads every model of the quickstart is trained and evaluated with, in whichever process: the cache's
#: state decides whether a second process runs (BackgroundReferences), and a convolution's float order changes with
#: the thread count, so a count that followed the process layout would make the numbers depend on the cache.
MODEL_THREADS = 1


@contextlib.contextmanager
def model_threads() -> Iterator[None]:
    """Torch on MODEL_THREADS threads for the block (then back to what it was)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(MODEL_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def baseline_folder(s: dict[str, Any], data: Any) -> Path:
    """Where the PGD-AT baseline of these settings is cached (its bundle and evaluation.json).

    The baseline depends only on the student, the data and the training/evaluation settings, not on the method or
    the teachers, so it is cached like the teachers: a second quickstart (another method, another look) reuses it.
    """
    recipe = {"recipe": BASELINE_RECIPE, "student": s["student"], "data": data_fingerprint(data),
              "size": data.input_size, "torch": torch.__version__,
              **{k: s[k] for k in ("eps", "steps", "epochs", "batch_size", "lr", "seed", "attacks", "eval_examples")}}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "quickstart" / f"baseline-{s['student']}-{digest}"


def read_cached_baseline(folder: Path) -> dict[str, Any] | None:
    """The cached baseline's metrics, or None when the folder holds no complete baseline."""
    metrics_file = folder / "evaluation.json"
    if is_bundle(folder) and metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    return None


def cached_baseline(s: dict[str, Any], data: Any, common: dict[str, Any], kw: dict[str, Any],
                    timings: dict[str, float]) -> tuple[dict[str, Any], bool]:
    """The PGD-AT baseline's metrics and whether they came from the cache (its bundle is kept beside them)."""
    folder = baseline_folder(s, data)
    cached = read_cached_baseline(folder)
    if cached is not None:
        timings["baseline"] = 0.0
        return cached, True
    t0 = time.perf_counter()
    baseline = RobustCompressor([], s["student"], method="pgd-at", **common)
    baseline.fit(data)
    timings["baseline"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = _metrics(evaluate(baseline.student, data.test, **kw))
    timings["evaluate_baseline"] = time.perf_counter() - t0
    baseline.save(folder)
    write_json(folder / "evaluation.json", metrics)  # last: the folder is complete
    return metrics, False


def quickstart_teachers(s: dict[str, Any], data: Any, device: torch.device, progress: bool) -> list[Any]:
    """The quickstart's standard teachers (trained once, then from the teacher cache)."""
    return [train_teacher(name, data, epochs=s["teacher_epochs"], lr=s["teacher_lr"], batch_size=s["batch_size"],
                          seed=s["seed"], device=device, progress=progress)
            for name in s["teachers"]]


def training_kwargs(s: dict[str, Any], device: str, progress: bool) -> dict[str, Any]:
    """RobustCompressor arguments shared by the distilled student and the baseline."""
    return dict(eps=s["eps"], steps=s["steps"], epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                seed=s["seed"], device=device, verify_attacks=(), progress=progress)


def evaluation_kwargs(s: dict[str, Any], device: torch.device, progress: bool) -> dict[str, Any]:
    """evaluate() arguments for every model of the quickstart's table."""
    return dict(attacks=s["attacks"], eps=s["eps"], n_examples=s["eval_examples"], device=device, seed=s["seed"],
                progress=progress)


def reference_runs(s: dict[str, Any], data: Any, common: dict[str, Any], kw: dict[str, Any],
                   teachers: list[Any] | Callable[[], list[Any]]) -> dict[str, Any]:
    """The references beside the student: the PGD-AT baseline (cached) and the teachers' own evaluation.

    ``teachers`` may be a function that returns them: it is called after the baseline, which needs no teacher.
    """
    timings: dict[str, float] = {}
    baseline, cached = cached_baseline(s, data, common, kw, timings)
    teachers = teachers() if callable(teachers) else teachers
    t0 = time.perf_counter()
    # The teachers are the reference, not the product: their (cheaper) teacher attacks only.
    teacher_metrics = [_metrics(evaluate(t, data.test, **{**kw, "attacks": s["teacher_attacks"]})) for t in teachers]
    timings["evaluate_teachers"] = time.perf_counter() - t0
    return {"baseline": baseline, "baseline_cached": cached, "teachers": teacher_metrics, "timings": timings}


#: The file the first process writes into the shared folder once the teachers are in the teacher cache.
TEACHERS_READY = "teachers.ready"
#: The file the second process writes once the teachers it trains (second_process_teachers) are cached.
ITS_TEACHERS_READY = "its_teachers.ready"


def second_process_teachers(s: dict[str, Any]) -> list[str]:
    """The teachers the second process trains: all but the first, which the first process trains meanwhile (its
    longest path starts at once; the second process has time to spare before its baseline is needed)."""
    return list(s["teachers"][1:])


def wait_for_teachers(folder: Path, parent_pid: int, poll_s: float = 0.05) -> None:
    """Block until the first process says the teachers are cached; raise if that process is gone meanwhile."""
    while not (folder / TEACHERS_READY).is_file():
        if os.getppid() != parent_pid:
            raise RuntimeError(f"the quickstart process {parent_pid} that started this one has gone")
        time.sleep(poll_s)


def references_main(folder: str, parent_pid: int | None = None) -> int:
    """The second process of BackgroundReferences: settings.json in ``folder`` -> result.json.

    It first trains second_process_teachers into the teacher cache (the first process trains the others
    meanwhile) and says so with ITS_TEACHERS_READY, then trains and evaluates the PGD-AT baseline (which needs no
    teacher) while the first process distils, then waits for TEACHERS_READY and evaluates every teacher from the
    teacher cache. Everything is rebuilt from the settings, so nothing is pickled between the processes and the
    caller's __main__ is never re-imported.
    """
    s = json.loads((Path(folder) / "settings.json").read_text())
    torch.set_num_threads(MODEL_THREADS)
    cpu = torch.device("cpu")
    data = load_data(s["dataset"], s["input_size"])
    parent = os.getppid() if parent_pid is None else parent_pid
    its_teachers = second_process_teachers(s)
    t0 = time.perf_counter()
    quickstart_teachers({**s, "teachers": its_teachers}, data, cpu, progress=False)  # into the teacher cache
    teachers_s = time.perf_counter() - t0
    atomic_write(Path(folder) / ITS_TEACHERS_READY, lambda tmp: Path(tmp).write_text("ready"))

    def cached_teachers() -> list[Any]:  # from the teacher cache, once the first process has filled it
        wait_for_teachers(Path(folder), parent)
        return quickstart_teachers(s, data, cpu, progress=False)

    result = reference_runs(s, data, training_kwargs(s, "cpu", False), evaluation_kwargs(s, cpu, False),
                            cached_teachers)
    if its_teachers:
        result["timings"] = {"teachers": teachers_s, **result["timings"]}
    write_json(Path(folder) / "result.json", result, indent=None)
    return 0


class BackgroundReferences:
    """Teachers after the first, the baseline and the teachers' evaluation in a second process while this one trains
    the first teacher, distils and evaluates the student.

    The student's steps barely use a second core (docs/results/quickstart_profile.md: tiny 8x8 models leave
    intra-op threads idle), so on a CPU the two pipelines run side by side at one thread each (MODEL_THREADS, the
    count every model of the quickstart uses in either process); two one-thread processes do about 1.5x the work of
    one two-thread process. Without a second thread, on a GPU, or when the baseline is cached (the rest is
    seconds), start() returns False and the caller runs reference_runs in line.
    """

    def __init__(self, s: dict[str, Any]) -> None:
        self.s = s
        self.threads = torch.get_num_threads()  # the threads this process may use: two allow a second process
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        #: The teachers the second process trains (second_process_teachers); empty when nothing runs beside.
        self.its_teachers: list[str] = []

    def start(self, device: torch.device, data: Any) -> bool:
        """Start the second process when it pays (before the teachers: it trains the baseline first and evaluates
        the teachers once teachers_ready() says they are cached)."""
        if device.type != "cpu" or self.threads < 2:
            return False
        if read_cached_baseline(baseline_folder(self.s, data)) is not None:
            return False
        self.folder = Path(tempfile.mkdtemp(prefix="robustcompress-references-"))
        write_json(self.folder / "settings.json", self.s, indent=None)
        self.its_teachers = second_process_teachers(self.s)
        code = ("import sys; from robustcompress.process_exit import exit_process; "
                "from robustcompress.quickstart import references_main; "
                "exit_process(references_main(sys.argv[1], int(sys.argv[2])))")
        env = {**os.environ, "ROBUSTCOMPRESS_CACHE": str(cache_dir()), "OMP_NUM_THREADS": "1"}
        with open(self.folder / "log.txt", "w") as log_file:
            self.process = subprocess.Popen([sys.executable, "-c", code, str(self.folder), str(os.getpid())],
                                            env=env, stdout=log_file, stderr=subprocess.STDOUT)
        return True

    def own_teachers(self) -> list[str]:
        """The teachers this process trains itself (all of them when nothing runs beside it)."""
        return [name for name in self.s["teachers"] if name not in self.its_teachers]

    def wait_for_its_teachers(self, poll_s: float = 0.05) -> None:
        """Block until the second process has cached the teachers it trains (a no-op without one)."""
        if self.folder is None or not self.its_teachers:
            return
        assert self.process is not None
        while not (self.folder / ITS_TEACHERS_READY).is_file():
            if self.process.poll() is not None:
                self._raise_failure(self.process.returncode)
            time.sleep(poll_s)

    def _raise_failure(self, code: int) -> NoReturn:
        assert self.folder is not None
        lines = (self.folder / "log.txt").read_text(errors="replace").strip().splitlines()
        raise RuntimeError(f"the quickstart's reference process (teachers, PGD-AT baseline, teacher evaluation) "
                           f"failed with exit code {code}: {lines[-1] if lines else 'no output'}")

    def teachers_ready(self) -> None:
        """Tell the second process that the teachers are in the teacher cache (a no-op without one)."""
        if self.folder is not None:
            atomic_write(self.folder / TEACHERS_READY, lambda tmp: Path(tmp).write_text("ready"))

    def result(self) -> dict[str, Any]:
        """Wait for the second process; its result, or a RuntimeError with the end of its log when it failed."""
        assert self.process is not None and self.folder is not None, "start() did not start a process"
        try:
            code = self.process.wait()
            if code != 0:
                self._raise_failure(code)
            return json.loads((self.folder / "result.json").read_text())
        finally:
            self.close()

    def close(self) -> None:
        """Stop the second process (a no-op once it has finished) and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.its_teachers = []
        if self.folder is not None:
            shutil.rmtree(self.folder)
            self.folder = None


def _metrics(report: Any) -> dict[str, Any]:
    return {
        "clean_acc": report.clean_acc,
        "robust_acc": report.robust_acc,
        "worst_case_acc": report.worst_case_acc,
        "n_examples": report.n_examples,
    }


def run_quickstart(out_dir: str | Path = "quickstart_out", device: str = "auto", progress: bool = True,
                   **overrides: Any) -> dict[str, Any]:
    """Run the whole pipeline and write report.json, report.md, student.onnx and bundle/ into out_dir."""
    s = {**SETTINGS, **overrides}
    out = check_writable(out_dir)  # a read-only --out fails now, not after a minute of training
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    dev = resolve_device(device)
    data = load_data(s["dataset"], s["input_size"])

    common = training_kwargs(s, device, progress)
    kw = evaluation_kwargs(s, dev, progress)
    background = BackgroundReferences(s)  # before model_threads: it counts the threads this process may use
    with model_threads():
        try:
            # The second process starts first: its start-up and the baseline overlap the teachers' training.
            in_parallel = background.start(dev, data)
            if in_parallel and progress:
                print("training and evaluating the PGD-AT baseline in a second process ...", file=sys.stderr,
                      flush=True)
            t0 = time.perf_counter()
            own, theirs = background.own_teachers(), background.its_teachers
            trained = quickstart_teachers({**s, "teachers": own}, data, dev, progress)
            background.wait_for_its_teachers()
            cached = quickstart_teachers({**s, "teachers": theirs}, data, dev, progress)  # from the teacher cache
            by_name = dict(zip([*own, *theirs], [*trained, *cached]))
            teachers = [by_name[name] for name in s["teachers"]]
            timings["teachers"] = time.perf_counter() - t0
            background.teachers_ready()
            t0 = time.perf_counter()
            method = create_method(s["method"])
            outputs = s["teacher_outputs"] if method.clean_teacher_plan(len(teachers)) is not None else "live"
            student = RobustCompressor(teachers, s["student"], method=s["method"], teacher_outputs=outputs, **common)
            student.fit(data)
            timings["distill"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            if progress:
                print(f"evaluating the student: {', '.join(s['attacks'])} on {s['eval_examples']} images ...",
                      file=sys.stderr, flush=True)
            student_report = evaluate(student.student, data.test, **kw)
            timings["evaluate"] = time.perf_counter() - t0
            student.metrics = student_report.to_dict()

            # The export needs only the student, so it runs before waiting for the second process's references.
            t0 = time.perf_counter()
            if progress:
                print("exporting the student to ONNX and checking it on held-out images ...", file=sys.stderr,
                      flush=True)
            student.save(out / "bundle")
            onnx_info = student.export_onnx(out / "student.onnx")
            timings["export"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            references = background.result() if in_parallel else reference_runs(s, data, common, kw, teachers)
            timings["references" + (" (waiting)" if in_parallel else "")] = time.perf_counter() - t0
        finally:
            background.close()
    timings.update({k + (" (in parallel)" if in_parallel else ""): v for k, v in references["timings"].items()})
    baseline_metrics, baseline_cached = references["baseline"], references["baseline_cached"]
    timings["total"] = time.perf_counter() - t_start

    report = {
        "method": s["method"],
        "teachers": s["teachers"],
        "student": s["student"],
        "dataset": {"name": data.name, "input_size": data.input_size, "train_size": len(data.train),
                    "test_size": len(data.test), "eval_examples": student_report.n_examples},
        "eps": s["eps"],
        "norm": "Linf",
        "train": {k: s[k] for k in ("steps", "epochs", "batch_size", "lr", "teacher_epochs", "teacher_lr")},
        "teacher_outputs": outputs,
        "teacher_attacks": list(s["teacher_attacks"]),
        "device": str(dev),
        "torch": torch.__version__,
        "seed": s["seed"],
        "metrics": _metrics(student_report),
        "baseline": {"method": "pgd-at", **baseline_metrics, "cached": baseline_cached},
        "teachers_metrics": [{"name": n, **m} for n, m in zip(s["teachers"], references["teachers"])],
        "onnx": {"path": onnx_info["path"], "max_abs_diff": onnx_info["max_abs_diff"],
                 "argmax_agreement": onnx_info["argmax_agreement"]},
        "bundle": str(out / "bundle"),
        "timings_s": timings,
    }
    write_json(out / "report.json", report)
    markdown = render_markdown(report)
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(markdown))
    return report


def table_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(f"teacher {t['name']} (standard)", t) for t in report["teachers_metrics"]]
    cached = ", cached" if report["baseline"].get("cached") else ""
    rows.append((f"baseline {report['student']} (pgd-at{cached})", report["baseline"]))
    rows.append((f"student {report['student']} ({report['method']})", report["metrics"]))
    return rows


def render_table(report: dict[str, Any]) -> str:
    """The plain-text table the quickstart prints."""
    attacks = list(report["metrics"]["robust_acc"])
    header = f"{'model':40s} {'clean':>7s} " + " ".join(f"{a:>15s}" for a in attacks) + f" {'worst':>7s}"
    lines = [header, "-" * len(header)]
    for name, m in table_rows(report):
        cells = " ".join(f"{m['robust_acc'][a]:15.3f}" if a in m["robust_acc"] else f"{'–':>15s}" for a in attacks)
        lines.append(f"{name:40s} {m['clean_acc']:7.3f} {cells} {m['worst_case_acc']:7.3f}")
    if any(set(m["robust_acc"]) != set(attacks) for _, m in table_rows(report)):
        lines.append("– not run on the teachers (the reference, not the product): their worst case is an upper bound")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    attacks = list(report["metrics"]["robust_acc"])
    lines = [
        "# robustcompress quickstart report",
        "",
        f"Dataset {report['dataset']['name']} ({report['dataset']['eval_examples']} test images, "
        f"{report['dataset']['input_size']}px), L-inf eps = {report['eps']:.4f} ({report['eps'] * 255:.0f}/255), "
        f"device {report['device']}, seed {report['seed']}.",
        "",
        "| model | clean | " + " | ".join(attacks) + " | worst case |",
        "|---|---|" + "---|" * len(attacks) + "---|",
    ]
    for name, m in table_rows(report):
        cells = " | ".join(f"{m['robust_acc'][a]:.3f}" if a in m["robust_acc"] else "–" for a in attacks)
        lines.append(f"| {name} | {m['clean_acc']:.3f} | {cells} | {m['worst_case_acc']:.3f} |")
    if any(set(m["robust_acc"]) != set(attacks) for _, m in table_rows(report)):
        lines += ["", "–: not run on the standard teachers, which are the reference rather than the product "
                      "(to keep the quickstart short); their worst case is an upper bound."]
    lines += [
        "",
        f"ONNX export: `{report['onnx']['path']}`, max |logit difference| vs PyTorch "
        f"{report['onnx']['max_abs_diff']:.2e}.",
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)
