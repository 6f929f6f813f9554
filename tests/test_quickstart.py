"""The quickstart end to end, with a shorter schedule and evaluation than the command's default to keep CI fast."""
import json

import pytest
import torch

from robustcompress.quickstart import render_table, run_quickstart


@pytest.fixture(scope="module")
def quickstart_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    # The default's second teacher alone, four of the five student epochs with PGD-3 instead of PGD-5, and PGD-20
    # only: 12 s with one thread, as under xdist (the default's settings took 26 s, its first teacher resnet10t 9 s
    # of them). The student reached 0.92 clean / 0.61 PGD-20 and its teacher 0.96 clean (with PGD-5: 0.85 / 0.61);
    # with two teacher and three student epochs the default teachers' student fell to 0.83 / 0.51, too close to the
    # bounds below. Two teachers in two processes: the tests further down.
    report = run_quickstart(out, device="cpu", progress=False, eval_examples=100, attacks=["pgd20"], epochs=4,
                            steps=3, teacher_epochs=3, teachers=["test_resnet"])
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
    assert [t["name"] for t in saved["teachers_metrics"]] == saved["teachers"] == ["test_resnet"]
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


def _tiny_references(seed: int = 0, **changes):
    from robustcompress import load_data
    from robustcompress.quickstart import SETTINGS, evaluation_kwargs, training_kwargs

    s = {**SETTINGS, "teachers": ["test_resnet"], "teacher_epochs": 1, "epochs": 1, "steps": 1, "eval_examples": 16,
         "attacks": ["fgsm"], "teacher_attacks": ["fgsm"], "seed": seed, **changes}
    return s, load_data("digits", 8), training_kwargs(s, "cpu", False), evaluation_kwargs(s, torch.device("cpu"), False)


def test_the_references_run_in_a_second_one_thread_process_as_they_would_in_line():
    """On a CPU with two threads the second teacher, the baseline and the teachers' evaluation run beside the first
    teacher and the distillation; the teachers and the results are the ones the same work gives in this process, and
    the baseline lands in the cache."""
    from robustcompress.quickstart import (BackgroundReferences, baseline_folder, quickstart_teachers,
                                           read_cached_baseline, reference_runs)
    from robustcompress.teachers import train_teacher

    s, data, common, kw = _tiny_references(seed=7, teachers=["test_resnet", "test_efficientnet"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        background = BackgroundReferences(s)
        assert background.start(torch.device("cpu"), data)  # before the teachers, as run_quickstart does
        assert torch.get_num_threads() == 2  # threads are run_quickstart's to set (model_threads), not start()'s
        assert background.own_teachers() == ["test_resnet"] and background.its_teachers == ["test_efficientnet"]
        quickstart_teachers({**s, "teachers": background.own_teachers()}, data, torch.device("cpu"), progress=False)
        background.wait_for_its_teachers()
        teachers = quickstart_teachers(s, data, torch.device("cpu"), progress=False)  # the second one from the cache
        background.teachers_ready()  # the second process evaluates both from the cache
        result = background.result()
        assert torch.get_num_threads() == 2 and background.own_teachers() == s["teachers"]
        torch.set_num_threads(1)  # as in the worker, so the teachers' numbers can be compared exactly
        in_line = reference_runs(s, data, common, kw, teachers)  # the baseline now comes from the cache
        trained_here = train_teacher("test_efficientnet", data, epochs=1, lr=s["teacher_lr"], batch_size=64, seed=7,
                                     device="cpu", use_cache=False, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(trained_here.state_dict().values(), teachers[1].state_dict().values()))
    assert not result["baseline_cached"] and result["baseline"] == read_cached_baseline(baseline_folder(s, data))
    assert result["timings"]["teachers"] > 0 and result["timings"]["baseline"] > 0
    assert "evaluate_teachers" in result["timings"]
    assert in_line["baseline_cached"] and in_line["teachers"] == result["teachers"]
    assert not BackgroundReferences(s).start(torch.device("cpu"), data)  # the baseline is cached: in line
    assert not BackgroundReferences(_tiny_references(seed=8)[0]).start(torch.device("cuda"), data)


def test_the_second_process_waits_for_the_teachers_and_stops_when_its_parent_is_gone(tmp_path):
    from robustcompress.quickstart import TEACHERS_READY, wait_for_teachers

    with pytest.raises(RuntimeError, match="quickstart process -1 that started this one has gone"):
        wait_for_teachers(tmp_path, parent_pid=-1)
    (tmp_path / TEACHERS_READY).write_text("ready")
    wait_for_teachers(tmp_path, parent_pid=-1)  # ready: returns at once


def test_an_error_in_the_reference_process_reaches_the_caller():
    from robustcompress.quickstart import BackgroundReferences

    s, data, _, _ = _tiny_references(seed=9, teachers=["test_resnet", "no_such_teacher"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        background = BackgroundReferences(s)
        assert background.start(torch.device("cpu"), data)
        # The first process, waiting for the second one's teacher, hears of its failure instead of waiting forever.
        with pytest.raises(RuntimeError, match="reference process .* failed .*no_such_teacher"):
            background.wait_for_its_teachers()
        with pytest.raises(RuntimeError, match="reference process .* failed .*no_such_teacher"):
            background.result()
        assert torch.get_num_threads() == 2 and background.folder is None  # threads back, temporary folder gone
    finally:
        torch.set_num_threads(threads)


def test_the_numbers_do_not_depend_on_what_the_cache_holds(tmp_path):
    """With an empty cache the references run in a second process; with the baseline cached everything runs in this
    one. Every model is trained and evaluated with the same thread count either way, so deleting the teacher cache
    alone gives the same teachers, student and table, bit for bit."""
    import shutil

    from conftest import teacher_cache
    from safetensors.torch import load_file

    tiny = dict(device="cpu", progress=False, teachers=["test_resnet"], teacher_epochs=1, epochs=1, steps=1,
                eval_examples=16, attacks=["fgsm"], teacher_attacks=["fgsm"], seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two cores: the case where the two paths differ
    try:
        with teacher_cache(tmp_path / "cache"):
            first = run_quickstart(tmp_path / "first", **tiny)
            shutil.rmtree(tmp_path / "cache" / "teachers")  # the baseline stays cached
            second = run_quickstart(tmp_path / "second", **tiny)
    finally:
        torch.set_num_threads(threads)
    assert not first["baseline"]["cached"] and second["baseline"]["cached"]
    for name in ("student.safetensors", "teacher_0.safetensors"):
        a, b = (load_file(str(tmp_path / run / "bundle" / name)) for run in ("first", "second"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert first["metrics"] == second["metrics"] and first["teachers_metrics"] == second["teachers_metrics"]


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")

    def never(*args, **kwargs):
        raise AssertionError("the quickstart started working before checking --out")

    monkeypatch.setattr("robustcompress.quickstart.load_data", never)
    with pytest.raises(ValueError, match="output folder .*a_file/out is not writable"):
        run_quickstart(blocker / "out", device="cpu", progress=False)
