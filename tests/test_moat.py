"""MOAT: sizes against the release, attention (global and windowed through na2d) against a direct
reference, TensorFlow-style padding and pooling, and the TensorFlow checkpoint mapping.

TensorFlow is not installed here, so nothing runs deeplab2 itself. The references below are written
from deeplab2's code in its own layouts (NHWC activations, Keras kernel layouts ``(kh, kw, in, out)``,
TrailDense q/k/v ``(C, heads, d)`` and o ``(heads, d, C)``, one-hot lookup tensors for the relative
position bias) and evaluated on variables named as deeplab2's Keras layers name them; vzoo's model is
loaded from those variables through ``tf_to_vzoo_state_dict`` and must give the same outputs.
"""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import vzoo  # noqa: F401
from vzoo.models.moat import MoatAttention, avg_pool_same, convert_tf_checkpoint, tf_to_vzoo_state_dict
from zoo import assert_grad_checkpointing_matches, check_features_any_size

ROOT = Path(__file__).resolve().parents[1]


def _params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        m = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------- sizes
# Exact trainable-parameter counts asserted by deeplab2's model/pixel_encoder/moat_test.py (1000-class
# head), with and without the relative position embedding; the rounded figures are the paper's /
# release's (g3doc/projects/moat_imagenet_pretrained_checkpoints.md, in M).
RELEASE = {
    "moat_0": (27_846_892, 27_777_544, 27.8), "moat_1": (41_598_448, 41_467_864, 41.6),
    "moat_2": (73_422_408, 73_248_296, 73.4), "moat_3": (189_958_040, 189_536_280, 190.0),
    "moat_4": (483_214_184, 482_539_368, 483.2),
    "tiny_moat_0": (3_355_348, 3_332_232, 3.4), "tiny_moat_1": (5_122_895, 5_094_000, 5.1),
    "tiny_moat_2": (9_772_741, 9_732_288, 9.8), "tiny_moat_3": (19_534_390, 19_476_600, 19.5),
}


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_param_counts_match_the_release_exactly(name):
    with_pe, no_pe, paper_m = RELEASE[name]
    n = _params(name)
    assert n == with_pe
    assert _params(name, rel_pos=False) == no_pe
    assert abs(n / 1e6 - paper_m) / paper_m < 0.02


def test_all_variants_registered_with_release_widths():
    assert sorted(timm.list_models("*moat*")) == sorted(RELEASE)
    with torch.device("meta"):
        m = timm.create_model("moat_2")
    assert m.feature_info[-1]["num_chs"] == 1024 and m.stem.conv1.out_channels == 128
    assert [len(s.blocks) for s in m.stages] == [2, 6, 14, 2]
    attn = m.stages[2].blocks[0].attn
    assert attn.num_heads == 512 // 32 and attn.relative_position_bias_table.shape == (16, 27, 27)
    assert m.stages[3].blocks[0].attn.relative_position_bias_table.shape == (32, 13, 13)
    assert not hasattr(m.stages[1].blocks[0], "attn")
    assert isinstance(m.stages[2].blocks[0].se, torch.nn.Identity)  # MOAT blocks: MBConv without SE
    assert m.pretrained_cfg["input_size"] == (3, 384, 384) and m.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def test_drop_path_follows_the_release_rule():
    with torch.device("meta"):
        m = timm.create_model("moat_0", drop_path_rate=0.2)
    blocks = [b for s in m.stages for b in s.blocks]
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0 for b in blocks]
    assert rates == pytest.approx([0.2 * i / len(blocks) for i in range(len(blocks))])


# ------------------------------------------------------------------------ TF padding and pooling
def _tf_avg_pool_same(x, k, s):
    """Loops over output pixels: mean of the in-bounds part of each k x k window (TF 'SAME')."""
    H, W = x.shape[-2:]
    Ho, Wo = math.ceil(H / s), math.ceil(W / s)
    ph = max((Ho - 1) * s + k - H, 0) // 2
    pw = max((Wo - 1) * s + k - W, 0) // 2
    out = torch.empty(*x.shape[:-2], Ho, Wo, dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            r0, c0 = i * s - ph, j * s - pw
            win = x[..., max(r0, 0):min(r0 + k, H), max(c0, 0):min(c0 + k, W)]
            out[..., i, j] = win.mean((-2, -1))
    return out


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 6), (1, 3)])
@pytest.mark.parametrize("k", [2, 3])
def test_avg_pool_same_is_tensorflows(size, k):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(avg_pool_same(x, k, 2), _tf_avg_pool_same(x, k, 2))


