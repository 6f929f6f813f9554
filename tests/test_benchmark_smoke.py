"""benchmarks/cifar10_table.py: the smoke run writes the table, split runs merge, missing data is explained."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import CIFAR_SUBSET, load_benchmark



@pytest.fixture(scope="module")
def bench():
    yield load_benchmark("cifar10_table.py", "cifar10_table")
    sys.modules.pop("cifar10_table", None)


@pytest.fixture(scope="module")
def protocol(bench):
    import table_protocol  # the modules the script imported (benchmarks/ is on sys.path once it is loaded)

    return table_protocol


@pytest.fixture(scope="module")
def students(bench):
    import table_students

    return table_students


@pytest.fixture(scope="module")
def report(bench):
    import table_report

    return table_report


def _row(method: str, seed: int, clean: float) -> dict:
    return {"method": method, "seed": seed, "status": "ok", "teachers": ["robust"], "clean": clean,
            "attacks": {"pgd20": clean / 2, "cw30": clean / 3}, "autoattack": clean / 4, "autoattack_version": "fast",
            "worst_case": clean / 5, "train_time_s": 12.0, "masking_checks": [], "date": "2026-11-21"}


def _header(protocol, setting) -> dict:
    import dataclasses

    return {
        "benchmark": "cifar10_subset", "mode": "reduced",
        "setting": json.loads(json.dumps(dataclasses.asdict(setting))),
        "reduced_from_fixed_setting": json.loads(json.dumps(protocol.reductions(setting))),
        "data": {"source": "x.npz", "train_available": 100, "train_size": 100, "test_used": 10},
        "teachers": [], "teacher_attacks": ["pgd20"], "missing_methods": ["iad"], "note": "", "date": "2026-11-21",
        "environment": {"device": "cpu", "torch": "2", "cpu_count": 2, "load_average": 3.0},
    }


def test_missing_data_says_how_to_point_at_the_data(bench, tmp_path, capsys):
    code = bench.main(["--smoke", "--data", str(tmp_path / "nowhere.npz"), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere.npz" in err and "--data" in err and "cifar-10-batches-py" in err
    assert not (tmp_path / "out").exists()


def test_unknown_method_is_refused_before_any_work(bench, tmp_path):
    with pytest.raises(SystemExit, match="akdd"):
        bench.main(["--smoke", "--methods", "akdd", "--data", str(tmp_path / "nowhere.npz")])


def test_split_runs_merge_and_a_new_setting_starts_over(protocol, report, tmp_path):
    setting = protocol.Setting(epochs=2, test_images=10, autoattack="fast")
    path = tmp_path / "cifar10_subset.json"
    first = report.merge_results(path, _header(protocol, setting), [_row("akd", 0, 0.8)])
    protocol.write_json(path, first)
    first["note"] = "a note about the table"
    protocol.write_json(path, first)
    second = report.merge_results(path, _header(protocol, setting), [_row("pgd-at", 0, 0.6), _row("akd", 1, 0.7)])
    assert [(r["method"], r["seed"]) for r in second["rows"]] == [("pgd-at", 0), ("akd", 0), ("akd", 1)]
    assert second["note"] == "a note about the table"  # a run without --note keeps the table's note
    protocol.write_json(path, second)
    other = report.merge_results(path, _header(protocol, protocol.Setting(epochs=3)), [_row("trades", 0, 0.5)])
    assert [r["method"] for r in other["rows"]] == ["trades"]
    kept = json.loads((tmp_path / "cifar10_subset.replaced-2026-11-21.json").read_text())
    assert kept["rows"] == second["rows"]  # the other setting's rows are set aside, never lost

    markdown = report.render_markdown(second)
    akd_line = next(line for line in markdown.splitlines() if line.startswith("| akd |"))
    assert "75.0 ± 7.1" in akd_line and "0, 1" in akd_line  # clean: mean and std over the two seeds, in %
    assert "`epochs`: 30 → 2" in markdown and "`autoattack`: standard → fast" in markdown
    assert "**Not run**" in markdown and "iad" in markdown
    assert "load average 3.0" in markdown

    report.write_results(tmp_path / "table", second, "cifar10_subset")
    assert (tmp_path / "table" / "cifar10_subset.png").stat().st_size > 0
    assert "![accuracy per method](cifar10_subset.png)" in (tmp_path / "table" / "cifar10_subset.md").read_text()


def test_a_table_recorded_with_an_absolute_data_path_keeps_its_rows(protocol, report, tmp_path, monkeypatch):
    # Tables written before paths were shown relative to the repository recorded /work/shared/...; the same data
    # named as ../shared/... (from any working directory) must add rows to them, not set their rows aside.
    setting = protocol.Setting(epochs=2, test_images=10, autoattack="fast")
    path = tmp_path / "cifar10_subset.json"
    old = report.merge_results(path, _header(protocol, setting), [_row("pgd-at", 0, 0.6)])
    old["data"]["source"] = str(protocol.REPO.parent / "shared" / "data" / "cifar10_jpg")
    protocol.write_json(path, old)
    new = _header(protocol, setting)
    new["data"]["source"] = "../shared/data/cifar10_jpg"
    monkeypatch.chdir(tmp_path)
    merged = report.merge_results(path, new, [_row("akd", 0, 0.7)])
    assert sorted(r["method"] for r in merged["rows"]) == ["akd", "pgd-at"]
    assert not list(tmp_path.glob("*.replaced-*"))
    new["data"]["source"] = "../shared/data/other"  # other data still starts over
    assert [r["method"] for r in report.merge_results(path, new, [_row("akd", 0, 0.7)])["rows"]] == ["akd"]


def test_the_table_shows_paths_relative_to_the_repository(protocol, report, monkeypatch):
    # docs/results is read on other machines: no developer's /home/... or /work/main/... prefix in it.
    data = protocol.REPO.parent / "shared" / "data" / "cifar10_jpg"
    work = protocol.REPO.parent / "runs" / "queue"
    monkeypatch.setattr(sys, "argv", ["cifar10_table.py", "--data", str(data), f"--work-dir={work}", "--eps", "8/255"])
    assert protocol.command_line() == ("python benchmarks/cifar10_table.py --data ../shared/data/cifar10_jpg "
                                       "--work-dir=../runs/queue --eps 8/255")
    results = report.merge_results(Path("/nonexistent/t.json"), _header(protocol, protocol.Setting(epochs=2)), [])
    results["data"]["source"] = str(data)  # as tables written before this rule recorded them
    results["commands"] = [f"python benchmarks/cifar10_table.py --out {protocol.REPO / 'docs' / 'results'}"]
    markdown = report.render_markdown(results)
    assert "**Data**: `../shared/data/cifar10_jpg`" in markdown
    assert "    python benchmarks/cifar10_table.py --out docs/results\n" in markdown
    assert str(protocol.REPO.parent) not in markdown


def test_a_teacher_made_again_with_other_weights_gets_its_own_row_and_marks_the_rows_it_trained(protocol, report,
                                                                                                tmp_path):
    # A new machine re-makes the cached teachers from their recipes; another CPU can give other weights.
    rows: dict = {}
    first = {"role": "robust", "description": "weakly adversarial", "clean": 0.63, "attacks": {"pgd20": 0.4},
             "autoattack": None, "autoattack_version": None, "worst_case": 0.4, "n_test": 10, "train_time_s": 5.0}
    assert not report.place_teacher_row(rows, first, "2026-12-01")
    same = {**first, "weights": "aaa", "train_time_s": 9.0}  # the same test numbers: the same teacher
    assert not report.place_teacher_row(rows, same, "2026-12-02")
    assert rows["robust"]["train_time_s"] == 5.0 and rows["robust"]["weights"] == "aaa"
    other = {**first, "weights": "bbb", "clean": 0.64}
    assert report.place_teacher_row(rows, other, "2026-12-02")
    assert report.place_teacher_row(rows, dict(other), "2026-12-03")  # that re-made teacher again: its own row
    assert list(rows) == ["robust", "robust re-made 2026-12-02"]

    setting = protocol.Setting(epochs=2, test_images=10, autoattack="fast")
    header = {**_header(protocol, setting), "teachers": report.ordered_teacher_rows(rows)}
    path = tmp_path / "cifar10_subset.json"
    protocol.write_json(path, report.merge_results(path, header, [_row("akd", 0, 0.8), _row("akd", 1, 0.7)]))
    merged = report.merge_results(path, header, [{**_row("akd", 0, 0.6), "teachers_remade": ["robust"]}])
    assert [(report.method_label(r), r["seed"]) for r in merged["rows"]] == [("akd", 0), ("akd", 1), ("akd †", 0)]
    markdown = report.render_markdown(merged)
    assert "| robust re-made 2026-12-02 (used only by the rows marked †): weakly adversarial |" in markdown
    akd_line = next(line for line in markdown.splitlines() if line.startswith("| akd |"))
    assert "75.0 ± 7.1" in akd_line and "0, 1" in akd_line  # the marked row is not a third seed
    assert any(line.startswith("| akd † |") for line in markdown.splitlines()) and "†: trained with teachers" in markdown
    # --skip-done finds the marked row too: its run is not repeated on the next pass of a queue.
    assert report.finished_runs(merged["rows"]) == {("akd", 0), ("akd", 1)}
    failed = {**_row("akd [bf16]", 0, 0.6), "status": "failed: OSError"}
    assert report.finished_runs([*merged["rows"], failed]) == {("akd", 0), ("akd", 1)}
    # with a stored robust teacher, a row trained with another one is not finished: it runs again with the stored one
    rows = [{**_row("akd", 0, 0.8), "teacher_weights": {"robust": "old"}}, {**_row("pgd-at", 0, 0.8), "teachers": []},
            {**_row("akd", 1, 0.8), "teacher_weights": {"robust": "new"}}]
    assert report.finished_runs(rows, {"robust": "new"}) == {("pgd-at", 0), ("akd", 1)}
    assert report.finished_runs(rows) == {("akd", 0), ("pgd-at", 0), ("akd", 1)}


def _smoke_data(tmp_path: Path) -> Path:
    """The CIFAR-10 subset when this checkout has it; otherwise real digit images in the same .npz layout.

    A user's clone (and a CI machine without ../shared) has no CIFAR-10 file; the smoke run checks the plumbing
    (teacher loading, training, attacks, table), which 32x32 RGB digit images exercise just as well.
    """
    if CIFAR_SUBSET.is_file():
        return CIFAR_SUBSET
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)  # 8x8, values 0..16
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)  # 32x32, nearest neighbour
    images = np.repeat(images[..., None], 3, axis=3)  # HWC, RGB
    path = tmp_path / "digits_as_cifar.npz"
    np.savez(path, x_train=images[:1500], y_train=digits.target[:1500], x_test=images[1500:],
             y_test=digits.target[1500:], classes=np.array([str(c) for c in range(10)]))
    return path


def test_smoke_run_writes_a_row_for_every_registered_method(bench, tmp_path, monkeypatch, capsys):
    # The issue's --smoke run, end to end through main() as `python benchmarks/cifar10_table.py --smoke` runs it
    # (in this process: a second interpreter would only add its start-up, torch and timm, to the suite).
    from robustcompress import list_methods

    bench_out, cache = tmp_path / "out", tmp_path / "cache"
    data = _smoke_data(tmp_path)
    args = ["--smoke", "--no-progress", "--out", str(bench_out), "--cache", str(cache), "--data", str(data)]
    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(cache))  # main() sets it from --cache; restored afterwards
    assert bench.main(args) == 0, capsys.readouterr()
    results = json.loads((bench_out / "cifar10_subset.json").read_text())
    from_issue = ["pgd-at", "trades", "ard", "rslad", "iad", "mtard", "adaad", "akd", "sa-mdrad", "dual-path"]
    registered = [m for m in from_issue if m in list_methods()]
    assert [r["method"] for r in results["rows"]] == registered
    assert results["missing_methods"] == [m for m in from_issue if m not in registered]
    for row in results["rows"]:
        assert row["status"] == "ok" and row["n_test"] == 32 and row["n_test_autoattack"] == row["worst_case_n"] == 16
        assert 0 <= row["worst_case"] <= row["autoattack"]  # both on the first 16 images
        assert row["masking_checks"], "the quick masking checks should have run"
    assert [t["role"] for t in results["teachers"]] == ["teacher1", "teacher2", "robust"]
    assert all("per_image" in t for t in results["teachers"])  # (smoke attacks teachers with nothing: clean only)
    if data == CIFAR_SUBSET:
        assert results["teachers"][0]["clean"] > 0.8  # the real pre-trained ResNet-18 on real CIFAR-10
    markdown = (bench_out / "cifar10_subset.md").read_text()
    assert "SMOKE RUN" in markdown and all(f"| {m} |" in markdown for m in registered)
    assert (bench_out / "cifar10_subset.png").stat().st_size > 0 and "cifar10_subset.png" in markdown

    capsys.readouterr()
    # A second run of no method builds no teacher and keeps the rows and teacher rows of the first.
    assert bench.main([*args, "--methods", ""]) == 0
    printed = capsys.readouterr().out
    assert "cached weights" not in printed and "training" not in printed
    kept = json.loads((bench_out / "cifar10_subset.json").read_text())
    assert kept["rows"] == results["rows"] and kept["teachers"] == results["teachers"]
    # A run of one distillation method reuses the cached teachers it needs; its saved bundle is student-only.
    assert bench.main([*args, "--methods", "ard", "--save-bundles", str(tmp_path / "bundles")]) == 0
    printed = capsys.readouterr().out
    assert "robust: cached weights" in printed and "teacher2: cached weights" in printed
    from robustcompress.bundle import read_bundle

    saved = tmp_path / "bundles" / "ard"
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "student.safetensors"]
    assert not read_bundle(saved).teachers_saved and read_bundle(saved).record["teachers"]


def test_the_benchmark_parses_eps_by_the_same_rule(bench):
    import argparse

    assert bench.parse_eps("4/255") == pytest.approx(4 / 255)
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean 4/255"):
        bench.parse_eps("4")


def test_variants_are_labelled_rows_and_need_a_name(bench, protocol, students):
    args = bench.build_parser().parse_args(["--variant", "no features", "--method-arg", "feature_weight=0",
                                            "--teacher-outputs", "live"])
    variant = bench.variant_from(args)
    assert variant == bench.Variant("no features", {"feature_weight": 0}, "live")
    assert students.teacher_outputs_for("sa-mdrad", protocol.CPU_SCALE, variant) == "live"
    assert students.teacher_outputs_for("sa-mdrad", protocol.CPU_SCALE) == "cached"
    assert students.teacher_outputs_for("akd", protocol.CPU_SCALE) == "live"
    with pytest.raises(SystemExit, match="name the variant with --variant"):
        bench.variant_from(bench.build_parser().parse_args(["--method-arg", "alpha=0.5"]))
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench.variant_from(bench.build_parser().parse_args(["--variant", "x", "--method-arg", "alpha"]))


def test_a_precision_variant_leaves_the_protocols_setting_alone(bench, protocol):
    """--variant bf16 --precision bf16 trains that variant's rows in bf16; the table's setting (and so its other
    rows, which a changed setting would move aside) stays the protocol's."""
    args = bench.build_parser().parse_args(["--protocol", "cpu-scale", "--variant", "bf16", "--precision", "bf16"])
    assert bench.variant_from(args).precision == "bf16"
    assert bench.setting_from(args) == protocol.CPU_SCALE
    with pytest.raises(SystemExit, match="name the variant with --variant"):
        bench.variant_from(bench.build_parser().parse_args(["--precision", "bf16"]))


