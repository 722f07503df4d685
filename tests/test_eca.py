"""ECA-Net: the ECA gate against a direct computation, the networks' parameter overhead, and official
ECA-Net checkpoints (``BangguWu/ECANet`` training checkpoints) loading with the right outputs.

The official-format checkpoints here are fabricated from a vzoo model by an inverse mapping written
independently of ``vzoo.models.eca.checkpoint_filter_fn``: official key names are generated from the
official modules' structure (ECA_MobileNetV2's ``features.{i}.conv.{j}`` nesting) and paired with the
tensors in registration order. Against the official code itself (run outside the repository, random
fixed-seed weights saved as its ``main.py`` saves them), vzoo's outputs matched with max relative error
0 (ECA-ResNet-18/34/50/101/152) and 1.7e-7 (ECA-MobileNetV2), fp32 on the CPU.
"""
import math

import pytest
import timm
import torch

import vzoo  # noqa: F401
from vzoo.layers import ECA, EcaByChannels, EcaModule, eca_kernel_size
from vzoo.models import CheckpointError
from vzoo.models.eca import RELEASED_K_SIZE

import test_model_contract as contract


def _eca_reference(x, w):
    """ECA written out: channel means, a zero-padded 1-D correlation across channels, sigmoid gate."""
    B, C = x.shape[:2]
    k = w.numel()
    y = x.mean(dim=(2, 3))  # (B, C)
    pad = (k - 1) // 2
    yp = torch.cat([y.new_zeros(B, pad), y, y.new_zeros(B, pad)], dim=1)
    z = torch.stack([(yp[:, c:c + k] * w).sum(1) for c in range(C)], dim=1)
    return x * torch.sigmoid(z)[:, :, None, None]


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_eca_matches_direct_computation(k):
    torch.manual_seed(0)
    m = ECA(kernel_size=k)
    assert isinstance(m, EcaModule) and tuple(m.conv.weight.shape) == (1, 1, k)
    with torch.no_grad():
        m.conv.weight.normal_()
    x = torch.randn(2, 24, 5, 7)
    torch.testing.assert_close(m(x), _eca_reference(x, m.conv.weight.view(-1)), rtol=1e-5, atol=1e-6)


