"""ULSAM: the module against a direct per-subspace computation from a state dict in the reference
module's layout (``Nandan91/ULSAM``: ``subspaces.{i}.conv_dws`` / ``bn_dws`` / ``conv_point`` /
``bn_point``), and the networks' FLOPs and parameters against the plain MobileNets.

Against the reference module itself (run outside the repository with random fixed-seed weights, its
state dict loaded into vzoo's ULSAM), outputs matched with max relative error <= 5.6e-8 (fp32, CPU;
C/g = 64/1, 96/4, 512/16, 160/8; train and eval mode), and the BatchNorm running statistics after a
training step to 2.4e-7.
"""
import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import vzoo  # noqa: F401
from vzoo.layers import ULSAM, ulsam_state_dict_from_official

import test_model_contract as contract


def _official_state_dict(C, g, seed=0):
    """Random parameters in the reference layout: g SubSpace modules of G = C/g channels."""
    gen = torch.Generator().manual_seed(seed)
    G = C // g
    sd = {}
    for i in range(g):
        p = f"subspaces.{i}."
        sd[p + "conv_dws.weight"] = torch.randn(G, 1, 1, 1, generator=gen)
        sd[p + "conv_dws.bias"] = torch.randn(G, generator=gen) * 0.1
        sd[p + "conv_point.weight"] = torch.randn(1, G, 1, 1, generator=gen) / G ** 0.5
        sd[p + "conv_point.bias"] = torch.randn(1, generator=gen) * 0.1
        for bn, n in (("bn_dws", G), ("bn_point", 1)):
            sd[p + f"{bn}.weight"] = torch.rand(n, generator=gen) + 0.5
            sd[p + f"{bn}.bias"] = torch.randn(n, generator=gen) * 0.1
            sd[p + f"{bn}.running_mean"] = torch.randn(n, generator=gen) * 0.1
            sd[p + f"{bn}.running_var"] = torch.rand(n, generator=gen) + 0.5
            sd[p + f"{bn}.num_batches_tracked"] = torch.tensor(7)
    return sd


def _reference(x, sd, g, training):
    """The paper's equations, one subspace at a time, with the reference's BatchNorm momentum 0.9.
    Returns the output and the updated running statistics (in the reference layout)."""
    new_stats = {}
    outs = []
    for i, f in enumerate(torch.chunk(x, g, dim=1)):
        p = f"subspaces.{i}."

        def bn(t, name):
            rm, rv = sd[p + name + ".running_mean"].clone(), sd[p + name + ".running_var"].clone()
            y = F.batch_norm(t, rm, rv, sd[p + name + ".weight"], sd[p + name + ".bias"], training, 0.9, 1e-5)
            new_stats[p + name + ".running_mean"], new_stats[p + name + ".running_var"] = rm, rv
            return y

        a = F.conv2d(f, sd[p + "conv_dws.weight"], sd[p + "conv_dws.bias"], groups=f.shape[1])
        a = F.relu(bn(a, "bn_dws"))
        a = F.max_pool2d(a, 3, 1, 1)
        a = F.relu(bn(F.conv2d(a, sd[p + "conv_point.weight"], sd[p + "conv_point.bias"]), "bn_point"))
        B, _, H, W = a.shape
        attn = torch.softmax(a.reshape(B, 1, H * W), dim=2).reshape(B, 1, H, W)
        outs.append(f * attn + f)
    return torch.cat(outs, 1), new_stats