def test_stride2_convs_pad_like_tensorflow():
    m = timm.create_model("tiny_moat_0").eval()
    conv = m.stem.conv1
    for size, pad in (((8, 10), (0, 1, 0, 1)), ((7, 9), (1, 1, 1, 1)), ((8, 9), (1, 1, 0, 1))):
        x = torch.randn(1, 3, *size)
        ref = F.conv2d(F.pad(x, pad), conv.weight, conv.bias, stride=2)
        torch.testing.assert_close(conv(x), ref)


# ---------------------------------------------------------------------------- attention reference
def _lookup(length):
    """deeplab2's one-hot lookup: L[i, x, v] = 1 where v = x - i + length - 1."""
    L = torch.zeros(length, length, 2 * length - 1, dtype=torch.float64)
    for i in range(length):
        for x in range(length):
            L[i, x, x - i + length - 1] = 1
    return L


def _tf_resize_bilinear(t, size):
    """TF2 ``tf.image.resize(..., 'bilinear')`` (half-pixel centres, no antialiasing) on the last two axes."""
    def axis_weights(n_in, n_out):
        M = torch.zeros(n_out, n_in, dtype=torch.float64)
        for o in range(n_out):
            src = (o + 0.5) * n_in / n_out - 0.5
            lo = math.floor(src)
            frac = src - lo
            M[o, min(max(lo, 0), n_in - 1)] += 1 - frac
            M[o, min(max(lo + 1, 0), n_in - 1)] += frac
        return M
    Mh, Mw = axis_weights(t.shape[-2], size[0]), axis_weights(t.shape[-1], size[1])
    return torch.einsum("oh,nhw,pw->nop", Mh, t.double(), Mw)


def _ref_attention(x, v, window):
    """deeplab2's Attention on NHWC ``x`` cut into ``window`` windows (its _make_windows), TF layouts."""
    B, H, W, C = x.shape
    wh, ww = window
    xw = x.reshape(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C)
    q = torch.einsum("bsc,cnk->bsnk", xw, v["q/weight"]) + v["q/bias"]
    k = torch.einsum("bsc,cnk->bsnk", xw, v["k/weight"]) + v["k/bias"]
    val = torch.einsum("bsc,cnk->bsnk", xw, v["v/weight"]) + v["v/bias"]
    q = q * q.shape[-1] ** -0.5
    logits = torch.einsum("bsnk,btnk->bnst", q, k)
    if "relative_position_embedding" in v:
        table = _tf_resize_bilinear(v["relative_position_embedding"], (2 * wh - 1, 2 * ww - 1))
        pos = torch.einsum("nhw,ixh->nixw", table, _lookup(wh))
        pos = torch.einsum("nixw,jyw->nijxy", pos, _lookup(ww)).reshape(-1, wh * ww, wh * ww)
        logits = logits + pos
    out = torch.einsum("bnst,btnk->bsnk", logits.softmax(-1), val)
    out = torch.einsum("bsnk,nkc->bsc", out, v["o/weight"]) + v["o/bias"]
    out = out.reshape(B, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
    return out


def _tf_attention_vars(C, heads, d, p, gen):
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64) * 0.3  # noqa: E731
    v = {"q/weight": r(C, heads, d), "k/weight": r(C, heads, d), "v/weight": r(C, heads, d),
         "q/bias": r(heads, d), "k/bias": r(heads, d), "v/bias": r(heads, d),
         "o/weight": r(heads, d, C), "o/bias": r(C)}
    if p is not None:
        v["relative_position_embedding"] = r(heads, 2 * p - 1, 2 * p - 1) * 3
    return v


