"""BiFormer: variant table, official-checkpoint loading, dense-prediction settings.

Official-format checkpoints are fabricated from a vzoo model with an independently written inverse
key mapping (vzoo names → the release's ``models/biformer.py`` / ``models/biformer_stl.py`` names).
The outputs of the official code itself were compared outside CI (the official code is not part of
vzoo; the figure is in the issue's closing note): max relative error < 1e-6 in fp32 for T/S/B/STL at
224, and for the det/seg setting (n_win 8, auto_pad, 200x264 input) per stage.
"""
import re

import pytest
import timm
import torch

from vzoo.models import CheckpointError
from vzoo.models.biformer import BiFormer, checkpoint_filter_fn

SMALL = dict(depths=(1, 1, 2, 1))  # the real widths and attention settings, fewer blocks


def to_official(sd, layout="biformer", topks=(1, 4, 16, -2)):
    """vzoo state dict → the release's key names (inverse of checkpoint_filter_fn, written apart)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("stem."):
            k = "downsample_layers.0." + k[len("stem."):]
        elif re.match(r"stages\.\d+\.downsample\.", k):
            i = int(k.split(".")[1])
            k = f"downsample_layers.{i}." + k.split(".downsample.", 1)[1]
        elif ".blocks." in k:
            _, i, _, j, rest = k.split(".", 4)
            routed = topks[int(i)] > 0
            if rest.startswith("attn.qkv.") and routed:
                rest = "attn.qkv.qkv." + rest[len("attn.qkv."):]
            elif rest.startswith("attn.proj.") and routed:
                rest = "attn.wo." + rest[len("attn.proj."):]
            elif rest.startswith("attn.router_proj."):
                rest = "attn.router.emb." + rest[len("attn.router_proj."):]
            elif rest.startswith("mlp.fc1."):
                rest = "mlp.0." + rest[len("mlp.fc1."):]
            elif rest.startswith("mlp.fc2."):
                rest = ("mlp.3." if layout == "biformer" else "mlp.2.") + rest[len("mlp.fc2."):]
            k = f"stages.{i}.{j}.{rest}" if layout == "biformer" else f"stages.{i}.blocks.{j}.{rest}"
        out[k] = v
    return out


def _randomized(model):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def test_variants_match_the_release():
    """Parameter counts of the README (13.1 / 25.5 / 56.8 / 28.4 M) and the per-stage settings."""
    expected = dict(biformer_tiny=13.1, biformer_small=25.5, biformer_base=56.8, biformer_stl=28.4)
    for name, params in expected.items():
        with torch.device("meta"):
            m = timm.create_model(name)
        assert round(sum(p.numel() for p in m.parameters()) / 1e6, 1) == params, name
        assert m.pretrained_cfg["min_input_size"] == (3, 128, 128)
        blocks = [s.blocks for s in m.stages]
        assert [b[0].attn.topk for b in blocks[:3]] == [1, 4, 16]
        assert all(b[0].attn.n_win == 7 and b[0].attn.num_heads == b[0].attn.qk_dim // 32 for b in blocks[:3])
        assert blocks[3][0].attn.num_heads == 8 and blocks[3][0].attn.lepe.kernel_size == (5, 5)
        assert (blocks[0][0].pos_embed is None) == (name == "biformer_stl")
    cfg = timm.create_model("biformer_small", pretrained=False).pretrained_cfg
    assert "83.8" in " ".join(cfg["notes"])


@pytest.mark.parametrize("layout", ["biformer", "stl"])
def test_official_checkpoint_loads_and_matches(tmp_path, layout):
    name = "biformer_tiny" if layout == "biformer" else "biformer_stl"
    torch.manual_seed(0)
    ref = _randomized(timm.create_model(name, **SMALL))
    official = to_official(ref.state_dict(), layout)
    assert any(k.startswith("downsample_layers.") for k in official)
    path = tmp_path / "official.pth"
    torch.save({"model": official, "epoch": 299, "max_accuracy": 81.4}, path)
    torch.manual_seed(1)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL).eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x), rtol=0, atol=0)


def test_official_checkpoint_with_a_missing_key_names_it(tmp_path):
    ref = timm.create_model("biformer_tiny", **SMALL)
    official = to_official(ref.state_dict())
    del official["stages.2.1.attn.qkv.qkv.weight"]
    path = tmp_path / "bad.pth"
    torch.save({"model": official}, path)
    with pytest.raises(CheckpointError, match=r"stages\.2\.blocks\.1\.attn\.qkv\.weight"):
        timm.create_model("biformer_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL)


def test_dense_backbone_settings(tmp_path):
    """Det/seg: n_win for the training size, auto_pad, extra LayerNorm2d per feature (identity when a
    classification checkpoint is loaded), any input size."""
    ref = _randomized(timm.create_model("biformer_tiny", **SMALL))
    path = tmp_path / "cls.pth"
    torch.save({"model": to_official(ref.state_dict())}, path)
    fm = timm.create_model("biformer_tiny", features_only=True, pretrained=True, n_win=8, feature_norms=True,
                           pretrained_cfg_overlay=dict(file=str(path)), **SMALL).eval()
    x = torch.randn(1, 3, 96, 160)  # stages 2 and 3 (12 x 20, 6 x 10) are padded to 16 x 24, 8 x 16
    with torch.no_grad():
        feats = fm(x)
        for s in ref.stages[:3]:
            for b in s.blocks:
                b.attn.n_win = 8
        plain = ref.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 24, 40), (128, 12, 20), (256, 6, 10), (512, 3, 5)]
    ln = torch.nn.functional.layer_norm
    for f, p in zip(feats, plain):  # identity-initialised LayerNorm2d over channels
        torch.testing.assert_close(f, ln(p.permute(0, 2, 3, 1), p.shape[1:2], eps=1e-6).permute(0, 3, 1, 2))


def test_checkpoints_saved_before_the_feature_norms_rename_load(tmp_path):
    """vzoo checkpoints of models built with ``extra_norms=True`` (now ``feature_norms=True``) hold
    ``extra_norms.{i}.*``: they load from a file, through load_state_dict and inside a detector's keys."""
    m = _randomized(timm.create_model("biformer_tiny", feature_norms=True, **SMALL))
    old = {k.replace("feature_transforms.", "extra_norms."): v for k, v in m.state_dict().items()}
    assert any(k.startswith("extra_norms.") for k in old)
    path = tmp_path / "old.pth"
    torch.save({"state_dict": old}, path)
    loaded = timm.create_model("biformer_tiny", feature_norms=True, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    fresh = timm.create_model("biformer_tiny", feature_norms=True, **SMALL)
    fresh.load_state_dict(old)
    wrapped = torch.nn.ModuleDict(dict(body=timm.create_model("biformer_tiny", feature_norms=True, **SMALL)))
    wrapped.load_state_dict({f"body.{k}": v for k, v in old.items()})
    for model in (loaded, fresh, wrapped["body"]):
        for k, v in m.state_dict().items():
            torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_filter_passes_vzoo_state_dicts_through():
    m = timm.create_model("biformer_tiny", **SMALL)
    sd = m.state_dict()
    assert checkpoint_filter_fn(sd, m).keys() == sd.keys()


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        BiFormer(layout="swin")
    with pytest.raises(ValueError, match="topks"):
        BiFormer(topks=(1, 4, 16))
    with pytest.raises(ValueError, match="topk must be"):
        BiFormer(topks=(1, 4, 0, -2))
    m = timm.create_model("biformer_tiny", auto_pad=False, **SMALL)
    with pytest.raises(ValueError, match="n_win=7"):
        m(torch.randn(1, 3, 128, 128))