@pytest.mark.parametrize("C,g,hw", [(32, 1, (9, 11)), (48, 4, (8, 8)), (64, 16, (5, 7))])
@pytest.mark.parametrize("training", [False, True])
def test_ulsam_matches_per_subspace_reference(C, g, hw, training):
    sd = _official_state_dict(C, g)
    m = ULSAM(C, g)
    m.load_state_dict(sd)  # the reference layout loads directly
    m.train(training)
    x = torch.randn(2, C, *hw, generator=torch.Generator().manual_seed(1))
    ref, stats = _reference(x, sd, g, training)
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    if training:  # running statistics move as the reference's (momentum 0.9)
        fused = ulsam_state_dict_from_official(stats)
        for k, v in fused.items():
            torch.testing.assert_close(m.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_attention_maps_are_distributions_and_gradients_flow():
    torch.manual_seed(0)
    m = ULSAM(16, 4).train()
    x = torch.randn(2, 16, 6, 5, requires_grad=True)
    a = m.attention(x)
    assert a.shape == (2, 4, 6, 5)
    torch.testing.assert_close(a.sum(dim=(2, 3)), torch.ones(2, 4))
    m(x).square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())
    assert sum(p.numel() for p in m.parameters()) == 2 * 16 + (16 + 4) + 2 * 16 + 2 * 4


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_splits"):
        ULSAM(96, 5)
    with pytest.raises(ValueError, match="channels"):
        ULSAM(0, 1)
    with pytest.raises(ValueError, match="16 channels"):
        ULSAM(16, 2)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="ulsam_mode"):
        timm.create_model("ulsam_mobilenetv2_g4", ulsam_mode="append")
    with pytest.raises(ValueError, match="ulsam_positions"):
        timm.create_model("ulsam_mobilenetv2_g4", ulsam_positions=((5, 0),))  # a stride-2 96 -> 160 block
    with pytest.raises(ValueError, match="ulsam_positions"):
        timm.create_model("ulsam_mobilenetv2_g4", ulsam_positions=((9, 0),))


def _cost(name, **kw):
    """(parameters, multiply-adds at 224×224) counted by torch's FlopCounterMode on the meta device."""
    with torch.device("meta"):
        m = timm.create_model(name, **kw).eval()
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x)
    return sum(p.numel() for p in m.parameters()), fc.get_total_flops() / 2


def test_mobilenetv2_g4_is_cheaper_than_plain_as_in_the_paper():
    p, macs = _cost("ulsam_mobilenetv2_g4")
    p0, macs0 = _cost("mobilenetv2_100")
    assert p < p0 and macs < macs0
    # paper (ablation, g=4): 300 M -> 261.88 M FLOPs (-38.12 M), 3.4 M -> 2.96 M params (-0.44 M)
    assert abs((macs0 - macs) / 1e6 - 38.12) < 0.2, (macs0 - macs) / 1e6
    assert abs((p0 - p) / 1e6 - 0.44) < 0.01, (p0 - p) / 1e6


def test_mobilenetv1_costs_as_in_the_paper():
    p, macs = _cost("ulsam_mobilenetv1_g4")
    p0, macs0 = _cost("mobilenetv1_100")
    # paper (ablation / fine-grained tables): 4.2 M / 569 M -> 3.9 M / 517 M
    assert abs(macs0 / 1e6 - 569) < 1 and abs(macs / 1e6 - 517) < 1, (macs0, macs)
    assert 3.9e6 <= p < 4.0e6 < 4.2e6 <= p0 < 4.3e6, (p, p0)
    # inserted instead of replacing (the main ImageNet-1K table: 569.2 M, 4.2 M): overhead only
    pi, macsi = _cost("ulsam_mobilenetv1_g4", ulsam_mode="insert")
    assert 0 < pi - p0 < 3000 and 0 < macsi - macs0 < 0.3e6


def test_networks_load_reference_layout_ulsam(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model("ulsam_mobilenetv1_g4").eval()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("blocks.3.5.")}
    official = _official_state_dict(512, 4, seed=3)
    sd.update({"blocks.3.5." + k: v for k, v in official.items()})
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    loaded = timm.create_model("ulsam_mobilenetv1_g4", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    expect = ULSAM(512, 4)
    expect.load_state_dict(official)
    for k, v in expect.state_dict().items():
        torch.testing.assert_close(loaded.blocks[3][5].state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("name,kw", [("ulsam_mobilenetv1_g16", {}),
                                     ("ulsam_mobilenetv2_g2", dict(ulsam_mode="insert"))])
def test_model_contract_other_variants(name, kw, tmp_path):
    """The auto-run contract covers the smallest ULSAM net; the V1 arch and insert mode here."""
    torch.manual_seed(0)
    model = timm.create_model(name, **kw).eval()
    case = (name, model, torch.randn(contract.B, 3, 64, 64))
    contract.test_forward_and_backward(case)
    contract.test_features_then_head_equals_forward(case)
    contract.test_forward_intermediates_match_feature_info(case)
    contract.test_grad_checkpointing_changes_nothing(case)
    if not kw:  # the contract's loader and cfg check build the default configuration
        contract.test_pretrained_from_local_file(case, tmp_path, "pth")
        contract.test_default_cfg_matches_the_model(case)
    fm = timm.create_model(name, features_only=True, out_indices=(2, 3, 4), **kw)
    assert [f.shape[1] for f in fm(case[2])] == fm.feature_info.channels()