def test_a_table_from_before_an_added_setting_field_still_merges_when_its_rows_are_unaffected(protocol, report):
    import dataclasses

    new = json.loads(json.dumps(dataclasses.asdict(protocol.CPU_SCALE)))
    old = {k: v for k, v in new.items() if k != "cached_teacher_outputs_for"}
    assert report.same_setting(old, new, [{"method": "pgd-at"}, {"method": "akd"}])
    assert not report.same_setting(old, new, [{"method": "sa-mdrad"}])  # it ran with live teachers
    assert not report.same_setting({**old, "epochs": 9}, new, [])


def test_quickstart_seeds_gives_a_paired_verdict_over_seeds():
    seeds = load_benchmark("quickstart_seeds.py", "quickstart_seeds")
    assert seeds.paired_interval([0.05]) is None and seeds.verdict(None).startswith("not yet")
    mean, low, high = seeds.paired_interval([0.01, -0.02, 0.03])
    assert mean == pytest.approx(0.02 / 3) and low < 0 < high and seeds.verdict((mean, low, high)) == "tie"
    assert seeds.verdict(seeds.paired_interval([-0.05, -0.06, -0.055])) == "loss"
    assert seeds.verdict(seeds.paired_interval([0.05, 0.06, 0.055])) == "win"
    settings = {"input_size": 16, "teachers": ["dla46_c"], "method": "sa-mdrad"}
    assert seeds.parse_overrides(["input_size=8", 'teachers=["resnet10t"]', "method=ard"], settings) == {
        "input_size": 8, "teachers": ["resnet10t"], "method": "ard"}
    with pytest.raises(SystemExit, match="KEY one of"):
        seeds.parse_overrides(["input_sise=8"], settings)


