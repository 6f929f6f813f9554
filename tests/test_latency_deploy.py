"""benchmarks/latency_deploy.py --smoke: eager, onnxruntime fp32 and int8 rows at 1 and 2 threads, and the goals."""
import json

from conftest import load_benchmark


def _load_benchmark():
    return load_benchmark("latency_deploy.py", "latency_deploy_benchmark")


def test_smoke_run_times_every_runtime_at_both_thread_counts(tmp_path):
    bench = _load_benchmark()
    bench.main(["--smoke", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "latency_cpu.json").read_text())
    assert result["complete"] and result["date"] and "--smoke" in result["command"]
    assert result["device"]["cpu_count"] >= 1 and result["versions"]["onnxruntime"]
    batch = result["setting"]["batch_size"]
    rows = {(r["threads"], r["kind"]): r for r in result["rows"]}
    assert set(rows) == {(t, k) for t in (1, 2) for k in ("eager", "fp32", "int8")}
    for row in rows.values():
        assert 0 < row["batch1_p50_ms"] <= row["batch1_p95_ms"]
        assert row[f"batch{batch}_images_per_s"] > 0
        assert row["kind"] == "eager" or row["size_bytes"] > 0
        assert "load_average_1min_before" in row
    assert rows[(1, "int8")]["size_bytes"] < rows[(1, "fp32")]["size_bytes"]  # it really is the quantized file
    assert len(result["goals"]) == 4 and all(isinstance(g["passed"], bool) for g in result["goals"])
    markdown = (tmp_path / "latency_cpu.md").read_text()
    assert bench.GOAL_ORT in markdown and bench.GOAL_INT8 in markdown
    assert markdown.count("| ORT fp32 vs eager |") == 2 and markdown.count("| int8 vs ORT fp32 |") == 2
    assert "Skipped: no bundle" in markdown  # --smoke measures latency only, and says so