def _attention_case(seed, B, H, W, window, p, C=16, heads=2, d=8):
    """deeplab2-named attention variables, vzoo's attention loaded from them, and an NHWC input (fp64)."""
    gen = torch.Generator().manual_seed(seed)
    v = _tf_attention_vars(C, heads, d, p, gen)
    attn = MoatAttention(C, d, window, p).double().eval()
    sd = tf_to_vzoo_state_dict({f"moat/block_02_00/attention/{k}": a for k, a in v.items()})
    attn.load_state_dict({k[len("stages.2.blocks.0.attn."):]: t for k, t in sd.items()})
    return attn, v, torch.randn(B, H, W, C, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("H,W,p", [(7, 7, 7), (5, 6, 7), (9, 4, 3)])
def test_global_attention_matches_deeplab2(H, W, p):
    attn, v, x = _attention_case(1, 2, H, W, None, p)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _ref_attention(x, v, (H, W)))


@pytest.mark.parametrize("H,W,window,p", [(8, 12, (4, 6), 3), (12, 12, (4, 4), 7), (6, 10, (3, 5), 4)])
def test_window_attention_through_na2d_matches_deeplab2(H, W, window, p):
    attn, v, x = _attention_case(2, 2, H, W, window, p)
    heads, d = attn.num_heads, attn.head_dim
    with torch.no_grad():
        out = attn(x)
        torch.testing.assert_close(out, _ref_attention(x, v, window))
        # the windows really are windows: global attention over the same map differs
        assert (out - _ref_attention(x, v, (H, W))).abs().max() > 1e-3
    # and the window path is na2d's blocked attention (kernel = stride = window) with the resized table
    from vzoo.layers import na2d
    qkv = attn.qkv(x).view(2, H, W, 3, heads, d)
    ref = na2d(*qkv.unbind(3), kernel_size=window, stride=window, rpb=attn.rel_pos_bias(*window))
    torch.testing.assert_close(out, attn.proj(ref.reshape(2, H, W, heads * d)))


def test_window_attention_without_bias_and_gradients():
    attn, v, x = _attention_case(3, 1, 6, 9, (3, 3), None, C=8, heads=1, d=8)
    torch.testing.assert_close(attn(x.requires_grad_()), _ref_attention(x.detach(), v, (3, 3)))
    attn2 = MoatAttention(8, 4, (2, 3), 3).double()
    assert torch.autograd.gradcheck(lambda t: attn2(t), (torch.randn(1, 4, 6, 8, dtype=torch.float64,
                                                                     requires_grad=True),))
    attn2(torch.randn(1, 4, 6, 8, dtype=torch.float64)).sum().backward()
    assert attn2.relative_position_bias_table.grad.abs().sum() > 0


def test_window_padding_and_clipping():
    torch.manual_seed(0)
    attn = MoatAttention(16, 8, (4, 4), 4).eval()
    x = torch.randn(1, 6, 7, 16)
    with torch.no_grad():
        out = attn(x)
        # padded to 8 x 8 with zeros after the norm; padded outputs dropped
        full = attn(F.pad(x, (0, 0, 0, 1, 0, 2)))[:, :6, :7]
        torch.testing.assert_close(out, full)
        # a window at least as large as the map is the map: global attention
        big = MoatAttention(16, 8, (20, 7), 4).eval()
        big.load_state_dict(attn.state_dict())
        glob = MoatAttention(16, 8, None, 4).eval()
        glob.load_state_dict(attn.state_dict())
        torch.testing.assert_close(big(x), glob(x))