def test_bundle_reevaluation_agrees_within_one_standard_error():
    again = load_benchmark("reevaluate_bundles.py", "reevaluate_bundles")
    assert again.standard_error(0.5, 10_000) == pytest.approx(0.005)
    assert again.compare(0.381, 0.381, 8000)["agrees"]
    assert again.compare(0.381, 0.385, 8000)["agrees"]  # 0.4 points < 1 SE (0.54 points)
    assert not again.compare(0.381, 0.39, 8000)["agrees"]
    rows = {"rows": [{"method": "akd", "seed": 1, "status": "ok"}, {"method": "akd", "seed": 0, "status": "ok"},
                     {"method": "akd [alpha 0.9]", "seed": 0, "status": "ok"}]}
    assert again.table_row(rows, "akd") == {"method": "akd", "seed": 0, "status": "ok"}
    assert again.table_row(rows, "ard") is None


def test_validation_only_ablation_never_touches_the_test_split(bench, students, tmp_path, monkeypatch):
    # An ablation trains with best-robust selection and keeps the validation curve; its rows go to a file of their
    # own and are compared with the table's row of the same method and seed.
    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(tmp_path / "cache"))  # main() points the cache at --cache
    out, data = tmp_path / "out", _smoke_data(tmp_path)
    common = ["--smoke", "--no-progress", "--data", str(data), "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert bench.main([*common, "--validation-only", "--methods", "trades"]) == 2  # smoke has no validation split
    table_row = {"method": "trades", "seed": 0, "status": "ok",
                 "selection": {"best": {"epoch": 1, "val_clean": 0.5, "val_pgd10": 0.25}}}
    out.mkdir()
    (out / "cifar10_subset.json").write_text(json.dumps({"rows": [table_row]}))
    evaluated = []
    monkeypatch.setattr(students, "evaluate_student", lambda *a, **k: evaluated.append(a) or ({}, None))
    code = bench.main([*common, "--validation-only", "--val-images", "16", "--methods", "trades", "--variant",
                       "beta 1", "--method-arg", "beta=1", "--note", "Timed beside a test run."])
    assert code == 0 and not evaluated
    results = json.loads((out / "cifar10_subset_ablations.json").read_text())
    [row] = results["rows"]
    assert row["method"] == "trades [beta 1]" and row["split"] == "validation" and row["method_hparams"]["beta"] == 1
    assert 0 <= row["val_pgd10"] <= row["val_clean"] <= 1 and "clean" not in row and "autoattack" not in row
    assert row["selection"]["val_images"] == 16 and len(row["selection"]["curve"]) == 1
    markdown = (out / "cifar10_subset_ablations.md").read_text()
    line = next(x for x in markdown.splitlines() if x.startswith("| trades [beta 1] |"))
    assert "beta=1" in line and f"{100 * (row['val_pgd10'] - 0.25):+.1f} (PGD-10)" in line
    assert "\nTimed beside a test run.\n" in markdown  # what the rows' times are worth, on the page as on the table's
    # main(argv) records its own arguments, not those of the process that called it (here pytest's)
    assert results["commands"][-1].endswith("--variant 'beta 1' --method-arg beta=1 --note 'Timed beside a test run.'")
    assert row["command"] == results["commands"][-1]
    assert all(c.startswith("python benchmarks/cifar10_table.py --smoke --no-progress") for c in results["commands"])
    assert json.loads((out / "cifar10_subset.json").read_text()) == {"rows": [table_row]}  # the table is untouched
    assert not (out / "cifar10_subset.md").exists()
    # a note can be corrected later without a run: --render-only --note replaces it in the JSON and on the page
    assert bench.main([*common, "--validation-only", "--render-only", "--note", "Partly timed beside tests."]) == 0
    assert json.loads((out / "cifar10_subset_ablations.json").read_text())["rows"] == results["rows"]
    assert "\nPartly timed beside tests.\n" in (out / "cifar10_subset_ablations.md").read_text()
    assert json.loads((out / "cifar10_subset_ablations.json").read_text())["note"] == "Partly timed beside tests."


def test_cpu_standard_attacks_a_block_of_its_own_per_seed_and_pairs_the_verdicts(protocol, report, students):
    setting = protocol.CPU_STANDARD
    assert setting.eps == 8 / 255 and setting.steps == 5 and setting.autoattack == "standard"
    assert [students.autoattack_block(setting, s) for s in (0, 1, 2)] == [slice(0, 1000), slice(1000, 2000),
                                                                          slice(2000, 3000)]
    assert students.autoattack_block(protocol.CPU_SCALE, 2) == slice(0, 1000)  # one block for every seed there
    # Two seeds, 400 images each: method A robust on 10 more images per seed than B; the paired interval excludes 0.
    a = [[True] * 110 + [False] * 290, [True] * 130 + [False] * 270]
    b = [[True] * 100 + [False] * 300, [True] * 120 + [False] * 280]
    diff, lo, hi = report.paired_bootstrap(a, b, draws=2000)
    assert diff == pytest.approx(10 / 400) and 0 < lo <= diff <= hi
    # The same marginal accuracies on unrelated images: the difference is no longer sure.
    shuffled = [[True] * 100 + [False] * 300, [True] * 120 + [False] * 280]
    unpaired = [x[::-1] for x in a]
    _, lo_u, hi_u = report.paired_bootstrap(unpaired, shuffled, draws=2000)
    assert lo_u < 0 < hi_u
    with pytest.raises(ValueError, match="same seeds and images"):
        report.paired_bootstrap(a, b[:1])


def test_a_cpu_scale_table_from_before_the_precision_field_still_merges(protocol, report):
    import dataclasses

    old = json.loads(json.dumps(dataclasses.asdict(protocol.CPU_SCALE)))
    for field in report.FIELDS_ADDED_WITH_DEFAULT:
        old.pop(field)
    new = json.loads(json.dumps(dataclasses.asdict(protocol.CPU_SCALE)))
    assert report.same_setting(old, new)
    assert not report.same_setting(old, {**new, "precision": "bf16"})


def test_a_precision_variant_is_compared_with_the_tables_own_rows(protocol, report):
    import dataclasses

    base = [{**_row("pgd-at", s, 0.55 + 0.001 * s), "teachers": [], "variant": None} for s in range(3)]
    bf16 = [{**_row("pgd-at [bf16]", s, 0.56 + 0.002 * s), "teachers": [],
             "variant": {"label": "bf16", "method_kwargs": {}, "teacher_outputs": None, "precision": "bf16"}}
            for s in range(2)]
    results = {"setting": json.loads(json.dumps(dataclasses.asdict(protocol.CPU_SCALE))), "rows": base + bf16}
    lines = report.precision_lines(results)
    row = next(line for line in lines if line.startswith("| pgd-at | – | bf16 |"))
    assert "| 0, 1 |" in row and "| pass |" not in row  # no masking checks were recorded in these rows
    clean = row.split(" | ")[4]
    assert clean.startswith("+1.0 [")  # 56.1 - 55.1 points
    assert report.precision_lines({**results, "rows": base}) == []

    # A distillation method whose teachers were re-made on another machine is compared with rows in the protocol's
    # precision that learnt from the same re-made teachers, never with the table's rows (other teachers).
    remade = {"teachers": ["teacher1"], "teachers_remade": ["teacher1"], "teacher_weights": {"teacher1": "abc"}}
    table = [{**_row("sa-mdrad", s, 0.60), "teachers": ["teacher1"], "variant": None} for s in range(3)]
    fp32 = [{**_row("sa-mdrad [fp32]", s, 0.62 + 0.002 * s), **remade,
             "variant": {"label": "fp32", "method_kwargs": {}, "teacher_outputs": None, "precision": "fp32"}}
            for s in range(3)]
    sa_bf16 = [{**_row("sa-mdrad [bf16]", s, 0.63 + 0.002 * s), **remade,
                "variant": {"label": "bf16", "method_kwargs": {}, "teacher_outputs": None, "precision": "bf16"}}
               for s in range(3)]
    row = next(line for line in report.precision_lines({**results, "rows": table + sa_bf16})
               if line.startswith("| sa-mdrad |"))
    assert "| re-made † | bf16 | 0, 1, 2 (no fp32 rows with these teachers yet) | – |" in row
    row = next(line for line in report.precision_lines({**results, "rows": table + fp32 + sa_bf16})
               if line.startswith("| sa-mdrad |"))
    assert row.split(" | ")[4].startswith("+1.0 [")  # 63.2 - 62.2, not 63.2 - 60.0
    # The cost compares whole training times, unless both sides recorded their epochs' times: then the epochs alone,
    # so a one-time teacher pass cached by the first run (here bf16 seed 0's 900 s) does not count against it.
    for r, seconds in zip(fp32 + sa_bf16, [300, 310, 320, 1000, 100, 110]):
        r.update(unit_s=0.5, train_units=seconds / 0.5)
    assert row_cost(report.precision_lines({**results, "rows": table + fp32 + sa_bf16})) == "| 807 vs 620 |"
    for r, epochs in zip(fp32 + sa_bf16, [150, 160, 170, 50, 50, 60]):
        r["history"] = [{"seconds": epochs / 2}, {"seconds": epochs / 2}]
    assert row_cost(report.precision_lines({**results, "rows": table + fp32 + sa_bf16})) == "| 107 vs 320 (steps) |"
    sa_bf16[0]["history"][1].pop("seconds")  # one row without its epochs' times: back to the whole training time
    assert row_cost(report.precision_lines({**results, "rows": table + fp32 + sa_bf16})) == "| 807 vs 620 |"


def row_cost(lines: list[str]) -> str:
    row = next(line for line in lines if line.startswith("| sa-mdrad |"))
    return "| " + row.rsplit(" | ", 1)[1]


def test_the_cpu_standard_page_says_how_far_the_cpu_scale_ranking_predicts_its_own(report):
    def table(accuracies: dict[str, list[float]]) -> dict:
        return {"rows": [{"method": m, "seed": s, "status": "ok", "autoattack": a, "variant": None}
                         for m, values in accuracies.items() for s, a in enumerate(values)]}

    here = table({"pgd-at": [0.27, 0.29], "sa-mdrad": [0.31], "akd": [0.33], "trades": [0.29]})
    same_order = table({"pgd-at": [0.33], "sa-mdrad": [0.38], "akd": [0.40], "trades": [0.35], "ard": [0.30]})
    lines = report.rank_agreement_lines(here, same_order)
    assert lines[-1].startswith("Spearman's rho +1.00, Kendall's tau +1.00 over 4 methods (Kendall's two-sided p = 0.08")
    assert "| akd | 33.0 | 1 | 40.0 | 1 |" in lines and not any(line.startswith("| ard |") for line in lines)
    reversed_order = table({"pgd-at": [0.40], "sa-mdrad": [0.35], "akd": [0.30], "trades": [0.38]})
    assert report.rank_agreement_lines(here, reversed_order)[-1].startswith("Spearman's rho -1.00")
    assert report.rank_agreement_lines(table({"pgd-at": [0.3], "akd": [0.4]}), same_order)[-1].startswith("Not yet")
    tied = report.rank_agreement_lines(table({"pgd-at": [0.279], "sa-mdrad": [0.27, 0.288], "akd": [0.283]}),
                                       same_order)  # equal means share their ranks: neither is ranked above
    assert "| pgd-at | 27.9 | 2.5 | 33.0 | 3 |" in tied and "| sa-mdrad | 27.9 | 2.5 | 38.0 | 2 |" in tied
    # and they are listed by name, so the page does not reorder itself between renders
    assert tied.index("| pgd-at | 27.9 | 2.5 | 33.0 | 3 |") < tied.index("| sa-mdrad | 27.9 | 2.5 | 38.0 | 2 |")


def test_the_cpu_scale_page_says_what_its_verdict_is_with_image_sampling_noise(report):
    state = {"methods": ["pgd-at", "sa-mdrad"],
             "table": {"diff": 0.05, "low": 0.036, "high": 0.063, "both_low": 0.024, "both_high": 0.075,
                       "verdict": "win", "seeds": [0, 1, 2]},
             "rows": [{"sample": "table", "images": "the table's 1,000", "acc": {"pgd-at": 0.331, "sa-mdrad": 0.379}, "diff": 0.048,
                       "low": 0.026, "high": 0.07},
                      {"sample": "all", "images": "all 3,000", "acc": {"pgd-at": 0.353, "sa-mdrad": 0.391}, "diff": 0.038,
                       "low": 0.025, "high": 0.051}]}
    lines = report.image_noise_lines(state)
    assert "+5.0 [+2.4, +7.5]: **win**" in lines[1]
    assert "Seed 0 on all 3,000 test images: 35.3 vs 39.1, difference +3.8 [+2.5, +5.1]" in lines[3]
    # every seed shared the table's images, so the published mean moves by seed 0's shift (-1.0) to about +4.0
    assert lines[-1].endswith("-1.0 gives about +4.0 points.")


def test_the_attack_audit_summarises_after_the_first_attack_of_the_first_student(bench):
    import torch

    audit = load_benchmark("attack_audit.py", "attack_audit")
    sys.modules.pop("attack_audit", None)
    aa = {"pgd-at": torch.tensor([True, True, False]), "sa-mdrad": torch.tensor([True, False, False])}
    state = {"methods": ["pgd-at", "sa-mdrad"], "attacks": {"pgd-at": {"pgd20": {"accuracy": 2 / 3, "seconds": 1.0}}},
             "autoattack_stages": {"pgd-at": {}, "sa-mdrad": {}}, "autoattack": {"pgd-at": 2 / 3, "sa-mdrad": 1 / 3},
             "worst_case": {}, "extra_breaks": {}, "worst_flags": {}, "gap": {}}
    flags = {"pgd-at": {"margin": torch.tensor([True, False, False])}, "sa-mdrad": {}}
    audit.summarise(state, flags, aa)  # the second student has no attack yet: it must not stop the run
    assert state["worst_case"] == pytest.approx({"pgd-at": 1 / 3, "sa-mdrad": 1 / 3})
    assert state["extra_breaks"]["pgd-at"]["by_attack"] == {"margin": 1}
    assert "| sa-mdrad | – | – | – |" in audit.render({**state, "images": 3, "restarts": 1, "clean": state["autoattack"],
                                                      "command": "c", "date": "d", "device": "cpu", "protocol": "p",
                                                      "seed": 0, "eps": 8 / 255, "block": [0, 3]})


def test_a_teacher_choice_variant_names_its_teachers_and_distils_from_them(bench, tmp_path, monkeypatch, capsys):
    # AKD's teacher ablations: --teachers replaces the method's own teachers; robust2 is the other standard teacher
    # made robust by the protocol's recipe (an ensemble of two robust teachers with "robust")
    with pytest.raises(SystemExit, match="name the variant with --variant"):
        bench.variant_from(bench.build_parser().parse_args(["--teachers", "robust"]))
    with pytest.raises(SystemExit, match="unknown role.*robust3"):
        bench.variant_from(bench.build_parser().parse_args(["--variant", "x", "--teachers", "robust,robust3"]))
    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(tmp_path / "cache"))
    out, data = tmp_path / "out", _smoke_data(tmp_path)
    args = ["--smoke", "--no-progress", "--data", str(data), "--out", str(out), "--cache", str(tmp_path / "cache"),
            "--validation-only", "--val-images", "16", "--methods", "akd", "--variant", "two robust teachers",
            "--teachers", "robust,robust2"]
    assert bench.main(args) == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "robust: training" in printed and "robust2: training" in printed and "'source': 'teacher2'" in printed
    [row] = json.loads((out / "cifar10_subset_ablations.json").read_text())["rows"]
    assert row["status"] == "ok" and row["teachers"] == ["robust", "robust2"]
    assert "| akd [two robust teachers] | teachers robust + robust2 |" in (out / "cifar10_subset_ablations.md").read_text()


