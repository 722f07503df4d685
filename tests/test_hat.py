"""HAT: official sizes, any-size inputs, official-format checkpoints, a training step, bad arguments.

The official code is not needed here: the checkpoint tests map vzoo's keys back to the official
release's names with an inverse written independently of ``checkpoint_filter_fn``, check names the
official files are known to hold, and load the result through timm's pretrained path. Parity with
the official ``hat_arch.py`` itself was measured outside CI (see docs/benchmarks.md, HAT section).
"""
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import vzoo  # noqa: F401
from vzoo.models import CheckpointError
from vzoo.models.hat import (
    HAT, WindowAttention, overlap_relative_position_index, pad_to_multiple, shifted_window_group_masks,
    shifted_window_mask, window_relative_position_index,
)

# small enough for the CPU, but every kind of block: 2 groups x (plain HAB, shifted HAB, OCAB)
TINY = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=8, compress_ratio=3, squeeze_factor=6)


def _tiny(name="hat_s_x2", **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **dict(TINY, **kwargs)).eval()


def _params_m(name: str) -> float:
    with torch.device("meta"):
        m = timm.create_model(name)
    return sum(p.numel() for p in m.parameters()) / 1e6


# ------------------------------------------------------------------------------ sizes / registry
@pytest.mark.parametrize("name,params_m", [("hat_s_x4", 9.6), ("hat_x4", 20.8)])  # official README table (x4)
def test_param_counts_match_official(name, params_m):
    assert round(_params_m(name), 1) == params_m


def test_variants_registered_with_official_hparams():
    names = [f"hat{s}_x{k}" for s in ("_s", "", "_l") for k in (2, 3, 4)]
    assert set(names) <= set(timm.list_models("hat*"))
    with torch.device("meta"):
        s, b, l4 = (timm.create_model(n) for n in ("hat_s_x3", "hat_x2", "hat_l_x4"))
    assert s.upscale == 3 and b.upscale == 2 and l4.upscale == 4
    assert s.embed_dim == 144 and b.embed_dim == 180 and l4.embed_dim == 180
    assert len(s.groups) == len(b.groups) == 6 and len(l4.groups) == 12
    assert all(len(g.blocks) == 6 for g in l4.groups)
    hab = s.groups[0].blocks[1]
    assert hab.attn.num_heads == 6 and hab.window_size == 16 and hab.shift_size == 8
    assert hab.cab.conv1.out_channels == 144 // 24 and hab.cab.ca.fc1.out_channels == 144 // 24
    assert b.groups[0].blocks[0].cab.conv1.out_channels == 60 and b.groups[0].blocks[0].cab.ca.fc1.out_channels == 6
    assert s.groups[0].ocab.overlap_win_size == 24 and hab.mlp.fc1.out_features == 288
    assert s.vzoo_task == "image-to-image" and s.pretrained_cfg["mean"] == (0.0, 0.0, 0.0)
    assert _tiny().mean.flatten().tolist() == pytest.approx([0.4488, 0.4371, 0.4040])  # DIV2K RGB mean


# ------------------------------------------------------------------------------ geometry helpers
def test_relative_position_indices_match_the_official_definition():
    # Swin-style: written here from the definition (query - key, shifted, row-major)
    w = 4
    idx = window_relative_position_index(w)
    for q in range(w * w):
        for k in range(w * w):
            dy, dx = q // w - k // w, q % w - k % w
            assert idx[q, k] == (dy + w - 1) * (2 * w - 1) + dx + w - 1
    # OCAB: the official code forms possibly negative indices and lets tensor indexing wrap them
    ws, ows = 4, 6
    L = ws + ows - 1
    table = torch.randn(L * L, 3)
    raw = torch.empty(ws * ws, ows * ows, dtype=torch.long)
    for q in range(ws * ws):
        for k in range(ows * ows):
            ry = k // ows - q // ws + ws - ows + 1
            rx = k % ows - q % ws + ws - ows + 1
            raw[q, k] = ry * L + rx
    assert raw.min() < 0  # the quirk is real
    mine = overlap_relative_position_index(ws, ows)
    assert mine.min() >= 0 and mine.max() < L * L
    torch.testing.assert_close(table[mine.flatten()], table[raw.flatten()], rtol=0, atol=0)