def test_global_equals_window_covering_the_map_whole_model():
    torch.manual_seed(0)
    g = timm.create_model("tiny_moat_0").eval()
    x = torch.randn(1, 3, 96, 64)  # stride 16: 6 x 4, stride 32: 3 x 2
    w = timm.create_model("tiny_moat_0", window_size=((6, 4), (3, 2))).eval()
    w.load_state_dict(g.state_dict())
    small = timm.create_model("tiny_moat_0", window_size=(2, 1)).eval()
    small.load_state_dict(g.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(w(x), g(x))
        assert (small(x) - g(x)).abs().max() > 1e-4
    assert w.stages[2].blocks[0].attn.window_size == (6, 4) and w.stages[3].blocks[0].attn.window_size == (3, 2)
    lb = timm.create_model("tiny_moat_0", window_size=(2, 1), global_last_block=True)
    assert [b.attn.window_size for b in lb.stages[2].blocks] == [(2, 2)] * 6 + [None]


# ------------------------------------------------------------------------------ TF checkpoints
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_LAYER = {"shortcut.conv": "shortcut_conv", "pre_norm": "pre_norm", "expand_conv": "expand_conv",
          "expand_norm": "expand_norm", "dw_conv": "depthwise_conv", "dw_norm": "depthwise_norm",
          "se.reduce": "se/reduce_conv2d", "se.expand": "se/expand_conv2d", "shrink_conv": "shrink_conv",
          "attn_norm": "attention_norm"}


def _to_tf(model):
    """vzoo model → deeplab2 variables (name → numpy array, TF layouts), written from deeplab2's layer code."""
    sd = model.state_dict()
    out = {}

    def put(name, t):
        out[name] = t.detach().numpy().copy()

    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        mod, leaf = k.rsplit(".", 1)
        if k.startswith("stages."):
            _, s, _, j, rest = mod.split(".", 4)
            scope = f"moat/block_{int(s):02d}_{int(j):02d}/"
        else:
            scope, rest = "moat/", mod
        if rest == "attn.qkv":
            heads = t.shape[0] // 3 // 32  # head_dim 32 in every variant
            for name, part in zip("qkv", t.chunk(3, 0)):
                put(scope + f"attention/{name}/{leaf}",
                    part.t().reshape(part.shape[1], heads, 32) if leaf == "weight" else part.reshape(heads, 32))
            continue
        if rest == "attn.proj":
            put(scope + f"attention/o/{leaf}", t.t().reshape(-1, 32, t.shape[0]) if leaf == "weight" else t)
            continue
        if rest == "attn":
            put(scope + "attention/relative_position_embedding", t)
            continue
        layer = {"stem.conv1": "stem/conv_0", "stem.norm1": "stem/norm_0", "stem.conv2": "stem/conv_1",
                 "head_norm": "final_layer_norm", "head": "logits_head"}.get(rest) or _LAYER[rest]
        if t.ndim == 4:  # conv: (out, in, kh, kw) → (kh, kw, in, out); depthwise → (kh, kw, in, 1)
            name = "depthwise_kernel" if layer == "depthwise_conv" else "kernel"
            kernel = t.permute(2, 3, 0, 1) if layer == "depthwise_conv" else t.permute(2, 3, 1, 0)
            put(scope + f"{layer}/{name}", kernel)
        elif layer == "logits_head" and leaf == "weight":
            put(scope + "logits_head/kernel", t.t()[None, None])
        elif layer in ("final_layer_norm", "attention_norm"):
            put(scope + f"{layer}/{'gamma' if leaf == 'weight' else 'beta'}", t)
        elif "norm" in layer:
            put(scope + f"{layer}/{_BN[leaf]}", t)
        else:
            put(scope + f"{layer}/{leaf}", t)
    return out


def _randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)


def test_tf_names_and_shapes_from_deeplab2():
    model = timm.create_model("tiny_moat_0")
    tf = _to_tf(model)
    want = {
        "moat/stem/conv_0/kernel": (3, 3, 3, 32), "moat/stem/norm_0/moving_variance": (32,),
        "moat/stem/conv_1/bias": (32,),
        "moat/block_00_00/pre_norm/gamma": (32,), "moat/block_00_00/expand_conv/kernel": (1, 1, 32, 128),
        "moat/block_00_00/depthwise_conv/depthwise_kernel": (3, 3, 128, 1),
        "moat/block_00_00/se/reduce_conv2d/kernel": (1, 1, 128, 8),  # int(0.25 * out channels)
        "moat/block_00_00/se/expand_conv2d/bias": (128,), "moat/block_00_00/shrink_conv/kernel": (1, 1, 128, 32),
        "moat/block_01_00/shortcut_conv/kernel": (1, 1, 32, 64),
        "moat/block_02_00/attention_norm/beta": (128,),
        "moat/block_02_00/attention/q/weight": (128, 4, 32), "moat/block_02_00/attention/v/bias": (4, 32),
        "moat/block_02_00/attention/o/weight": (4, 32, 128),
        "moat/block_02_00/attention/relative_position_embedding": (4, 27, 27),
        "moat/block_03_01/attention/relative_position_embedding": (8, 13, 13),
        "moat/final_layer_norm/gamma": (256,), "moat/logits_head/kernel": (1, 1, 256, 1000),
    }
    for name, shape in want.items():
        assert tf[name].shape == shape, name
    assert "moat/block_00_00/shortcut_conv/kernel" not in tf  # 32 -> 32: no projection in the release
    assert not any("block_02_00/se/" in n for n in tf)
    trainable = sum(a.size for n, a in tf.items() if not n.endswith(("moving_mean", "moving_variance")))
    assert trainable == RELEASE["tiny_moat_0"][0]  # what deeplab2's test counts


