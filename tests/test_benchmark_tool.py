"""tools/benchmark.py: suite discovery, the models suite end to end, and the generated Markdown section."""
import os
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


# ------------------------------------------------------------------------------ models --vs-official
@pytest.fixture
def keep_threads():
    import torch
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # --threads 1 in-process must not slow the tests after it


def test_vs_official_without_a_checkout_times_vzoo_and_timm_and_says_why(tmp_path, capsys, keep_threads):
    import json
    out = tmp_path / "r.json"
    assert benchmark.main(["models", "--vs-official", "--official-root", str(tmp_path), "--families", "eca",
                           "--variants", "eca=eca_resnet18", "--timm-equivalent", "eca_resnet18=resnet18",
                           "--img-size", "64", "--batch-size", "1", "2", "--threads", "1", "--repeats", "2",
                           "--iters", "1", "--warmup", "0", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 threads" in printed and "official: skipped, no checkout of BangguWu/ECANet" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["batch"]) for r in rows] == [("infer", 1), ("infer", 2), ("train", 1), ("train", 2)]
    for r in rows:
        assert r["variant"] == "eca_resnet18" and r["timm_model"] == "resnet18"
        assert r["vzoo_img_s"] > 0 and r["timm_img_s"] > 0 and r["x_timm"] > 0 and r["x_timm_cpu"] > 0
        assert r["official_img_s"] is None and r["x_official"] is None and r["max_rel_err"] is None
    # a training step allocates the activations kept for backward and the gradients (11.7M params: > 40 MiB)
    assert all(r["vzoo_peak_mb"] > 40 and r["timm_peak_mb"] > 40 for r in rows if r["mode"] == "train")


def test_vs_official_rejects_unknown_families_and_bad_pairs(tmp_path):
    with pytest.raises(ValueError, match="--families: unknown \\['nope'\\]"):
        benchmark.main(["models", "--vs-official", "--families", "nope"])
    with pytest.raises(ValueError, match="--variants takes KEY=VALUE"):
        benchmark.main(["models", "--vs-official", "--official-root", str(tmp_path), "--families", "ulsam",
                        "--variants", "ulsam_g4"])


def test_vs_official_moat_names_tensorflow_as_the_reason(tmp_path):
    import argparse
    import importlib.util
    from vzoo.benchmarks.models import _family_models
    from vzoo.benchmarks.parity import load_family
    args = argparse.Namespace(variants=[], timm_equivalent=[], official_src=[], official_root=str(tmp_path))
    models, variant, timm_name, note = _family_models("moat", load_family("moat"), args, str(tmp_path))
    assert set(models) == {"vzoo"} and variant == "tiny_moat_0" and timm_name is None
    tf = importlib.util.find_spec("tensorflow") is not None
    assert note == "official: skipped, google-research/deeplab2 is TensorFlow, " + (
        "which this suite does not time yet" if tf else "which is not installed here")


def test_peak_tensor_mb_reads_the_allocations_of_the_call():
    import torch
    from vzoo.benchmarks.models import peak_tensor_mb
    keep = torch.ones(1 << 20)  # allocated before the call: not counted

    def fn():
        a = torch.ones(1 << 20)  # 4 MiB each; a and b live together, c after a is freed
        b = a * 2
        del a
        c = b + 1
        return c.sum()
    assert peak_tensor_mb(fn) == pytest.approx(8, abs=0.01)
    assert keep.sum() > 0


def test_interleaved_timing_alternates_and_leaves_out_an_impl_that_fails():
    import argparse
    from vzoo.benchmarks.models import _time_interleaved
    calls = []

    def broken():
        raise RuntimeError("cannot run this case")
    fns = dict(vzoo=lambda: calls.append("v"), official=broken, timm=lambda: calls.append("t"))
    best, errors = _time_interleaved(fns, argparse.Namespace(repeats=3, warmup=0, iters=1, device="cpu"))
    assert set(best) == {"vzoo", "timm"} and errors == ["official: RuntimeError: cannot run this case"]
    assert calls[:8] == ["v", "t"] * 4  # a first call each, then rounds alternating; then the profiled calls
    assert all(b["ms"] > 0 and b["cpu_ms"] >= 0 and b["peak_mb"] == 0 for b in best.values())


@pytest.mark.skipif(not (os.environ.get("VZOO_OFFICIAL_ROOT") and os.path.isfile(
    os.path.join(os.environ.get("VZOO_OFFICIAL_ROOT", ""), "ULSAM", "ulsam.py"))),
    reason="local only: needs VZOO_OFFICIAL_ROOT holding a checkout of Nandan91/ULSAM as ULSAM/")
def test_vs_official_against_the_real_official_ulsam(keep_threads):
    import json
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        assert benchmark.main(["models", "--vs-official", "--families", "ulsam", "--batch-size", "1", "2",
                               "--threads", "1", "--repeats", "2", "--iters", "1", "--json", str(out)]) == 0
        rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(r["official_img_s"] > 0 and r["x_official"] > 0 and r["note"] is None for r in rows)
    assert all(r["max_rel_err"] < 1e-4 for r in rows if r["mode"] == "infer")  # the official weights went into vzoo


def test_best_of_rounds_interleaves_and_keeps_each_best():
    from vzoo.benchmarks._timing import best_of_rounds
    calls = []
    r = best_of_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "cpu", warmup=0, iters=1,
                       repeats=3)
    assert calls == ["a", "b"] * 3 and set(r) == {"a", "b"} and all(x["ms"] >= 0 for x in r.values())


def test_na_suite_states_threads_and_times_each_dispatch_path():
    import argparse
    import torch
    suite = load_suite("na")
    p = argparse.ArgumentParser()
    suite.add_arguments(p)
    before = torch.get_num_threads()
    try:
        rows = suite.run(p.parse_args(["--cases", "tiny", "--backends", "torch", "torch:tiled", "torch:dense",
                                       "torch:window", "sdpa", "--device", "cpu", "--bwd", "--threads", "1",
                                       "--repeats", "2", "--iters", "1", "--warmup", "0"]))
    finally:
        torch.set_num_threads(before)
    assert [r["backend"] for r in rows] == ["torch", "torch:tiled", "torch:dense", "torch:window", "sdpa"]
    assert all(r["threads"] == 1 and r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in rows)
    assert all(r["x_vs_sdpa"] > 0 and r["fwdbwd_x_vs_sdpa"] > 0 for r in rows[:-1])


# --- na suite: useful work, throughput columns and the device roof (issue 20 item 4) ---

@pytest.mark.parametrize("shape, kernel, stride, dilation, causal", [
    ((4, 4), (3, 3), (1, 1), (1, 1), (False, False)),
    ((7, 5), (3, 5), (2, 1), (2, 1), (False, False)),  # stride, dilation, a group shorter than the map
    ((8, 7), (3, 3), (3, 3), (1, 1), (False, False)),  # windows that do not tile the map
    ((6, 5), (3, 3), (1, 2), (1, 1), (True, False)),  # causal: fewer keys near the start
])
def test_na_pairs_match_the_brute_force_neighbourhood_mask(shape, kernel, stride, dilation, causal):
    import torch
    from vzoo.benchmarks.na import na_pairs
    from vzoo.layers._na_torch import _axis_pair_mask
    masks = [_axis_pair_mask(*axis)[0] for axis in zip(shape, kernel, stride, dilation, causal)]
    full = (masks[0][:, None, :, None] & masks[1][None, :, None, :]).reshape(torch.Size(shape).numel(), -1)
    assert na_pairs(shape, kernel, stride, dilation, causal) == int(full.sum())


def test_na_useful_work_on_a_hand_computed_case():
    from vzoo.benchmarks.na import useful_work
    # B=1, 4x4 map, k=3, 1 head x 2 dims, fp32: 16 queries x 9 keys = 144 pairs
    w = useful_work(batch=1, shape=(4, 4), heads=1, dim_qk=2, dim_v=2, kernel=(3, 3), stride=(1, 1),
                    dilation=(1, 1), itemsize=4)
    assert w["fwd_flops"] == 2 * 144 * (2 + 2) == 1152  # Q K^T and P V
    assert w["fwdbwd_flops"] == 2 * 144 * (4 * 2 + 3 * 2) == 3.5 * 1152  # + recompute, dV, dP, dQ, dK
    assert w["fwd_bytes"] == 16 * 4 * 2 * 4 and w["fwdbwd_bytes"] == 2 * w["fwd_bytes"]  # Q, K, V, O (+ grads)


def test_device_roof_lookup_and_the_issue_s_na_roofs():
    from vzoo.benchmarks._timing import device_roof, roof_flops
    from vzoo.benchmarks.na import throughput_columns, useful_work
    h100, h200 = device_roof("NVIDIA H100 80GB HBM3"), device_roof("NVIDIA H200")
    assert (h100["device"], h100["bytes_per_s"], h100["flops"]) == ("H100 SXM", 3.35e12, 989e12)
    assert (h200["device"], h200["bytes_per_s"], h200["flops"]) == ("H200 SXM", 4.8e12, 989e12)
    assert all(device_roof(n) is None for n in ("NVIDIA H100 PCIe", "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB",
                                                "CPU x86_64, 1 threads"))
    # issue 20: bf16 NA does k^2 / 2 FLOP per byte; roofs 82 / 118 TFLOP/s at k=7, 283 / 406 at k=13
    for k, expected in ((7, (82, 118)), (13, (283, 406))):
        w = useful_work(batch=8, shape=(64, 64), heads=4, dim_qk=64, dim_v=64, kernel=(k, k), stride=(1, 1),
                        dilation=(1, 1), itemsize=2)
        got = [roof_flops(r, w["fwd_flops"], w["fwd_bytes"]) / 1e12 for r in (h100, h200)]
        assert [round(x) for x in got] == list(expected)
        # a forward at exactly the roof's time reads 100% of it; the column is absent without a timing
        cols = throughput_columns({"fwd_ms": w["fwd_flops"] / (got[0] * 1e12) * 1e3}, w, h100)
        assert abs(cols["fwd_pct_roof"] - 100) < 1e-9 and abs(cols["fwd_tflops"] - got[0]) < 1e-9
        assert "fwdbwd_tflops" not in cols
    w = useful_work(batch=1, shape=(64, 64), heads=1, dim_qk=64, dim_v=64, kernel=(63, 63), stride=(1, 1),
                    dilation=(1, 1), itemsize=2)
    assert roof_flops(h100, w["fwd_flops"], w["fwd_bytes"]) == 989e12  # large kernels: compute-bound


def test_na_tool_prints_throughput_columns_and_why_natten_fna_did_not_run(tmp_path):
    import json
    import natten
    from vzoo.benchmarks.na import useful_work
    cmd = [sys.executable, str(ROOT / "tools" / "benchmark.py"), "na", "--cases", "tiny", "--backends", "torch",
           "natten-fna", "sdpa", "--device", "cpu", "--threads", "1", "--bwd", "--iters", "1", "--warmup", "0",
           "--json", str(tmp_path / "r.json")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("| case "))
    for col in ("fwd_tflops", "fwdbwd_tflops", "fwd_gbps", "fwdbwd_gbps", "fwd_ms", "x_vs_sdpa"):
        assert f" {col} " in header
    assert "pct_roof" not in header  # no roof for a CPU
    rows = {row["backend"]: row for row in json.loads((tmp_path / "r.json").read_text())["rows"]}
    w = useful_work(batch=1, shape=(12, 10), heads=2, dim_qk=8, dim_v=8, kernel=(5, 5), stride=(1, 1),
                    dilation=(2, 2), itemsize=4)
    for be in ("torch", "sdpa"):  # both credited with the same useful NA work
        assert rows[be]["fwd_tflops"] == pytest.approx(w["fwd_flops"] / rows[be]["fwd_ms"] / 1e9)
        assert rows[be]["fwdbwd_gbps"] == pytest.approx(w["fwdbwd_bytes"] / rows[be]["fwdbwd_ms"] / 1e6)
    if not natten.HAS_LIBNATTEN:
        assert "natten has no compiled backends here" in rows["natten-fna"]["note"]
        assert "fwd_ms" not in rows["natten-fna"]