def test_shifted_window_mask_matches_slices():
    H, W, w, s = 16, 24, 8, 4
    img = torch.zeros(H, W)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[hs, ws] = cnt
            cnt += 1
    win = img.view(H // w, w, W // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
    expected = torch.where(win[:, None, :] != win[:, :, None], -100.0, 0.0)
    torch.testing.assert_close(shifted_window_mask(H, W, w, s), expected, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 16), (13, 7), (16, 16)])
def test_pad_to_multiple_is_reflect(size):
    x = torch.randn(1, 2, *size)
    out = pad_to_multiple(x, 8)
    H, W = -(-size[0] // 8) * 8, -(-size[1] // 8) * 8
    assert out.shape[-2:] == (H, W)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (0, H - size[0]), (0, W - size[1])), mode="reflect")
    np.testing.assert_array_equal(out.numpy(), ref)


# ------------------------------------------------------------------------------ any input size
@pytest.mark.parametrize("name,scale", [("hat_s_x2", 2), ("hat_x3", 3), ("hat_l_x4", 4)])
def test_any_size_is_padded_and_cropped(name, scale):
    model = _tiny(name)
    for h, w in [(5, 9), (13, 8), (1, 3)]:
        with torch.no_grad():
            out = model(torch.rand(1, 3, h, w))
        assert out.shape == (1, 3, h * scale, w * scale), (h, w)
        assert torch.isfinite(out).all()
    # the official test pads with reflection and crops scale x the input: the same numbers
    x = torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        ref = model(F.pad(x, (0, 6, 0, 3), mode="reflect"))[..., :13 * scale, :10 * scale]
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape) for f in feats] == [(2, 24, 13, 10)] * 2


def test_shift_mask_matters():
    """Shifted windows with the mask differ from shifted windows without it (the mask is used)."""
    model = _tiny()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        out = model(x)
        masks = model.shift_masks.clone()
        model.shift_masks.zero_()
        assert not torch.allclose(model(x), out)
        model.shift_masks.copy_(masks)
        torch.testing.assert_close(model(x), out)


@pytest.mark.parametrize("hw", [(8, 8), (8, 24), (16, 24), (32, 16)])
def test_window_attention_by_category_equals_full_mask_math(hw):
    """The per-category masking equals Swin's dense formulation: every window with its own mask."""
    H, W = hw
    w, s, heads, C = 8, 4, 2, 8
    torch.manual_seed(0)
    attn = WindowAttention(C, heads, w).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    x = torch.randn(2, H, W, C)
    rpi = window_relative_position_index(w)
    with torch.no_grad():
        out = attn(x, rpi, shifted_window_group_masks(w, s))
        # dense reference: windows, q·k·scale + bias + per-window mask, softmax, ·v
        qkv = attn.qkv(x).view(2, H // w, w, W // w, w, 3, heads, C // heads)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, 2, (H // w) * (W // w), heads, w * w, C // heads)
        q, k, v = qkv
        bias = attn.relative_position_bias_table[rpi.flatten()].view(w * w, w * w, heads).permute(2, 0, 1)
        mask = shifted_window_mask(H, W, w, s)  # (nW, n, n)
        a = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1) + bias + mask[None, :, None]
        o = (a.softmax(-1) @ v).view(2, H // w, W // w, heads, w, w, C // heads)
        ref = attn.proj(o.permute(0, 1, 4, 2, 5, 3, 6).reshape(2, H, W, C))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_na2d_backend_matches_reference():
    """The shared na2d op (kernel = stride = window, Swin bias flipped) gives the reference's outputs
    and gradients."""
    model = _tiny(drop_path_rate=0.0, attn_backend="reference").train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("relative_position_bias_table"):
                p.normal_()  # asymmetric tables: a wrong flip would show
    x = torch.rand(1, 3, 16, 24)
    outs, grads = [], []
    for backend in ("reference", "na2d"):
        model.set_attn_backend(backend)
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append(model.groups[0].blocks[0].attn.relative_position_bias_table.grad.clone())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)