def test_the_final_epoch_robust_teacher_is_read_from_the_fine_tunes_checkpoint(bench, tmp_path):
    import torch

    import table_teachers
    from robustcompress.io import atomic_save

    model, final = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    robust = table_teachers.Teacher("robust", "resnet18: teacher1 weakly adversarially fine-tuned by ...", model, 5.0,
                                    {"recipe": {"epochs": 4, "select": "best_robust"},
                                     "checkpoint_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="final-epoch checkpoint"):
        table_teachers.final_epoch_of(robust, torch.device("cpu"))
    atomic_save({"student": final.state_dict()}, tmp_path / "last.pt")
    (tmp_path / "best.json").write_text(json.dumps({"best": {"epoch": 2}}))
    teacher = table_teachers.final_epoch_of(robust, torch.device("cpu"))
    assert teacher.role == "robust-final" and "final epoch 4, not the early-stopped 2" in teacher.description
    assert torch.equal(teacher.model.weight, final.weight) and not torch.equal(model.weight, final.weight)
    (tmp_path / "best.json").write_text(json.dumps({"best": {"epoch": 4}}))  # early stopping kept the last epoch
    with pytest.raises(ValueError, match="nothing to compare"):
        table_teachers.final_epoch_of(robust, torch.device("cpu"))


def test_the_robust_teachers_margin_over_pgd_at_is_paired_on_the_teachers_images(report):
    student = {"method": "pgd-at", "seed": 0, "status": "ok", "autoattack": 0.25, "autoattack_version": "standard",
               "autoattack_images": [0, 8], "autoattack_stages": {"apgd-ce": 0.3, "apgd-t": 0.25},
               "per_image": {"autoattack": "11000000", "pgd20": "1110000000000000"}}
    robust = {"role": "robust", "autoattack_version": "fast", "per_image": {"autoattack": "1111", "pgd20": "1111"}}
    standard = {"role": "teacher1", "autoattack_version": "fast", "per_image": {"autoattack": "0000", "pgd20": "0000"}}
    lines = report.teacher_margin_lines({"rows": [student], "teachers": [standard, robust]})
    # on the teachers' 4 images the student is robust on 2 (AutoAttack) and 3 (PGD-20)
    assert "| robust | 4 | 100.0 vs 75.0: **+25.0**" in lines[-1] and "100.0 vs 50.0: **+50.0**" in lines[-1]
    assert "| teacher1 | 4 | 0.0 vs 75.0: **-75.0**" in lines[-2]
    assert "in 0 of the 1 student rows" in lines[3] and "listed for contrast" in lines[3]
    assert "for contrast" not in report.teacher_margin_lines({"rows": [student], "teachers": [robust]})[3]
    remade = {**standard, "remade_date": "2026-12-02"}  # left out of the table, so the caption does not speak of it
    assert "for contrast" not in report.teacher_margin_lines({"rows": [student], "teachers": [remade, robust]})[3]
    assert report.teacher_margin_lines({"rows": [{**student, "autoattack_images": [1000, 2000]}],
                                        "teachers": [robust]}) == []  # not the teachers' images: no pairing
    assert report.teacher_margin_lines({"rows": [student], "teachers": [{"role": "robust"}]}) == []  # no flags


def test_a_teachers_evaluation_keeps_per_image_verdicts_and_is_cached(bench, protocol, tmp_path, monkeypatch):
    import dataclasses

    import torch

    import table_teachers

    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(tmp_path / "cache"))
    setting = dataclasses.replace(protocol.SMOKE, teacher_attacks=("pgd5", "apgd-ce"), teacher_test_images=8)
    data = protocol.load_benchmark_data(_smoke_data(tmp_path), setting, progress=False)
    from robustcompress.models import build_model

    torch.manual_seed(0)
    teacher = table_teachers.Teacher("robust", "a small model", build_model("test_resnet", 10, 32).eval(), None)
    row = table_teachers.evaluate_teacher(teacher, setting, data, torch.device("cpu"), progress=False)
    assert set(row["per_image"]) == {"clean", "pgd5", "autoattack"} and len(row["per_image"]["autoattack"]) == 8
    assert row["per_image"]["autoattack"].count("1") == round(8 * row["autoattack"])
    assert table_teachers.evaluate_teacher(teacher, setting, data, torch.device("cpu"), progress=False) == row


def test_a_new_robust_teacher_recipe_keeps_rows_that_never_learnt_from_it(protocol, report):
    import dataclasses

    old = json.loads(json.dumps(dataclasses.asdict(protocol.CPU_STANDARD)))
    new = {**old, "robust_steps": 3, "robust_epochs": 12, "robust_lr": 0.1}
    teacher_free = [{"method": "pgd-at", "teachers": []}, {"method": "sa-mdrad", "teachers": ["teacher1", "teacher2"]}]
    assert report.same_setting(old, new, teacher_free)
    assert not report.same_setting(old, new, [*teacher_free, {"method": "akd", "teachers": ["robust"]}])
    assert not report.same_setting(old, {**new, "epochs": 11}, teacher_free)  # the students' own setting still counts


def test_a_teachers_newer_per_image_verdicts_join_its_row(report):
    rows = {"robust": {"role": "robust", "weights": "w1", "clean": 0.7, "date": "2026-12-01"}}
    assert report.place_teacher_row(rows, {"role": "robust", "weights": "w1", "clean": 0.7,
                                           "per_image": {"autoattack": "101"}}, "2026-12-07") is False
    assert rows["robust"]["per_image"] == {"autoattack": "101"} and rows["robust"]["date"] == "2026-12-01"


def test_the_cpu_standard_page_summarises_the_attack_audit_and_says_whether_it_is_finished(report):
    nan = float("nan")
    audit = {"methods": ["pgd-at", "sa-mdrad"], "images": 1000, "restarts": 3,
             "attacks": {"pgd-at": {"pgd20": {}, "apgd-t-9x3": {}}},
             "autoattack": {"pgd-at": 0.279, "sa-mdrad": 0.30}, "worst_case": {"pgd-at": 0.27, "sa-mdrad": 0.30},
             "extra_breaks": {"pgd-at": {"count": 9, "aa_robust": 279, "by_attack": {"apgd-t-9x3": 9}},
                              "sa-mdrad": {"count": 0, "aa_robust": 300, "by_attack": "none"}},
             "gap": {"pgd-at": {"pgd20": 0.319, "pgd100": nan, "apgd-ce": 0.312, "autoattack": 0.279},
                     "sa-mdrad": {"pgd20": nan, "pgd100": nan, "apgd-ce": 0.287, "autoattack": 0.30}},
             "verdict": {"autoattack": {"difference": 0.021, "low": 0.004, "high": 0.038, "n": 1000},
                         "worst_case": {"difference": 0.03, "low": -0.002, "high": 0.05, "n": 1000}}}
    lines = report.audit_lines(audit)
    text = "\n".join(lines)
    assert "**In progress** (attacks done: pgd-at 2, sa-mdrad 0)" in text  # an older state without its plan
    assert "| pgd-at | 27.9 | 27.0 | 9 of 279 (apgd-t-9x3 9) | 31.9 | – | 31.2 | 4.0 |" in lines
    assert "| sa-mdrad | 30.0 | 30.0 | 0 of 300 (none) | – | – | 28.7 | – |" in lines
    # A win under AutoAttack that the audit turns into a tie is reported as such.
    assert "AutoAttack +2.1 [+0.4, +3.8]: **win**; worst case after the audit +3.0 [-0.2, +5.0]: tie." in text
    assert "of its 4.0-point gap" not in text  # PGD-100 not measured yet: no split of pgd-at's gap
    audit["gap"]["pgd-at"]["pgd100"] = 0.318
    audit["attacks"]["pgd-at"] = {"pgd20": {"accuracy": 0.319}, "apgd-t-9x3": {"accuracy": 0.279},
                                  "transfer-from-sa-mdrad": {"accuracy": 0.383}}
    text = "\n".join(report.audit_lines(audit))
    assert ("- **pgd-at**: of its 4.0-point gap, more iterations (PGD-20 to PGD-100) give 0.1, APGD's adaptive step "
            "size (to APGD-CE) 0.6 and AutoAttack's targeted and black-box stages (APGD-T, FAB-T, Square) 3.3; "
            "transfer from sa-mdrad leaves 38.3, above every white-box attack (at least 27.9): no sign of gradient "
            "masking.") in text
    audit["planned"] = {"pgd-at": ["pgd20", "apgd-t-9x3", "transfer-from-sa-mdrad"], "sa-mdrad": ["pgd20"]}
    assert "attacks done: pgd-at 3 of 3, sa-mdrad 0 of 1" in "\n".join(report.audit_lines(audit))
    audit["attacks"]["sa-mdrad"] = {"pgd20": {}}
    text = "\n".join(report.audit_lines(audit))
    assert "The audit is complete." in text and "In progress" not in text


def test_a_finished_step_of_a_queue_loads_no_data_and_makes_no_teacher(bench, protocol, tmp_path, monkeypatch,
                                                                       capsys):
    # A queue re-run on a fresh machine (no teacher cache) passes its finished steps: each must cost seconds, not
    # the hours of re-making and evaluating a robust teacher that no run of the step still needs.
    out = tmp_path / "out"
    out.mkdir()
    common = ["--smoke", "--no-progress", "--skip-done", "--out", str(out), "--data", str(tmp_path / "absent.npz"),
              "--methods", "akd"]
    setting = bench.setting_from(bench.build_parser().parse_args(common))
    (out / "cifar10_subset.json").write_text(json.dumps({**_header(protocol, setting), "rows": [_row("akd", 0, 0.8)]}))
    monkeypatch.setattr(bench, "make_teachers", lambda *a, **k: pytest.fail("a teacher was made for a finished step"))
    assert bench.main([*common, "--seeds", "0"]) == 0
    assert "nothing left to run for cifar10_subset.json" in capsys.readouterr().out
    # a step with a run left goes on to its data (missing here: refused before any teacher is made)
    assert bench.main([*common, "--seeds", "0,1"]) == 2
    assert "akd seed 0: in cifar10_subset.json already" in capsys.readouterr().out
    # a stored robust teacher other than the one the row was trained with: the run is left to do, with the stored one
    store = tmp_path / "store"
    store.mkdir()
    (store / "robust.json").write_text(json.dumps({"weights": "new"}))
    rows = [{**_row("akd", 0, 0.8), "teacher_weights": {"robust": "old"}}]
    (out / "cifar10_subset.json").write_text(json.dumps({**_header(protocol, setting), "rows": rows}))
    assert bench.main([*common, "--seeds", "0", "--teacher-store", str(store)]) == 2  # on to its (missing) data
    assert bench.main([*common, "--seeds", "0"]) == 0  # without the store, the row is finished


@pytest.mark.parametrize("script, results, args, kept", [
    ("attack_audit", "cifar10_cpu_standard_audit",
     lambda c: ["--restarts", str(c["restarts"]), "--images", str(c["images"]), "--threads", "1"], "attacks"),
    ("cpu_scale_image_noise", "cifar10_cpu_image_noise", lambda c: ["--further", str(c["further"])], "blocks"),
])
def test_a_finished_check_keeps_the_device_and_date_of_the_runs_that_attacked(tmp_path, script, results, args, kept):
    # Re-run by the queue on another machine with every attack done, the attack audit (and the CPU-scale verdict's
    # image-noise check) only re-renders its page: it must not claim that machine, or today, for attacks run elsewhere.
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg"
    if not data.is_dir():
        pytest.skip("needs ../shared/data/cifar10_jpg")
    module = load_benchmark(f"{script}.py", script)
    sys.modules.pop(script, None)
    committed = json.loads((module.RESULTS / f"{results}.json").read_text())
    state = {**committed, "device": "cpu (the machine that attacked)", "date": "2026-12-01", "command": "c"}
    out = tmp_path / results
    out.with_suffix(".json").write_text(json.dumps(state))
    assert module.main(["--methods", ",".join(committed["methods"]), *args(committed), "--data", str(data),
                        "--out", str(out)]) == 0
    rewritten = json.loads(out.with_suffix(".json").read_text())
    assert (rewritten["device"], rewritten["date"], rewritten["command"]) == (state["device"], "2026-12-01", "c")
    assert rewritten[kept] == committed[kept]
    assert "device cpu (the machine that attacked)" in out.with_suffix(".md").read_text()


def test_a_stored_robust_teacher_is_read_on_a_machine_without_the_cache(bench, protocol, tmp_path, monkeypatch,
                                                                        capsys):
    # The cache does not outlive a machine, and re-made on another CPU the robust teacher has other weights: the
    # repository's store keeps the one the table's rows distil from, and a fresh machine reads it instead.
    import dataclasses

    import torch

    import table_teachers

    cpu = torch.device("cpu")
    data = protocol.load_benchmark_data(_smoke_data(tmp_path), protocol.SMOKE, progress=False)
    store = tmp_path / "store"
    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(tmp_path / "cache1"))
    made = table_teachers.make_teachers(protocol.SMOKE, data, cpu, False, ("robust",), store=store)["robust"]
    assert "robust: training" in capsys.readouterr().out and (store / "robust.safetensors").is_file()
    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(tmp_path / "cache2"))  # another machine: an empty cache
    teachers = table_teachers.make_teachers(protocol.SMOKE, data, cpu, False, ("robust",), store=store)
    printed = capsys.readouterr().out
    assert list(teachers) == ["robust"] and "robust: stored weights" in printed
    assert "training" not in printed  # neither the robust teacher nor the standard teacher it came from
    x = data.test.tensors[0][:4].float() / 255
    with torch.no_grad():
        assert torch.equal(teachers["robust"].model(x), made.model(x))
    assert teachers["robust"].description == made.description and teachers["robust"].extra["recipe"] == made.extra[
        "recipe"]
    with pytest.raises(FileNotFoundError, match="keeps the selected epoch only"):  # no fine-tune checkpoints stored
        table_teachers.make_teachers(protocol.SMOKE, data, cpu, False, ("robust-final",), store=store)
    # another recipe is not served the stored teacher, and its own teacher does not replace the stored one
    before = (store / "robust.safetensors").read_bytes()
    other = dataclasses.replace(protocol.SMOKE, robust_lr=protocol.SMOKE.robust_lr / 2)
    table_teachers.make_teachers(other, data, cpu, False, ("robust",), store=store)
    printed = capsys.readouterr().out
    assert "made by another recipe or from other images" in printed and "robust: training" in printed
    assert (store / "robust.safetensors").read_bytes() == before
    # a weights file that is not the one its record names is refused, not distilled from
    meta = json.loads((store / "robust.json").read_text())
    (store / "robust.json").write_text(json.dumps({**meta, "weights": "0" * 16}))
    with pytest.raises(ValueError, match="restore both from git"):
        table_teachers.make_teachers(protocol.SMOKE, data, cpu, False, ("robust",), store=store)


