"""The throughput benchmark's --smoke run stays alive on CPU: it times both modes and writes consistent JSON."""
import json

import pytest

from conftest import load_benchmark


def _load_benchmark():
    return load_benchmark("throughput.py", "throughput_benchmark")


def test_smoke_run_writes_reference_and_fast_rows(tmp_path, capsys):
    out, md = tmp_path / "throughput.json", tmp_path / "throughput.md"
    _load_benchmark().main(["--smoke", "--json", str(out), "--markdown", str(md)])
    result = json.loads(out.read_text())
    assert result["device"].startswith("CPU") and result["torch"] and result["date"]
    assert "--smoke" in result["command"]
    rows = {row["mode"]: row for row in result["rows"]}
    assert set(rows) == {"reference", "fast"}
    assert rows["reference"]["settings"]["precision"] == "fp32" and not rows["reference"]["settings"]["channels_last"]
    assert result["setting"]["steps"] == [row["steps"] for row in rows.values()][:1]
    for row in rows.values():
        steps = row["steps"]
        assert row["first_step_s"] > 0
        assert row["images_per_s"] == pytest.approx(result["setting"]["batch_size"] / (row["step_ms"] / 1000))
        assert row["ideal_ms"] == pytest.approx((steps + 1) * row["student_fwd_bwd_ms"] + row["teachers_fwd_ms"])
        assert row["efficiency"] == pytest.approx(row["ideal_ms"] / row["step_ms"])
        assert row["student_fwd_bwd_ms"] > 0 and row["teachers_fwd_ms"] > 0
    speedup = result["speedup_fast_vs_reference"]["lcnet_050"]
    assert speedup == pytest.approx(rows["fast"]["images_per_s"] / rows["reference"]["images_per_s"])
    printed = capsys.readouterr().out
    assert "| lcnet_050 | reference |" in printed and "| lcnet_050 | fast |" in printed
    assert "Command:" in md.read_text() and "| lcnet_050 | fast |" in md.read_text()


def test_several_precisions_and_step_counts_each_get_a_row_and_a_speed_up(tmp_path):
    out = tmp_path / "throughput.json"
    result = _load_benchmark().main(["--smoke", "--steps", "1", "2", "--precisions", "fp32", "bf16", "--iters", "1",
                                     "--json", str(out)])
    got = {(r["steps"], r["mode"], r["settings"]["precision"]) for r in result["rows"]}
    assert got == {(k, m, p) for k in (1, 2) for m, p in
                   [("reference", "fp32"), ("fast", "fp32"), ("fast", "bfloat16")]}
    assert result["complete"] and set(result["speedup_fast_vs_reference"]) == {
        "lcnet_050 PGD-1", "lcnet_050 PGD-1 bfloat16", "lcnet_050 PGD-2", "lcnet_050 PGD-2 bfloat16"}


def test_the_cpu_scale_preset_times_every_method_with_its_protocol_teachers():
    bench = _load_benchmark()
    runs = bench.protocol_runs(bench.parse_args(["--preset", "cpu-scale"]))
    methods = [m for m, _, _ in runs]
    assert methods[0] == "pgd-at" and {"trades", "ard", "akd", "sa-mdrad", "dual-path", "mtard"} <= set(methods)
    by = {(m, o): t for m, t, o in runs}
    assert by[("pgd-at", "live")] == []
    assert by[("sa-mdrad", "cached")] == by[("sa-mdrad", "live")] == ["cifar10_resnet18_autoattack", "regnetx_002"]
    assert ("mtard", "cached") in by and ("akd", "cached") not in by