def test_window_backend_goes_through_the_chooser():
    """'na2d' where na2d cannot run (attention dropout in training) raises with the reason; 'auto' falls back
    to the reference there (and keeps it on the CPU); the chooser reads only the device type."""
    from vzoo.layers._backend import WINDOW_BACKENDS, choose_backend
    model = _tiny(drop_path_rate=0.0, attn_drop_rate=0.1, attn_backend="na2d").train()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"HAT: backend='na2d' cannot run here: na2d has no attention dropout"):
        model(x)
    model.eval()(x)  # no dropout in eval: na2d runs
    cuda = torch.device("cuda")
    assert choose_backend("HAT", "auto", WINDOW_BACKENDS, device=cuda, attn_dropout=0.1) == "reference"
    assert choose_backend("HAT", "auto", WINDOW_BACKENDS, device=cuda, attn_dropout=0.0) == "na2d"
    assert choose_backend("HAT", "auto", WINDOW_BACKENDS, device=torch.device("cpu"), attn_dropout=0.0) == "reference"


# ------------------------------------------------------------------------------ official checkpoints
def _official_name(k: str) -> str:
    """vzoo key -> the official HAT (BasicSR) name; written independently of checkpoint_filter_fn."""
    m = re.match(r"groups\.(\d+)\.blocks\.(\d+)\.cab\.(conv1|conv2|ca\.fc1|ca\.fc2)\.(weight|bias)$", k)
    if m:
        sub = {"conv1": "0", "conv2": "2", "ca.fc1": "3.attention.1", "ca.fc2": "3.attention.3"}[m.group(3)]
        return f"layers.{m.group(1)}.residual_group.blocks.{m.group(2)}.conv_block.cab.{sub}.{m.group(4)}"
    m = re.match(r"groups\.(\d+)\.blocks\.(.*)$", k)
    if m:
        return f"layers.{m.group(1)}.residual_group.blocks.{m.group(2)}"
    m = re.match(r"groups\.(\d+)\.ocab\.(.*)$", k)
    if m:
        return f"layers.{m.group(1)}.residual_group.overlap_attn.{m.group(2)}"
    m = re.match(r"groups\.(\d+)\.conv\.(.*)$", k)
    if m:
        return f"layers.{m.group(1)}.conv.{m.group(2)}"
    if k.startswith("embed_norm."):
        return "patch_embed.norm." + k.split(".", 1)[1]
    if k.startswith("conv_before_upsample."):
        return "conv_before_upsample.0." + k.split(".", 1)[1]
    return k


KNOWN_OFFICIAL_KEYS = [  # as in HAT_SRx4.pth / HAT-S_SRx4.pth (params_ema)
    "conv_first.weight", "patch_embed.norm.weight", "relative_position_index_SA", "relative_position_index_OCA",
    "layers.0.residual_group.blocks.0.norm1.weight",
    "layers.0.residual_group.blocks.0.attn.relative_position_bias_table",
    "layers.0.residual_group.blocks.0.attn.qkv.weight", "layers.0.residual_group.blocks.1.attn.proj.bias",
    "layers.0.residual_group.blocks.0.conv_block.cab.0.weight",
    "layers.0.residual_group.blocks.0.conv_block.cab.2.weight",
    "layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight",
    "layers.0.residual_group.blocks.0.conv_block.cab.3.attention.3.bias",
    "layers.0.residual_group.blocks.1.mlp.fc2.weight",
    "layers.1.residual_group.overlap_attn.relative_position_bias_table",
    "layers.1.residual_group.overlap_attn.qkv.weight", "layers.1.residual_group.overlap_attn.mlp.fc1.weight",
    "layers.1.conv.weight", "norm.weight", "conv_after_body.weight", "conv_before_upsample.0.weight",
    "upsample.0.weight", "conv_last.bias",
]


def _official_state_dict(model: HAT) -> dict:
    sd = {_official_name(k): v.clone() for k, v in model.state_dict().items()}
    # the official model also stores its relative position indices as buffers
    w = model.window_size
    sd["relative_position_index_SA"] = torch.zeros(w * w, w * w, dtype=torch.long)
    ow = model.groups[0].ocab.overlap_win_size
    sd["relative_position_index_OCA"] = torch.zeros(w * w, ow * ow, dtype=torch.long)
    return sd