def test_tf_mapping_round_trip_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("tiny_moat_0").eval()
    _randomize_bn(model)
    tf = _to_tf(model)
    # what else a TF1 training checkpoint holds: EMA copies, optimizer slots, the step counter
    tf["global_step"] = np.array(1000)
    tf["moat/block_00_00/pre_norm/gamma/Momentum"] = np.zeros(32, np.float32)
    tf["moat/block_00_00/pre_norm/gamma/ExponentialMovingAverage"] = np.full(32, 7.0, np.float32)
    # deeplab2's Sequential stem: variables may also come without the moat/stem/ scope
    tf["conv_0/kernel"] = tf.pop("moat/stem/conv_0/kernel")
    sd = tf_to_vzoo_state_dict(tf)
    ref = model.state_dict()
    assert set(sd) == set(ref)
    for k in ref:
        assert torch.equal(sd[k], ref[k]), k
    ema = tf_to_vzoo_state_dict(tf, use_ema=True)
    assert torch.all(ema["stages.0.blocks.0.pre_norm.weight"] == 7.0)
    assert torch.equal(ema["stages.0.blocks.1.pre_norm.weight"], ref["stages.0.blocks.1.pre_norm.weight"])

    # through timm's pretrained path (checkpoint_filter_fn recognises TF names)
    torch.manual_seed(1)
    loaded = timm.create_model("tiny_moat_0", pretrained=True,
                               pretrained_cfg_overlay=dict(state_dict=dict(tf))).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_tf_mapping_takes_keras3_depthwise_kernel_name():
    # the release (Keras 2) calls it depthwise_kernel; a checkpoint written under Keras 3 calls it kernel
    tf = _to_tf(timm.create_model("tiny_moat_0"))
    ref = tf_to_vzoo_state_dict(tf)
    k3 = {(n[:-len("depthwise_kernel")] + "kernel" if n.endswith("depthwise_conv/depthwise_kernel") else n): a
          for n, a in tf.items()}
    assert any(n.endswith("depthwise_conv/kernel") for n in k3)
    sd = tf_to_vzoo_state_dict(k3)
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)
    assert sd["stages.0.blocks.0.dw_conv.weight"].shape == (128, 1, 3, 3)


def test_tf_mapping_names_unplaceable_variables():
    tf = _to_tf(timm.create_model("tiny_moat_0"))
    tf["moat/block_02_00/attention/w/weight"] = np.zeros((2, 2), np.float32)
    tf["moat/block_01_00/mystery_conv/kernel"] = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="no place") as e:
        tf_to_vzoo_state_dict(tf)
    assert "block_01_00/mystery_conv/kernel" in str(e.value) and "attention/w/weight" in str(e.value)
    tf = _to_tf(timm.create_model("tiny_moat_0"))
    del tf["moat/block_02_00/attention/k/bias"]
    with pytest.raises(ValueError, match="k.bias"):
        tf_to_vzoo_state_dict(tf)