def test_adaptive_kernel_size():
    # the paper's rule with gamma=2, b=1 as timm's EcaModule applies it
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    for c in (8, 16, 24, 96, 100, 320, 1280, 4096):
        t = (math.log2(c) + 1) / 2
        k = eca_kernel_size(c)
        assert k % 2 == 1 and k >= 3 and (k == 3 or abs(k - t) <= 1), (c, k, t)
        assert ECA(c).conv.weight.shape[-1] == EcaModule(c).conv.weight.shape[-1] == k
    f = EcaByChannels({256: 3, 512: 7})
    assert [f(c).conv.weight.shape[-1] for c in (256, 512, 1024)] == [3, 7, 5]


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="kernel_size"):
        ECA(kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        ECA()
    with pytest.raises(ValueError, match="channels"):
        eca_kernel_size(0)
    with pytest.raises(ValueError, match="k_size"):
        timm.create_model("eca_resnet18", k_size=(3, 5))
    with pytest.raises(ValueError, match="k_size"):
        timm.create_model("eca_resnet18", k_size="auto")


def _params(name, **kw):
    with torch.device("meta"):
        m = timm.create_model(name, **kw)
    return sum(p.numel() for p in m.parameters()), m


def test_parameter_overhead_over_plain_nets():
    eca50, m = _params("eca_resnet50")
    plain50, _ = _params("resnet50")
    # the paper's "80 parameters" on ResNet-50: 3*3 + 4*5 + 6*5 + 3*7 with the released 3,5,5,7
    assert eca50 - plain50 == 80
    assert [m.layer1[0].se.conv.weight.shape[-1], m.layer2[0].se.conv.weight.shape[-1],
            m.layer3[0].se.conv.weight.shape[-1], m.layer4[0].se.conv.weight.shape[-1]] == \
        list(RELEASED_K_SIZE["eca_resnet50"])
    # the adaptive rule instead gives 5, 5, 5, 7
    assert _params("eca_resnet50", k_size="adaptive")[0] - plain50 == 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7
    # ECA-MobileNetV2: 10 blocks below 96 channels with k=1, 7 blocks with k=3
    assert _params("eca_mobilenetv2")[0] - _params("mobilenetv2_100")[0] == 10 * 1 + 7 * 3
    # ResNet-18 (3,5,7,7) over torchvision-layout ResNet-18
    assert _params("eca_resnet18")[0] - _params("resnet18")[0] == 2 * (3 + 5 + 7 + 7)


# ---- official checkpoints ------------------------------------------------------------------------

def _official_mobilenetv2_keys():
    """Parameter/buffer names of the official ECA_MobileNetV2, in registration order, generated from
    its structure: features[0] ConvBNReLU, 17 InvertedResidual (``conv`` Sequential: [ConvBNReLU pw],
    ConvBNReLU dw, Conv2d pwl, BatchNorm2d, eca_layer), features[18] ConvBNReLU, classifier[1] Linear."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["features.0.0.weight"] + [f"features.0.1.{b}" for b in bn]
    settings = [(1, 1), (6, 2), (6, 3), (6, 4), (6, 3), (6, 3), (6, 1)]  # (t, n)
    i = 1
    for t, n in settings:
        for _ in range(n):
            p = f"features.{i}.conv"
            mods = []
            if t != 1:
                mods.append(("0.0", "0.1"))
            j = len(mods)
            mods.append((f"{j}.0", f"{j}.1"))  # depthwise ConvBNReLU
            for conv, norm in mods:
                keys += [f"{p}.{conv}.weight"] + [f"{p}.{norm}.{b}" for b in bn]
            j += 1
            keys += [f"{p}.{j}.weight"] + [f"{p}.{j + 1}.{b}" for b in bn] + [f"{p}.{j + 2}.conv.weight"]
            i += 1
    keys += [f"features.{i}.0.weight"] + [f"features.{i}.1.{b}" for b in bn]
    keys += ["classifier.1.weight", "classifier.1.bias"]
    return keys


def _to_official(name, model):
    """vzoo state dict → the official training checkpoint (DataParallel 'module.' keys)."""
    sd = model.state_dict()
    if name == "eca_mobilenetv2":
        keys = _official_mobilenetv2_keys()
        assert len(keys) == len(sd), (len(keys), len(sd))
        official = dict(zip(keys, sd.values()))
        # shapes pin the pairing: the ECA kernels of 96+ channel blocks are 3 wide, the rest 1
        assert official["features.1.conv.3.conv.weight"].shape == (1, 1, 1)
        assert official["features.11.conv.4.conv.weight"].shape == (1, 1, 3)
        assert official["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    else:
        official = {k.replace(".se.", ".eca."): v for k, v in sd.items()}
        assert "layer1.0.eca.conv.weight" in official
    params = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return {"epoch": 90, "arch": name, "best_prec1": torch.tensor(70.0), "optimizer": opt.state_dict(),
            "state_dict": {"module." + k: v.clone() for k, v in official.items()}}


def _randomize(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim == 1 else (2.0 / p[0].numel()) ** 0.5))
        for n, b in model.named_buffers():
            if n.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif n.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2"])
def test_official_checkpoint_loads_with_same_outputs(name, tmp_path):
    torch.manual_seed(0)
    src = _randomize(timm.create_model(name)).eval()
    path = tmp_path / f"{name}_official.pth.tar"
    torch.save(_to_official(name, src), path)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x), rtol=0, atol=0)


def test_checkpoint_with_other_kernel_sizes_names_the_keys(tmp_path):
    src = timm.create_model("eca_resnet18", k_size="adaptive")  # 3,5,5,5: differs from the released 3,5,7,7
    path = tmp_path / "k3555.pth.tar"
    torch.save(_to_official("eca_resnet18", src), path)
    with pytest.raises(CheckpointError, match=r"layer3\.0\.se\.conv\.weight"):
        timm.create_model("eca_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    # built with the checkpoint's kernel sizes it loads
    timm.create_model("eca_resnet18", k_size=(3, 5, 5, 5), pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


# ---- the model contract for the ResNet variants (the auto-run contract tests eca_mobilenetv2) ----

def test_model_contract_eca_resnet18(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("eca_resnet18").eval()
    case = ("eca_resnet18", model, torch.randn(contract.B, 3, 64, 64))
    contract.test_forward_and_backward(case)
    contract.test_features_then_head_equals_forward(case)
    contract.test_forward_intermediates_match_feature_info(case)
    contract.test_features_only(case)
    contract.test_default_cfg_matches_the_model(case)
    contract.test_grad_checkpointing_changes_nothing(case)
    contract.test_pretrained_from_local_file(case, tmp_path, "safetensors")
    assert [i["num_chs"] for i in model.feature_info] == [64, 64, 128, 256, 512]


def test_eca_resnet_as_mm_backbone():
    pytest.importorskip("mmdet")
    from vzoo.mm import VZooBackbone
    bb = VZooBackbone("eca_resnet18", out_indices=(1, 2, 3, 4), frozen_stages=1, norm_eval=True)
    bb.train()
    feats = bb(torch.randn(1, 3, 96, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 24, 32), (1, 128, 12, 16), (1, 256, 6, 8), (1, 512, 3, 4)]
    frozen = [n for n, p in bb.named_parameters() if not p.requires_grad]
    assert any("layer1" in n for n in frozen) and not any("layer2" in n for n in frozen)
