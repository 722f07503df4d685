"""VAN: official sizes, LKA, and loading official-format checkpoints.

The official code is not needed here: each test maps vzoo's keys back to the official release's
names (``pyramid_to_pvt_keys``, the inverse of the mapping ``checkpoint_filter_fn`` applies), checks a
list of names that the official files are known to hold, and loads the result through timm's
pretrained path.
"""
import pytest
import timm
import torch
from safetensors.torch import save_file

import vzoo  # noqa: F401
from vzoo.layers.lka import LargeKernelAttention, lka_kernel_sizes
from vzoo.models._pyramid import pyramid_to_pvt_keys
from vzoo.models.van import OFFICIAL_BLOCK_RENAMES
from zoo import check_features_any_size


def _params_m(name: str, **kwargs) -> float:
    with torch.device("meta"):
        m = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in m.parameters()) / 1e6


def _load_official_format(name, model, official_sd, tmp_path, fmt="pth"):
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "pth":
        torch.save({"epoch": 300, "state_dict": official_sd}, path)  # as the official training scripts save
    else:
        save_file({k: v.contiguous() for k, v in official_sd.items()}, str(path))
    torch.manual_seed(99)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()


# ----------------------------------------------------------------------------------------- LKA
def test_lka_decomposition_and_errors():
    assert lka_kernel_sizes(21, 3) == (5, 7)
    lka = LargeKernelAttention(8)
    assert lka.dw.kernel_size == (5, 5) and lka.dw.groups == 8
    assert lka.dw_dilated.kernel_size == (7, 7) and lka.dw_dilated.dilation == (3, 3)
    assert lka.dw_dilated.padding == (9, 9)
    assert lka.pw.kernel_size == (1, 1)
    x = torch.randn(2, 8, 13, 10)
    out = lka(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x * lka.pw(lka.dw_dilated(lka.dw(x))))
    with pytest.raises(ValueError, match="dilation"):
        LargeKernelAttention(8, kernel_size=21, dilation=1)
    with pytest.raises(ValueError, match="kernel_size"):
        LargeKernelAttention(8, kernel_size=2)
    with pytest.raises(ValueError, match="NCHW"):
        lka(torch.randn(2, 8, 13))


# ----------------------------------------------------------------------------------------- VAN
VAN_PARAMS_M = {"van_b0": 4.1, "van_b1": 13.9, "van_b2": 26.6, "van_b3": 44.8}  # official README table


@pytest.mark.parametrize("name", sorted(VAN_PARAMS_M))
def test_van_param_counts_match_official(name):
    assert round(_params_m(name), 1) == VAN_PARAMS_M[name]


def test_van_all_variants_registered():
    assert [f"van_b{i}" for i in range(7)] == sorted(timm.list_models("van_b*"))


def test_van_official_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("van_b0").eval()
    with torch.no_grad():  # make BatchNorm statistics matter
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    official = pyramid_to_pvt_keys(model.state_dict(), OFFICIAL_BLOCK_RENAMES)
    for key in ("patch_embed1.proj.weight", "patch_embed4.norm.running_var", "block1.0.layer_scale_1",
                "block3.4.attn.spatial_gating_unit.conv_spatial.weight", "block2.2.mlp.dwconv.dwconv.bias",
                "norm4.weight", "head.weight"):
        assert key in official, key
    assert not any(k.startswith("stages.") for k in official)
    loaded = _load_official_format("van_b0", model, official, tmp_path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_van_official_checkpoint_with_wrong_variant_names_keys(tmp_path):
    from vzoo.models import CheckpointError
    official = pyramid_to_pvt_keys(timm.create_model("van_b0").state_dict(), OFFICIAL_BLOCK_RENAMES)
    path = tmp_path / "b0.pth"
    torch.save({"state_dict": official}, path)
    with pytest.raises(CheckpointError, match="stages.0.blocks.0.attn.lka.dw.weight"):
        timm.create_model("van_b1", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_van_features_any_size():
    check_features_any_size("van_b0", (96, 150), channels=(32, 64, 160, 256))


def test_van_bad_arguments():
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("van_b0", global_pool="max")
    with pytest.raises(ValueError, match="4 entries"):
        timm.create_model("van_b0", depths=(1, 1, 1))
