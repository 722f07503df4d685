"""tools/benchmark.py: suite discovery, the models suite end to end, and the generated Markdown section."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import benchmark  # noqa: E402
from vzoo.benchmarks import list_suites, load_suite  # noqa: E402
from vzoo.benchmarks._timing import measure  # noqa: E402


def test_suites_are_discovered_and_unknown_suite_is_named():
    assert "models" in list_suites()
    with pytest.raises(ValueError, match="'nope' is unknown.*models"):
        load_suite("nope")


def test_measure_reports_time_and_memory_and_rejects_bad_counts():
    import torch
    r = measure(lambda: torch.ones(256, 256).sum(), "cpu", warmup=0, iters=2)
    assert r["ms"] > 0 and r["ms_min"] <= r["ms"] <= r["ms_max"]
    with pytest.raises(ValueError, match="iters"):
        measure(lambda: None, "cpu", iters=0)


def test_models_suite_writes_table_json_and_markdown_section(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nintro kept\n\n## models\n\n"
                  "<!-- bench:models -->\nold\n<!-- /bench:models -->\n\ntail kept\n")
    cmd = [sys.executable, str(ROOT / "tools" / "benchmark.py"), "models", "--models", "resnet10t",
           "--img-size", "32", "48", "--batch-size", "2", "--iters", "1", "--warmup", "0", "--train",
           "--device", "cpu", "--json", str(tmp_path / "r.json"), "--markdown", str(md)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| model | params_m | size |" in r.stdout and "resnet10t" in r.stdout
    text = md.read_text()
    assert "intro kept" in text and "tail kept" in text and "old" not in text
    assert text.count("<!-- bench:models -->") == 1 and "Device: CPU" in text
    import json
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [row["size"] for row in rows] == [32, 48] and all(row["train_img_s"] > 0 for row in rows)


def test_format_table_takes_the_union_of_columns():
    t = benchmark.format_table([dict(a=1), dict(a=2.5, b=None)])
    assert t.splitlines()[0] == "| a | b |" and t.splitlines()[-1] == "| 2.5 | - |"


def test_markdown_sections_are_named_independently(tmp_path):
    md = tmp_path / "b.md"
    benchmark.write_markdown_section(md, "models", "h1", "| a |")
    benchmark.write_markdown_section(md, "models-eca", "h2", "| b |")
    benchmark.write_markdown_section(md, "models", "h3", "| c |")  # rewrites only its own section
    text = md.read_text()
    assert "h1" not in text and "h2" in text and "h3" in text
    assert text.count("<!-- bench:models -->") == 1 and text.count("<!-- bench:models-eca -->") == 1


def test_markdown_table_columns_alignment_and_format():
    from vzoo.utils import markdown_table
    rows = [dict(a=1, b=None), dict(a=2, c="x")]
    assert markdown_table(rows, columns=dict(b="B", a="A"), fmt=lambda v: "-" if v is None else str(v),
                          right=("a",)).splitlines() == ["| B | A |", "| --- | ---: |", "| - | 1 |", "| - | 2 |"]
    assert markdown_table([], columns=["a"]) == "| a |\n| --- |" and markdown_table([]) == "(no rows)"


def test_atomic_write_follows_the_umask_and_keeps_the_old_file_on_failure(tmp_path):
    import os
    import torch
    from safetensors.torch import save_file
    from vzoo.utils import atomic_write, atomic_write_text
    path = tmp_path / "sub" / "f.txt"
    old = os.umask(0o022)
    try:
        atomic_write_text(path, "one")
        assert path.read_text() == "one" and (path.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0o600
        st = tmp_path / "w.safetensors"
        with atomic_write(st) as tmp:  # a writer that makes its own 0o600 file (safetensors) gets the umask too
            save_file({"w": torch.ones(2)}, tmp)
        assert (st.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        atomic_write_text(path, "two")
        assert (path.stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_write(path) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "two" and os.listdir(path.parent) == ["f.txt"]  # no temporary file left
