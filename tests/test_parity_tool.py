"""tools/parity.py: its errors for an unusable --official-src, and its whole comparison (import from a
checkout, random weights, save in the release format, load through vzoo, compare) on a stand-in
"official" ULSAM written here, in the reference module's state-dict layout — so no official code is
needed. A deliberately wrong stand-in must make the tool fail.

The figures against the real official code are in docs/benchmarks.md ("Parity with the official
implementations"), with the commands that produced them.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import parity  # noqa: E402
from vzoo.benchmarks import parity as parity_specs  # noqa: E402

# the reference ULSAM's layout (g subspaces, each: depthwise 1x1 conv, BN, ReLU, 3x3 max-pool, pointwise
# conv to one map, BN, ReLU, softmax over H*W, x * map + x), written for this test; BROKEN drops the max-pool
STAND_IN = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_tensor_type(torch.cuda.FloatTensor)  # as the reference file does; the tool must skip it
BROKEN = {broken}


class SubSpace(nn.Module):
    def __init__(self, nin):
        super().__init__()
        self.conv_dws = nn.Conv2d(nin, nin, 1, groups=nin)
        self.bn_dws = nn.BatchNorm2d(nin, momentum=0.9)
        self.conv_point = nn.Conv2d(nin, 1, 1)
        self.bn_point = nn.BatchNorm2d(1, momentum=0.9)
        self.softmax = nn.Softmax(dim=2)

    def forward(self, x):
        a = F.relu(self.bn_dws(self.conv_dws(x)))
        if not BROKEN:
            a = F.max_pool2d(a, 3, 1, 1)
        a = F.relu(self.bn_point(self.conv_point(a)))
        b, _, h, w = a.shape
        a = self.softmax(a.reshape(b, 1, h * w)).reshape(b, 1, h, w)
        return x * a + x


class ULSAM(nn.Module):
    def __init__(self, nin, nout, h, w, num_splits):
        super().__init__()
        self.subspaces = nn.ModuleList(SubSpace(nin // num_splits) for _ in range(num_splits))

    def forward(self, x):
        parts = torch.chunk(x, len(self.subspaces), dim=1)
        return torch.cat([m(p) for m, p in zip(self.subspaces, parts)], dim=1)
'''


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "parity.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_official_src_without_the_official_file_is_named(tmp_path, capsys):
    assert parity.main(["van", "--official-src", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--official-src" in err and "models/van.py" in err and "Visual-Attention-Network/VAN-Classification" in err
    assert parity.main(["favit", "--official-src", str(tmp_path / "nope")]) == 2
    assert "--official-src" in capsys.readouterr().err
    assert parity.main(["hat"]) == 2  # no --official-src at all
    assert "--official-src is required" in capsys.readouterr().err


def test_every_family_is_one_spec_module(capsys):
    families = parity_specs.list_families()
    assert {"van", "favit", "biformer", "hat", "eca", "ulsam", "moat"} <= set(families)
    for name in families:
        spec = parity_specs.load_family(name)
        assert isinstance(spec, parity_specs.Family) and spec.repo and spec.candidates and spec.variants, name
    with pytest.raises(ValueError, match="parity family 'nope' is unknown"):
        parity_specs.load_family("nope")
    assert parity.main(["--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == families


def test_compare_and_randomize():
    ref = torch.tensor([[1.0, -4.0], [2.0, 0.5]])
    r = parity_specs.compare(ref + torch.tensor([[0.0, 0.0], [0.02, 0.0]]), ref)
    assert r["max_abs"] == pytest.approx(0.02) and r["max_rel"] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="shapes differ"):
        parity_specs.compare(ref[:1], ref)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.LayerNorm(4))
    parity_specs.randomize_(m, seed=0)
    bn, ln = m[1], m[2]
    for t, init in ((bn.running_mean, 0.0), (bn.running_var, 1.0), (bn.weight, 1.0), (bn.bias, 0.0),
                    (ln.weight, 1.0), (ln.bias, 0.0), (m[0].bias, None)):
        assert init is None or not torch.allclose(t, torch.full_like(t, init)), t
    assert (bn.running_var > 0).all()


@pytest.mark.parametrize("broken", [False, True])
def test_whole_check_on_a_stand_in_official_module(tmp_path, broken):
    (tmp_path / "ulsam.py").write_text(STAND_IN.format(broken=broken))
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nintro\n\n## models\n\n<!-- bench:models -->\nkept\n<!-- /bench:models -->\n")
    r = _run("ulsam", "--official-src", tmp_path, "--variants", "ulsam_g1", "ulsam_g4", "--img-size", "12",
             "--json", tmp_path / "r.json", "--markdown", md)
    import json
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["ulsam_g1", "ulsam_g1 attention maps",
                                                "ulsam_g4", "ulsam_g4 attention maps"]
    assert all(row["input"] == "2x64x12x12" for row in rows)
    assert [row["shape"] for row in rows] == ["2x64x12x12", "2x1x12x12", "2x64x12x12", "2x4x12x12"]
    text = md.read_text()
    assert "<!-- bench:models -->\nkept\n<!-- /bench:models -->" in text  # benchmark.py's section untouched
    assert "## Parity with the official implementations" in text and "<!-- parity:ulsam -->" in text
    if broken:
        assert r.returncode == 1, r.stdout + r.stderr
        assert all(row["status"].startswith("MISMATCH") and row["max_rel"] > 1e-2 for row in rows[1::2])
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(row["status"] == "ok" and row["max_rel"] < 1e-5 for row in rows)
        assert "| ulsam | ulsam_g4 | 2x64x12x12 |" in text and "CPU, fp32" in text


def test_markdown_block_is_rewritten_in_place(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## models\n\n<!-- bench:models -->\nB\n<!-- /bench:models -->\n")
    parity_specs.write_markdown(md, "van", "h1", "t1")
    parity_specs.write_markdown(md, "hat", "h2", "t2")
    parity_specs.write_markdown(md, "van", "h3", "t3")
    text = md.read_text()
    assert text.count("## Parity with the official implementations") == 1
    assert "<!-- parity:van -->\nh3\n\nt3\n<!-- /parity:van -->" in text and "t1" not in text
    assert text.index("parity:van") < text.index("parity:hat")  # families keep their place
    assert "<!-- bench:models -->\nB\n<!-- /bench:models -->" in text