# A whole-network reference in deeplab2's formulation (NHWC, TF kernel layouts, TF 'same' padding),
# run on the TF-named variables: vzoo's model loaded from them must agree.
def _ref_forward(v, x, cfg):
    gelu = lambda t: F.gelu(t)  # noqa: E731  tf.nn.gelu(approximate=False)

    def bn(t, p):
        return (t - v[p + "moving_mean"]) / torch.sqrt(v[p + "moving_variance"] + 1e-3) * v[p + "gamma"] + v[p + "beta"]

    def ln(t, p):
        return F.layer_norm(t, t.shape[-1:], v[p + "gamma"], v[p + "beta"], eps=1e-5)

    def conv(t, p, stride=1, depthwise=False):
        k = v[p + ("depthwise_kernel" if depthwise else "kernel")]
        kh = k.shape[0]
        H, W = t.shape[1:3]
        ph = max((math.ceil(H / stride) - 1) * stride + kh - H, 0)
        pw = max((math.ceil(W / stride) - 1) * stride + kh - W, 0)
        t = F.pad(t, (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        Ho, Wo = math.ceil(H / stride), math.ceil(W / stride)
        out = 0
        for a in range(kh):
            for b in range(kh):
                patch = t[:, a:a + stride * (Ho - 1) + 1:stride, b:b + stride * (Wo - 1) + 1:stride]
                out = out + (patch * k[a, b, :, 0] if depthwise else torch.einsum("bhwc,co->bhwo", patch, k[a, b]))
        return out + v[p + "bias"] if (p + "bias") in v else out

    def mbconv(t, p, stride, se):
        short = t
        if stride > 1:
            short = _tf_avg_pool_same(short.permute(0, 3, 1, 2), cfg["pool"], stride).permute(0, 2, 3, 1)
        if p + "shortcut_conv/kernel" in v:
            short = conv(short, p + "shortcut_conv/")
        y = gelu(bn(conv(bn(t, p + "pre_norm/"), p + "expand_conv/"), p + "expand_norm/"))
        y = gelu(bn(conv(y, p + "depthwise_conv/", stride, depthwise=True), p + "depthwise_norm/"))
        if se:
            s = y.mean((1, 2), keepdim=True)
            s = conv(F.silu(conv(s, p + "se/reduce_conv2d/")), p + "se/expand_conv2d/")
            y = y * torch.sigmoid(s)
        return short + conv(y, p + "shrink_conv/")

    t = conv(x, "moat/stem/conv_0/", 2)
    t = conv(gelu(bn(t, "moat/stem/norm_0/")), "moat/stem/conv_1/")
    for s, (kind, depth) in enumerate(zip(cfg["types"], cfg["depths"])):
        for j in range(depth):
            p = f"moat/block_{s:02d}_{j:02d}/"
            t = mbconv(t, p, 2 if j == 0 else 1, kind == "mbconv")
            if kind == "moat":
                H, W = t.shape[1:3]
                win = cfg["windows"][s] or (H, W)
                win = (win, win) if isinstance(win, int) else win
                av = {k[len(p + "attention/"):]: a for k, a in v.items() if k.startswith(p + "attention/")}
                t = t + _ref_attention(ln(t, p + "attention_norm/"), av, win)
    t = ln(t.mean((1, 2)), "moat/final_layer_norm/")
    return t @ v["moat/logits_head/kernel"][0, 0] + v["moat/logits_head/bias"]


@pytest.mark.parametrize("size,windows,pool", [((48, 80), None, 2), ((64, 64), (None, None, (2, 2), (1, 1)), 3),
                                               ((50, 60), (None, None, 2, 1), 3)])
def test_whole_model_matches_a_deeplab2_style_reference(size, windows, pool):
    torch.manual_seed(0)
    kw = dict(pool_size=pool)
    if windows is not None:
        kw["window_size"] = windows
    model = timm.create_model("tiny_moat_0", **kw).double().eval()
    _randomize_bn(model)
    v = {k: torch.from_numpy(a) for k, a in _to_tf(model).items()}
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    cfg = dict(types=("mbconv", "mbconv", "moat", "moat"), depths=(2, 3, 7, 2), pool=pool,
               windows=windows or (None,) * 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _ref_forward(v, x.permute(0, 2, 3, 1), cfg))


def test_convert_without_tensorflow_says_how_to_install(tmp_path, capsys):
    try:
        import tensorflow  # noqa: F401
        pytest.skip("TensorFlow is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"pip install \.\[tf\]"):
        convert_tf_checkpoint(str(tmp_path))
    (tmp_path / "model.ckpt.index").write_bytes(b"")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), "moat", "--src", str(tmp_path),
                        "--dst", str(tmp_path / "out.safetensors"), "--variant", "moat_0"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and ".[tf]" in lines[0], r.stderr
    sys.path.insert(0, str(ROOT / "tools"))
    import convert
    a = convert._parse(["moat", "--src", "S", "--dst", "D", "--variant", "tiny_moat_1"])
    assert (a.model, a.src, a.dst) == ("tiny_moat_1", "S", "D")
    with pytest.raises(SystemExit):
        convert._parse(["van", "--src", "S", "--dst", "D", "--variant", "moat_0"])
    assert "belongs to family 'moat'" in capsys.readouterr().err


def test_convert_refuses_a_dst_that_is_not_safetensors(tmp_path):
    # it writes safetensors; vzoo picks the reader by suffix, so a '.pth' would then fail to load
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), "moat", "--src", str(tmp_path),
                        "--dst", str(tmp_path / "out.pth"), "--variant", "tiny_moat_0"], capture_output=True, text=True)
    assert r.returncode != 0 and "must end with .safetensors" in r.stderr, r.stderr
    assert not (tmp_path / "out.pth").exists()