def test_a_teacher_the_table_has_evaluated_is_not_evaluated_again(bench, protocol, tmp_path, monkeypatch, capsys):
    # A stored robust teacher read on a fresh machine has its row in the table already: its evaluation (an hour of
    # AutoAttack on a ResNet-18) is not repeated, and rows trained with a re-made teacher are still marked.
    import torch

    import table_teachers

    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    robust = table_teachers.Teacher("robust", "a small model", torch.nn.Linear(3, 10), 1.0)
    fingerprint = table_teachers.weights_of(robust.model)
    monkeypatch.setattr(bench, "make_teachers", lambda *a, **k: {"robust": robust})
    monkeypatch.setattr(bench, "evaluate_teacher", lambda *a, **k: pytest.fail("evaluated a known teacher again"))
    monkeypatch.setattr(bench, "run_method", lambda *a, **k: {"student": None, "teachers": ["robust"],
                                                             "status": "ok", "method": "akd", "seed": 1})
    monkeypatch.setattr(bench, "print_row", lambda row: print(f"row teachers_remade={row.get('teachers_remade')}"))
    monkeypatch.setattr(bench, "write_any", lambda *a, **k: None)
    out = tmp_path / "out"
    out.mkdir()
    args = ["--smoke", "--no-progress", "--out", str(out), "--data", str(_smoke_data(tmp_path)), "--methods", "akd",
            "--seeds", "1"]
    setting = bench.setting_from(bench.build_parser().parse_args(args))
    evaluated = {"role": "robust", "weights": fingerprint, "per_image": {"clean": "1"}, "clean": 1.0}
    for teachers, remade in (([evaluated], None), ([{**evaluated, "weights": "x"}, {**evaluated,
                                                                                   "remade_date": "2026-12-08"}],
                                                   ["robust"])):
        (out / "cifar10_subset.json").write_text(json.dumps({**_header(protocol, setting), "teachers": teachers,
                                                             "rows": []}))
        assert bench.main(args) == 0
        assert f"row teachers_remade={remade}" in capsys.readouterr().out


