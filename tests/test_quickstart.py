"""The quickstart end to end, with a shorter schedule and evaluation than the command's default to keep CI fast."""
import json

import pytest

from robustcompress.quickstart import render_table, run_quickstart


@pytest.fixture(scope="module")
def quickstart_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    # The pipeline at a third of the default budget (measured with one thread, as under xdist: 41 s; the student
    # reached 0.90 clean / 0.68 PGD-20 and the teachers 1.00 / 0.97): the assertions below hold with a margin.
    report = run_quickstart(out, device="cpu", progress=False, eval_examples=100, attacks=["pgd20"], epochs=4,
                            teacher_epochs=3)
    return out, report


def test_report_has_the_documented_keys(quickstart_report):
    out, report = quickstart_report
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("method", "teachers", "student", "dataset", "eps", "metrics", "baseline", "teachers_metrics",
                "onnx", "timings_s"):
        assert key in saved, key
    for metrics in (saved["metrics"], saved["baseline"], *saved["teachers_metrics"]):
        assert set(metrics) >= {"clean_acc", "robust_acc"}
        assert "pgd20" in metrics["robust_acc"]
    # The teachers (the reference) get the teacher attacks only; the students every attack.
    assert all(set(t["robust_acc"]) == set(saved["teacher_attacks"]) for t in saved["teachers_metrics"])
    assert len(saved["teachers_metrics"]) == 2
    assert (out / "report.md").read_text().startswith("# robustcompress quickstart report")
    assert (out / "student.onnx").stat().st_size > 0
    assert (out / "bundle" / "config.json").is_file()


def test_the_distilled_student_is_accurate_and_robust_and_its_teachers_are_worth_learning_from(quickstart_report):
    _, report = quickstart_report
    assert report["metrics"]["clean_acc"] > 0.8
    assert report["metrics"]["robust_acc"]["pgd20"] > 0.5  # far above chance (0.1) one grey level away
    assert all(t["clean_acc"] > 0.9 for t in report["teachers_metrics"])


def test_onnx_export_matches_pytorch(quickstart_report):
    _, report = quickstart_report
    assert report["onnx"]["max_abs_diff"] < 1e-4


def test_printed_table_names_every_model(quickstart_report):
    _, report = quickstart_report
    table = render_table(report)
    for name in (*report["teachers"], "pgd-at", report["method"]):
        assert name in table


def test_the_table_marks_attacks_not_run_on_a_teacher():
    metrics = {"clean_acc": 0.9, "robust_acc": {"pgd20": 0.8, "autoattack-fast": 0.7}, "worst_case_acc": 0.7}
    teacher = {"name": "t", "clean_acc": 0.9, "robust_acc": {"pgd20": 0.02}, "worst_case_acc": 0.02}
    report = {"teachers_metrics": [teacher], "baseline": metrics, "metrics": metrics, "student": "s",
              "method": "m"}
    table = render_table(report)
    assert "–" in table and "not run on the teachers" in table


def test_the_baseline_is_trained_once_and_reused_by_a_second_run(digits16):
    """The PGD-AT baseline does not depend on the method or teachers: a second quickstart (another method, a
    re-run) takes it and its numbers from the cache instead of training and attacking it again."""
    from robustcompress.quickstart import SETTINGS, cached_baseline

    s = {**SETTINGS, "epochs": 1, "eval_examples": 16, "attacks": ["fgsm"], "steps": 1}
    common = dict(eps=s["eps"], steps=1, epochs=1, batch_size=64, lr=0.1, seed=0, device="cpu", verify_attacks=(),
                  progress=False)
    kw = dict(attacks=["fgsm"], eps=s["eps"], n_examples=16, device="cpu", seed=0, progress=False)
    first_timings, second_timings = {}, {}
    first, cached_first = cached_baseline(s, digits16, common, kw, first_timings)
    second, cached_second = cached_baseline(s, digits16, common, kw, second_timings)
    assert (cached_first, cached_second) == (False, True) and first == second
    assert first_timings["baseline"] > 0 and second_timings == {"baseline": 0.0}
    other, cached_other = cached_baseline({**s, "seed": 1}, digits16, {**common, "seed": 1}, {**kw, "seed": 1}, {})
    assert not cached_other  # another seed is another baseline