def test_parity_tool_without_tensorflow_says_so(tmp_path):
    try:
        import tensorflow  # noqa: F401
        pytest.skip("TensorFlow is installed")
    except ImportError:
        pass
    (tmp_path / "model" / "pixel_encoder").mkdir(parents=True)
    (tmp_path / "model" / "pixel_encoder" / "moat.py").write_text("raise RuntimeError('must not be imported')\n")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "parity.py"), "moat", "--official-src", str(tmp_path),
                        "--variants", "tiny_moat_0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "needs TensorFlow" in r.stderr and "must not be imported" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------ features / errors
def test_features_any_size_with_windows():
    check_features_any_size("tiny_moat_0", (250, 131), channels=(32, 64, 128, 256), window_size=(14, 7), pool_size=3)


def test_features_are_the_release_res_endpoints():
    torch.manual_seed(0)
    m = timm.create_model("tiny_moat_0").eval()
    raw = timm.create_model("tiny_moat_0", feature_act=False).eval()
    raw.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = m.forward_intermediates(x, intermediates_only=True)
        b = raw.forward_intermediates(x, intermediates_only=True)
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa, F.gelu(fb))


@pytest.mark.parametrize("kwargs", [dict(window_size=(2, 1)), dict(feature_act=False)])
def test_fx_features_are_forward_intermediates(kwargs):
    """feature_cls='fx' gives the maps of forward_intermediates (the default features_only): the GELU'd stage
    outputs, or the raw ones without ``feature_act``; tests/test_timm_suite.py checks global attention at 32x32."""
    torch.manual_seed(0)
    getter = timm.create_model("tiny_moat_0", features_only=True, **kwargs).eval()
    torch.manual_seed(0)  # the same weights
    fx = timm.create_model("tiny_moat_0", features_only=True, feature_cls="fx", **kwargs).eval()
    x = torch.randn(1, 3, 72, 40)
    with torch.no_grad():
        ref, maps = getter(x), fx(x)
    assert len(maps) == len(ref) == 4
    for a, b in zip(maps, ref):
        assert torch.equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="window_size"):
        timm.create_model("tiny_moat_0", window_size=(1, 2, 3))
    with pytest.raises(ValueError, match="window_size"):
        timm.create_model("tiny_moat_0", window_size=(0, 7))
    with pytest.raises(ValueError, match="pool_size"):
        timm.create_model("tiny_moat_0", pool_size=5)
    with pytest.raises(ValueError, match="block_types"):
        timm.create_model("tiny_moat_0", block_types=("mbconv", "conv", "moat", "moat"))
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("tiny_moat_0", global_pool="max")


def test_grad_checkpointing_with_windows_and_layer_decay_groups():
    """The contract checks checkpointing with global attention; here the windowed path (na2d)."""
    from timm.optim import param_groups_layer_decay
    torch.manual_seed(0)
    m = timm.create_model("tiny_moat_0", window_size=(2, 1), drop_path_rate=0.0)
    assert_grad_checkpointing_matches(m, torch.randn(1, 3, 64, 64))
    groups = param_groups_layer_decay(m, weight_decay=0.05, layer_decay=0.9)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    assert "stages.2.blocks.0.attn.relative_position_bias_table" in m.no_weight_decay()
