"""The checkpoint index, safe loading, and tools/convert.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open

from vzoo.checkpoint_index import load_index, resolve_filter_fn, sha256_file
from vzoo.models import CheckpointError, load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import convert  # noqa: E402


def test_index_entries_are_valid_and_registered():
    index = load_index()
    assert index, "vzoo/data/checkpoint_index/ is empty"
    names = set(timm.list_models())
    for name, entry in index.items():
        assert name in names, f"{entry['index_file']}: {name} is not registered with timm"
        fn = resolve_filter_fn(entry["filter_fn"])
        assert fn is None or callable(fn), name


def test_index_rejects_bad_entries(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"family": "x", "models": {"m": {"source": "s", "format": "zip",
                                                                                "sha256": None, "filter_fn": None}}}))
    with pytest.raises(ValueError, match="format='zip'"):
        load_index(tmp_path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_never_unpickles_code(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Evil()}, p)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint_file(p)


def test_loading_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint_file(tmp_path / "nope.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_checkpoint_file(tmp_path / "junk.safetensors")
    torch.save({"epoch": 1}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_checkpoint_file(tmp_path / "nostate.pth")


def test_unwraps_training_checkpoints(tmp_path):
    sd = {"a.weight": torch.ones(2)}
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "c.pth")
    assert list(load_checkpoint_file(tmp_path / "c.pth")) == ["a.weight"]


@pytest.fixture
def official(tmp_path):
    """A file in the official release's format for timm's SHViT (timm's own key layout), with an
    index that knows its sha256."""
    torch.manual_seed(0)
    model = timm.create_model("shvit_s1").eval()
    src = tmp_path / "official.pth"
    torch.save({"model": model.state_dict()}, src)
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    (index_dir / "t.json").write_text(json.dumps({"family": "t", "models": {"shvit_s1": {
        "source": "https://example.invalid/shvit_s1.pth", "format": "torch", "sha256": sha256_file(src),
        "filter_fn": "timm.models.shvit.checkpoint_filter_fn"}}}))
    return model, src, index_dir


def test_convert_writes_verified_safetensors(official, tmp_path):
    model, src, index_dir = official
    dst = tmp_path / "out" / "shvit_s1.safetensors"
    info = convert.convert("shvit_s1", str(src), str(dst), index_dir=index_dir)
    assert info["keys"] == len(model.state_dict())
    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
    assert meta["vzoo_model"] == "shvit_s1" and meta["source_sha256"] == sha256_file(src)
    loaded = timm.create_model("shvit_s1", pretrained=True, pretrained_cfg_overlay=dict(file=str(dst))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_convert_refuses_a_wrong_sha256(official, tmp_path):
    _, src, index_dir = official
    with open(src, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(SystemExit, match="sha256"):
        convert.convert("shvit_s1", str(src), str(tmp_path / "x.safetensors"), index_dir=index_dir)
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_cli_names_unknown_models(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), "no_such_model", "a", "b"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "not in the checkpoint index" in r.stderr


def test_convert_output_has_the_umask_mode_and_record_pins_the_sha256(official, tmp_path):
    _, src, index_dir = official
    data = json.loads((index_dir / "t.json").read_text())
    data["models"]["shvit_s1"]["sha256"] = None
    (index_dir / "t.json").write_text(json.dumps(data))
    dst = tmp_path / "shvit_s1.safetensors"
    old = os.umask(0o022)
    try:
        convert.convert("shvit_s1", str(src), str(dst), index_dir=index_dir, record=True)
    finally:
        os.umask(old)
    assert dst.stat().st_mode & 0o777 == 0o644  # as any new file, not safetensors' own 0o600
    assert load_index(index_dir)["shvit_s1"]["sha256"] == sha256_file(src)  # --record wrote it


def test_convert_without_src_leaves_timm_models_to_timm():
    with pytest.raises(SystemExit, match="timm model"):
        convert.main(["shvit_s1", "--record"])