@pytest.mark.parametrize("name", ["hat_s_x4", "hat_x3"])
def test_official_format_round_trip(name, tmp_path):
    src = _tiny(name)
    with torch.no_grad():  # non-trivial values everywhere (LayerNorm affine, biases, tables)
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    official = _official_state_dict(src)
    missing = [k for k in KNOWN_OFFICIAL_KEYS if k not in official]
    assert not missing, missing
    assert not any(k.startswith(("groups.", "embed_norm.")) for k in official)
    decoy = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in official.items()}
    path = tmp_path / "HAT_official.pth"
    torch.save({"params": decoy, "params_ema": official}, path)  # BasicSR keeps both; EMA is what is tested
    torch.manual_seed(7)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY).eval()
    x = torch.rand(1, 3, 11, 18)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x), rtol=0, atol=0)

    torch.save({"params": official}, path)  # a release with 'params' only
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x), rtol=0, atol=0)


def test_official_checkpoint_for_the_wrong_variant_names_the_keys(tmp_path):
    official = _official_state_dict(_tiny("hat_s_x2"))
    del official["layers.1.residual_group.overlap_attn.qkv.weight"]
    path = tmp_path / "bad.pth"
    torch.save({"params_ema": official}, path)
    with pytest.raises(CheckpointError, match=r"groups\.1\.ocab\.qkv\.weight"):
        timm.create_model("hat_s_x2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY)
    torch.save({"params_ema": _official_state_dict(_tiny("hat_s_x2"))}, path)
    with pytest.raises(CheckpointError, match=r"upsample\.2\.weight"):  # an x2 file into an x4 model
        timm.create_model("hat_s_x4", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY)


# ------------------------------------------------------------------------------ training
def test_one_training_step_hat_s_shrunk():
    torch.manual_seed(0)
    model = timm.create_model("hat_s_x2", **TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.99))
    lr = torch.rand(2, 3, 16, 16)
    hr = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(3):
        loss = F.l1_loss(model(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged


# gradient checkpointing: tests/test_model_contract.py (every family, hat_s_x2 with drop-path in training mode)


# ------------------------------------------------------------------------------ TorchScript / fx
def test_torchscript_and_fx_features_at_padded_sizes():
    """tests/test_timm_suite.py checks both at 16x16 (no padding); here sizes that are padded (13x10, and 3x2:
    repeated reflection) and cropped back: TorchScript gives the eager image, feature_cls='fx' the maps of
    forward_intermediates (the default features_only) bit for bit, in the same layout."""
    model = _tiny()
    scripted = torch.jit.script(model)
    torch.manual_seed(0)  # _tiny's weights
    fx = timm.create_model("hat_s_x2", features_only=True, feature_cls="fx", **TINY).eval()
    for h, w in [(13, 10), (3, 2)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            assert torch.equal(scripted(x), model(x)), (h, w)
            ref = model.forward_intermediates(x, intermediates_only=True)
            maps = fx(x)
        assert len(maps) == len(ref) == 2
        for a, b in zip(maps, ref):
            assert a.shape == (1, 24, h, w) and a.stride() == b.stride() and torch.equal(a, b), (h, w)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,match", [
    (dict(upscale=5), "upscale"),
    (dict(depths=(2, 2), num_heads=(2,)), "depths and num_heads"),
    (dict(num_heads=(5, 5)), "num_heads"),
    (dict(window_size=7), "window_size"),
    (dict(overlap_ratio=0.25, window_size=4), "overlap_ratio"),
    (dict(compress_ratio=100), "compress_ratio"),
    (dict(upsampler="nearest+conv"), "upsampler"),
    (dict(resi_connection="3conv"), "resi_connection"),
    (dict(attn_backend="cuda"), "attn_backend"),
    (dict(num_classes=10), "num_classes"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HAT(**dict(TINY, **kwargs))


def test_bad_inputs_and_calls():
    model = _tiny()
    with pytest.raises(ValueError, match="in_chans"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(5)
    with pytest.raises(ValueError, match="backend"):
        model.set_attn_backend("flash")
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(torch.rand(1, 3, 8, 8), output_fmt="NHWC")
