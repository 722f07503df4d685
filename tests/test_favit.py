"""FaViT: official sizes, FaSA's window pooling, and loading official-format checkpoints.

The official code is not needed here: the checkpoint test maps vzoo's keys back to the release's names
(``pyramid_to_pvt_keys``, the inverse of the mapping ``checkpoint_filter_fn`` applies), checks a list of
names the release's files hold and loads the result through timm's pretrained path. Parity with the
official code itself (max relative error of the logits < 1e-6 for B0–B3 at 224×224 and 160×256) was
measured outside the repository and is recorded in ``vzoo/data/checkpoint_index/favit.json``.
"""
import pytest
import timm
import torch
from torch import nn

import vzoo  # noqa: F401
from vzoo.models import CheckpointError
from vzoo.models._pyramid import pyramid_to_pvt_keys
from vzoo.models.favit import OFFICIAL_BLOCK_RENAMES, FactorizationAttention, _mirror_pad, pooled_window, fasa_split
from zoo import check_features_any_size

# parameter counts of the official classification models (q2479036243/FaViT classification/favit.py,
# built and counted; README: 3.4 / 13 / 24 / 48 M)
OFFICIAL_PARAMS = {"favit_b0": 3427704, "favit_b1": 12958568, "favit_b2": 24919896, "favit_b3": 48746440}


def _params(name: str) -> int:
    with torch.device("meta"):
        m = timm.create_model(name)
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_param_counts_match_official(name):
    assert _params(name) == OFFICIAL_PARAMS[name]


def test_all_variants_registered():
    assert sorted(timm.list_models("favit_*")) == [f"favit_b{i}" for i in range(4)]


def test_channel_split():
    assert fasa_split(32, 8) == (4, 14, 14)
    assert fasa_split(256, 1) == (32, 224)
    assert fasa_split(384, 2) == (48, 168, 168)
    with pytest.raises(ValueError, match="num_heads"):
        FactorizationAttention(48, num_heads=5, sr_ratio=2)


# ------------------------------------------------------------------------- window pooling
def test_mirror_pad_matches_reflection_and_extends_it():
    x = torch.randn(2, 3, 5, 9)
    torch.testing.assert_close(_mirror_pad(x, 4, 8), nn.ReflectionPad2d((0, 8, 0, 4))(x), rtol=0, atol=0)
    # beyond what ReflectionPad2d accepts: reflect again from the new border
    once = nn.ReflectionPad2d((0, 0, 0, 4))(x)           # 5 -> 9 rows
    twice = nn.ReflectionPad2d((0, 0, 0, 3))(once)       # 9 -> 12 rows
    torch.testing.assert_close(_mirror_pad(x, 7, 0), twice, rtol=0, atol=0)
    one_row = torch.randn(1, 2, 1, 4)
    assert torch.equal(_mirror_pad(one_row, 3, 0), one_row.expand(1, 2, 4, 4))


@pytest.mark.parametrize("hw,window,dilation,heads", [((14, 21), 7, 1, 2), ((20, 33), 7, 4, 2), ((9, 9), 3, 2, 1)])
def test_pooled_window_is_unfold_then_adaptive_pool(hw, window, dilation, heads):
    """The release's formulation: reflection pad, nn.Unfold over non-overlapping dilated spans, head-wise
    reshape, then AdaptiveAvgPool over the flattened (windows, channels) array."""
    B, C = 2, 4 * heads
    x = torch.randn(B, C, *hw, dtype=torch.float64)
    span = dilation * (window - 1) + 1
    pb, pr = (-hw[0]) % span, (-hw[1]) % span
    xp = nn.ReflectionPad2d((0, pr, 0, pb))(x)
    u = nn.Unfold(window, dilation=dilation, stride=span)(xp)  # (B, C*w*w, L)
    c, L = C // heads, u.shape[-1]
    u = u.reshape(B, heads, c, window * window, L).permute(0, 1, 3, 4, 2).reshape(B, heads, window * window, L * c)
    ref = nn.AdaptiveAvgPool2d((None, c))(u)
    torch.testing.assert_close(pooled_window(x, window, dilation, heads), ref)


# ------------------------------------------------------------------------- official checkpoints
def _randomised(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    with torch.no_grad():  # LayerNorm weights away from 1/0 so that every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_official_checkpoint_loads(tmp_path):
    model = _randomised("favit_b0")
    official = pyramid_to_pvt_keys(model.state_dict(), OFFICIAL_BLOCK_RENAMES)
    for key in ("patch_embed1.proj.weight", "patch_embed4.norm.bias", "block1.0.attn.q.weight",
                "block1.1.attn.kv_g.weight", "block2.0.attn.sr.weight", "block3.5.attn.norm.weight",
                "block1.0.attn.local_conv_g.weight", "block3.0.attn.kv_l.depth_conv.weight",
                "block4.1.attn.kv_l.point_conv.bias", "block1.0.attn.fcs.1.weight",
                "block2.1.attn.single_heads.0.bias", "block3.2.attn.local_convs.1.weight",
                "block4.0.attn.local_convs.0.weight", "block2.0.mlp.dwconv.dwconv.weight", "norm4.weight",
                "head.weight"):
        assert key in official, key
    assert "block4.0.attn.fcs.1.weight" not in official  # the last stage has one fine group
    assert not any(k.startswith("stages.") for k in official)
    path = tmp_path / "favit_b0.pth"
    torch.save({"model": official, "epoch": 299}, path)  # as the release's main.py saves
    torch.manual_seed(99)
    loaded = timm.create_model("favit_b0", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_official_checkpoint_of_wrong_variant_names_keys(tmp_path):
    official = pyramid_to_pvt_keys(timm.create_model("favit_b0").state_dict(), OFFICIAL_BLOCK_RENAMES)
    del official["block1.0.attn.kv_g.weight"]
    path = tmp_path / "b0.pth"
    torch.save({"model": official}, path)
    with pytest.raises(CheckpointError, match=r"stages\.0\.blocks\.0\.attn\.coarse\.kv\.weight"):
        timm.create_model("favit_b0", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        timm.create_model("favit_b1", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


# ------------------------------------------------------------------------- sizes and arguments
def test_features_any_size_and_training_step():
    # 40 x 100 pads beyond the map (reflected twice) in the small stages
    fm, feats = check_features_any_size("favit_b0", (40, 100), channels=(32, 64, 128, 256), train=True)
    sum(f.square().mean() for f in feats).backward()
    assert all(p.grad is not None for p in fm.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("favit_b0", global_pool="max")
    with pytest.raises(ValueError, match="4 entries"):
        timm.create_model("favit_b0", depths=(1, 1, 1))
    with pytest.raises(ValueError, match="window_size"):
        timm.create_model("favit_b0", window_size=0)
    with pytest.raises(ValueError, match="too small"):
        timm.create_model("favit_b0")(torch.randn(1, 3, 24, 64))