def test_a_lost_teacher_is_retired_and_the_teacher_made_after_it_becomes_the_tables(bench, protocol, report,
                                                                                    tmp_path, capsys):
    # The robust teacher went with its machine's cache: rows trained with it leave the verdicts (†), the teacher
    # re-made after it becomes the table's (its rows lose their †), and the ablations run with the lost teacher stay
    # compared with the table row that had it.
    setting = protocol.Setting(epochs=2, test_images=10, autoattack="fast", val_images=16)

    def row(method, seed, weights, val_pgd10, **extra):
        return {**_row(method, seed, 0.8), "teacher_weights": weights, "selection": {
            "best": {"epoch": 2, "val_clean": 0.6, "val_pgd10": val_pgd10}}, **extra}

    old, new = {"robust": "old"}, {"robust": "new"}
    teacher = {"role": "robust", "description": "weakly adversarial", "weights": "old", "clean": 0.8,
               "attacks": {}, "autoattack": 0.4, "autoattack_version": "fast", "worst_case": 0.4, "n_test": 10,
               "train_time_s": 5.0}
    table = {**_header(protocol, setting), "protocol": "cpu-standard", "commands": ["c"], "teachers": [
        teacher, {**teacher, "weights": "new", "remade_date": "2026-12-09"}], "rows": [
        row("pgd-at", 0, {}, 0.30), row("akd", 0, old, 0.38), row("akd", 0, new, 0.35, teachers_remade=["robust"]),
        row("akd", 1, new, 0.36, teachers_remade=["robust"])]}
    ablations = {**table, "rows": [{**row("akd [alpha 1]", 0, old, 0.33), "split": "validation"},
                                   {**row("akd [final robust teacher]", 0, {"robust-final": "x"}, 0.36),
                                    "split": "validation"}]}
    out = tmp_path / "out"
    out.mkdir()
    protocol.write_json(out / "cifar10_subset.json", table)
    protocol.write_json(out / "cifar10_subset_ablations.json", ablations)
    args = ["--smoke", "--out", str(out)]
    assert bench.main([*args, "--retire-teacher", "teacher2"]) == 2
    assert "no teacher 'teacher2' with recorded weights to retire" in capsys.readouterr().err
    assert bench.main([*args, "--retire-teacher", "robust"]) == 0
    retired = json.loads((out / "cifar10_subset.json").read_text())
    assert [report.teacher_key(t) for t in retired["teachers"]] == ["robust", f"robust retired {protocol.today()}"]
    assert retired["teachers"][0]["weights"] == "new"
    assert [(report.method_label(r), r["seed"]) for r in retired["rows"]] == [
        ("pgd-at", 0), ("akd †", 0), ("akd", 0), ("akd", 1)]
    assert report.verdict_lines(retired)[0] == "| akd | pgd-at | not yet (needs ≥ 2 seeds of both; have 2 and 1) | |"
    markdown = (out / "cifar10_subset.md").read_text()
    assert f"robust retired {protocol.today()}: lost with its machine's cache" in markdown
    # the teacher made after a retired one (here: the next one) is the table's, not a re-made one
    rows = {report.teacher_key(t): t for t in retired["teachers"]}
    assert not report.place_teacher_row(rows, {**teacher, "weights": "new"}, "2026-12-10")
    assert [r["compared_with"] for r in json.loads((out / "cifar10_subset_ablations.json").read_text())["rows"]] == [
        old, old]
    page = (out / "cifar10_subset_ablations.md").read_text()
    assert "| akd [alpha 1] | – | 0 | 60.0 | 33.0 | -5.0 (PGD-10), +0.0 (clean) | +3.0 (PGD-10)" in page
    assert "| akd † | 0 | 60.0 | 38.0 |" in page and "| akd | 0 |" not in page
