"""Neighborhood attention front + torch path: against a brute-force reference, natten, and by hand.

The reference (``dense_reference``) is full softmax attention over all tokens with an ``N x N`` mask
written pair by pair from natten's mask definition; the torch path is the tiled ``O(N k^2)`` one.
"""
import os
import random

import pytest
import torch

from vzoo.layers import na1d, na2d, na3d, na2d_av, na2d_qk, na1d_qk, na1d_av
from vzoo.kernels.geometry import window_bounds
from vzoo.layers._na_torch import dense_reference

try:
    import natten
except ImportError:  # natten is in the pinned stack; keep the rest of the file useful without it
    natten = None


def _cfg(rng, n, max_len=11):
    shape = tuple(rng.randint(3, max_len) for _ in range(n))
    ks, ss, ds = [], [], []
    for L in shape:
        k = rng.choice([x for x in (1, 2, 3, 4, 5, 7) if x <= L])
        d = rng.choice([x for x in (1, 2, 3) if k * x <= L])
        ks.append(k), ds.append(d), ss.append(rng.randint(1, k))
    causal = tuple(rng.random() < 0.3 for _ in range(n))
    return shape, tuple(ks), tuple(ss), tuple(ds), causal


def _qkv(shape, heads=2, dim=8, vdim=None, dtype=torch.float64, b=2):
    q = torch.randn(b, *shape, heads, dim, dtype=dtype)
    k = torch.randn(b, *shape, heads, dim, dtype=dtype)
    v = torch.randn(b, *shape, heads, vdim or dim, dtype=dtype)
    return q, k, v


OPS = {1: na1d, 2: na2d, 3: na3d}


@pytest.mark.parametrize("seed", range(12))
def test_torch_path_matches_reference_fwd_bwd(seed):
    """Random odd / non-square shapes, kernel, stride, dilation, causal and rpb; forward and all grads."""
    rng = random.Random(seed)
    n = (1, 2, 2, 3)[seed % 4]
    shape, ks, ss, ds, causal = _cfg(rng, n, max_len=9 if n == 3 else 13)
    q, k, v = _qkv(shape, vdim=5)
    rpb = torch.randn(2, *[2 * x - 1 for x in ks], dtype=torch.float64) if seed % 2 else None
    for t in (q, k, v) + ((rpb,) if rpb is not None else ()):
        t.requires_grad_(True)
    scale = 0.37
    out = OPS[n](q, k, v, ks, ss, ds, causal, scale=scale, rpb=rpb, backend="torch")
    ref = dense_reference(q, k, v, ks, ss, ds, causal, scale, rpb)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(out)
    ins = [t for t in (q, k, v, rpb) if t is not None]
    got = torch.autograd.grad(out, ins, g)
    want = torch.autograd.grad(ref, ins, g)
    for a, b_ in zip(got, want):
        torch.testing.assert_close(a, b_, atol=1e-9, rtol=1e-9)


def test_window_bounds_by_hand():
    # L=7, k=3, stride 1: borders shift inward
    lo, hi = window_bounds(7, 3, 1, False)
    assert lo.tolist() == [0, 0, 1, 2, 3, 4, 4] and (hi - lo).tolist() == [2] * 7
    # stride == kernel == 3 on L=6: two blocks [0..2], [3..5]
    lo, _ = window_bounds(6, 3, 3, False)
    assert lo.tolist() == [0, 0, 0, 3, 3, 3]
    # non-divisible L=7: the last (partial) block shares the last full window
    lo, _ = window_bounds(7, 3, 3, False)
    assert lo.tolist() == [0, 0, 0, 3, 3, 3, 4]
    # even kernel (natten): k/2 keys before, k/2 - 1 after, shifted inward at the borders
    lo, hi = window_bounds(6, 4, 1, False)
    assert lo.tolist() == [0, 0, 0, 1, 2, 2] and (hi - lo).tolist() == [3] * 6
    # causal, k=3: [max(x-2,0) .. x]
    lo, hi = window_bounds(5, 3, 1, True)
    assert lo.tolist() == [0, 0, 0, 1, 2] and hi.tolist() == [0, 1, 2, 3, 4]


def test_gradcheck_float64():
    torch.manual_seed(0)
    q, k, v = _qkv((5, 6), heads=2, dim=3, b=1)
    rpb = torch.randn(2, 5, 5, dtype=torch.float64)
    ins = [t.requires_grad_(True) for t in (q, k, v, rpb)]
    for stride, dil, causal in [((1, 1), (1, 2), False), ((2, 3), (1, 1), (True, False))]:
        assert torch.autograd.gradcheck(
            lambda a, b, c, r: na2d(a, b, c, 3, stride, dil, causal, rpb=r, backend="torch"), ins, fast_mode=True)
    qq, kk = _qkv((5, 6), heads=2, dim=3, b=1)[:2]
    a = torch.randn(1, 5, 6, 2, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, r: na2d_qk(x, y, 3, (1, 2), rpb=r),
                                    [qq.requires_grad_(), kk.requires_grad_(), ins[3]], fast_mode=True)
    assert torch.autograd.gradcheck(lambda x, y: na2d_av(x, y, 3, (1, 2)), [a, ins[2]], fast_mode=True)


def _swin_windows(q, k, v, w, table, scale):
    """Independent Swin-style window attention (bias table indexed by query - key + w - 1)."""
    b, H, W, h, c = q.shape

    def part(x):
        return x.view(b, H // w, w, W // w, w, h, -1).permute(0, 1, 3, 5, 2, 4, 6).reshape(
            b, H // w, W // w, h, w * w, -1)
    qw, kw, vw = part(q), part(k), part(v)
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]) + w - 1  # query - key
    bias = table[:, rel[0], rel[1]]  # (h, w*w, w*w)
    attn = ((qw * scale) @ kw.transpose(-1, -2) + bias).softmax(-1)
    o = attn @ vw  # (b, nh, nw, h, w*w, c)
    return o.view(b, H // w, W // w, h, w, w, -1).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, H, W, h, -1)


@pytest.mark.parametrize("w", [7, 8])
def test_window_attention_equals_swin(w):
    """kernel_size == stride == window on a divisible map is Swin's window attention (flipped table),
    for odd and even windows (HAT / MOAT use 16 and 14)."""
    q, k, v = _qkv((2 * w, 3 * w), heads=3, dim=4, dtype=torch.float32)
    table = torch.randn(3, 2 * w - 1, 2 * w - 1)
    out = na2d(q, k, v, w, stride=w, rpb=table.flip(-1, -2), backend="torch")
    torch.testing.assert_close(out, _swin_windows(q, k, v, w, table, 4 ** -0.5), atol=1e-5, rtol=1e-5)


def test_qk_av_by_hand():
    """Neighbour order j = a*kw + b from the border-shifted window, dilation in group coordinates."""
    H, W, kh, d = 7, 8, 3, 2
    q, k, v = _qkv((H, W), heads=2, dim=4, b=1)
    rpb = torch.randn(2, 5, 5, dtype=torch.float64)
    s = na2d_qk(q, k, kh, d, rpb=rpb)
    a = torch.randn_like(s)
    o = na2d_av(a, v, kh, d)
    want_s, want_o = torch.zeros_like(s), torch.zeros_like(o)
    for y in range(H):
        for x in range(W):
            ly, lx = _lo(y, H, kh, d), _lo(x, W, kh, d)
            for i in range(kh):
                for j in range(kh):
                    ky, kx = (ly + i) * d + y % d, (lx + j) * d + x % d
                    bias = rpb[:, ly + i - y // d + kh - 1, lx + j - x // d + kh - 1]
                    want_s[0, y, x, :, i * kh + j] = (q[0, y, x] * k[0, ky, kx]).sum(-1) + bias
                    want_o[0, y, x] += a[0, y, x, :, i * kh + j, None] * v[0, ky, kx]
    torch.testing.assert_close(s, want_s)
    torch.testing.assert_close(o, want_o)


def _lo(x, L, k, d):
    g, xd = x % d, x // d
    glen = len(range(g, L, d))
    return min(max(xd - k // 2, 0), glen - k)


def test_qk_softmax_av_is_na():
    q, k, v = _qkv((9, 6), heads=2, dim=4)
    rpb = torch.randn(2, 9, 5, dtype=torch.float64)
    s = na2d_qk(q * 0.5, k, (5, 3), (1, 2), rpb=rpb)
    out = na2d_av(s.softmax(-1), v, (5, 3), (1, 2))
    torch.testing.assert_close(out, na2d(q, k, v, (5, 3), 1, (1, 2), scale=0.5, rpb=rpb, backend="torch"))
    s1 = na1d_qk(q[:, 0], k[:, 0], 5)
    torch.testing.assert_close(na1d_av(s1.softmax(-1), v[:, 0], 5), na1d(q[:, 0], k[:, 0], v[:, 0], 5, scale=1.0))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_low_precision(dtype, tol):
    q, k, v = _qkv((9, 11), heads=2, dim=16, dtype=torch.float32)
    rpb = torch.randn(2, 9, 9)
    ref = dense_reference(q, k, v, (5, 5), (2, 1), (1, 2), (False, True), 0.25, rpb)
    out = na2d(q.to(dtype), k.to(dtype), v.to(dtype), 5, (2, 1), (1, 2), (False, True), scale=0.25, rpb=rpb,
               backend="torch")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=tol * 4, rtol=tol)


def test_auto_backend_on_cpu_is_torch():
    q, k, v = _qkv((8, 8), dtype=torch.float32)
    torch.testing.assert_close(na2d(q, k, v, 3), na2d(q, k, v, 3, backend="torch"), atol=0, rtol=0)


def test_explicit_triton_on_3d_raises_with_the_reason():
    """No 3-D kernel: a named backend that cannot run raises (it used to run torch silently)."""
    q, k, v = _qkv((4, 5, 6), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"na3d: backend='triton' cannot run here: there is no 3-D kernel.*"
                                         r"Allowed: \('triton', 'torch', 'natten'\)"):
        na3d(q, k, v, 3, backend="triton")
    torch.testing.assert_close(na3d(q, k, v, 3, backend="auto"), na3d(q, k, v, 3, backend="torch"), atol=0, rtol=0)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter runs the kernels on the CPU")
def test_explicit_triton_on_cpu_without_interpreter_raises():
    q, k, v = _qkv((6, 6), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"na2d: backend='triton' cannot run here: .*CUDA tensors"):
        na2d(q, k, v, 3, backend="triton")
    with pytest.raises(ValueError, match="float16, bfloat16 and float32, got torch.float64"):
        na2d(q.double(), k.double(), v.double(), 3, backend="triton")


def test_auto_backend_falls_back_where_triton_cannot_run():
    """The chooser on a CUDA device (only the device type is read): Triton first, torch where it cannot run."""
    from vzoo.layers._backend import NA_BACKENDS, choose_backend
    cuda = torch.device("cuda")
    for requested in (None, "auto"):
        assert choose_backend("na3d", requested, NA_BACKENDS, device=cuda, dtype=torch.float32, spatial_dims=3,
                              has_rpb=False) == "torch"
        assert choose_backend("na2d", requested, NA_BACKENDS, device=cuda, dtype=torch.float64, spatial_dims=2,
                              has_rpb=True) == "torch"
        assert choose_backend("na2d", requested, NA_BACKENDS, device=torch.device("cpu"), dtype=torch.float32,
                              spatial_dims=2, has_rpb=False) == "torch"
    with pytest.raises(ValueError, match="backend='triton' cannot run here: there is no 3-D kernel"):
        choose_backend("na3d", "triton", NA_BACKENDS, device=cuda, dtype=torch.float32, spatial_dims=3,
                       has_rpb=False)


def test_any_head_dim_and_value_dim():
    q, k, v = _qkv((7, 7), heads=3, dim=12, vdim=20, dtype=torch.float32)
    out = na2d(q, k, v, 5)
    assert out.shape == (2, 7, 7, 3, 20)
    torch.testing.assert_close(out, dense_reference(q, k, v, (5, 5), (1, 1), (1, 1), (False, False), 12 ** -0.5))


@pytest.mark.skipif(natten is None, reason="natten not installed")
@pytest.mark.parametrize("seed", range(8))
def test_matches_natten_forward(seed):
    """natten 0.21 on the CPU (FlexAttention, head_dim a power of two >= 8): forward. FlexAttention has no
    backward on the CPU, so gradients are checked against the reference (above) and natten on a GPU."""
    rng = random.Random(100 + seed)
    n = (1, 2, 2, 3)[seed % 4]
    shape, ks, ss, ds, causal = _cfg(rng, n, max_len=8 if n == 3 else 12)
    ks = tuple(max(k, 3) if k * d <= L else k for k, d, L in zip(ks, ds, shape))
    ks = tuple(k if k * d <= L else 1 for k, d, L in zip(ks, ds, shape))
    if any(k < 2 for k in ks):
        pytest.skip("natten needs kernel_size >= 2")
    ss = tuple(min(s, k) for s, k in zip(ss, ks))
    q, k, v = _qkv(shape, heads=2, dim=8, dtype=torch.float32)
    op = OPS[n]
    ours = op(q, k, v, ks, ss, ds, causal, backend="torch")
    theirs = op(q, k, v, ks, ss, ds, causal, backend="natten")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(natten is None, reason="natten not installed")
def test_matches_natten_nat_tiny_block():
    """A NAT-like case: 2 x 14 x 14, 2 heads x 32, kernel 7, dilation 2 (DiNAT)."""
    q, k, v = _qkv((14, 14), heads=2, dim=32, dtype=torch.float32)
    for dil in (1, 2):
        torch.testing.assert_close(na2d(q, k, v, 7, dilation=dil), natten.na2d(q, k, v, 7, dilation=dil),
                                   atol=1e-5, rtol=1e-4)
    # even window attention (kernel == stride), non-divisible width: natten's partial last window
    q, k, v = _qkv((8, 13), heads=2, dim=16, dtype=torch.float32)
    torch.testing.assert_close(na2d(q, k, v, 4, stride=4), natten.na2d(q, k, v, 4, stride=4), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def test_errors():
    q, k, v = _qkv((8, 9), dtype=torch.float32)
    with pytest.raises(ValueError, match="kernel_size"):
        na2d(q, k, v, 0)
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        na2d(q, k, v, 5, dilation=2)
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        na2d(q, k, v, 11)
    with pytest.raises(ValueError, match="stride"):
        na2d(q, k, v, 3, stride=4)
    with pytest.raises(ValueError, match="stride"):
        na2d(q, k, v, 3, stride=0)
    with pytest.raises(ValueError, match="key shape"):
        na2d(q, k[:, :7], v, 3)
    with pytest.raises(ValueError, match="value shape"):
        na2d(q, k, v[:, :, :8], 3)
    with pytest.raises(TypeError, match="dtype"):
        na2d(q, k.double(), v, 3)
    with pytest.raises(ValueError, match="5-D.*\\(B, H, W, heads, head_dim\\)"):
        na2d(q.flatten(-2).permute(0, 3, 1, 2), k, v, 3)  # NCHW
    with pytest.raises(TypeError, match="floating"):
        na2d(q.long(), k.long(), v.long(), 3)
    with pytest.raises(ValueError, match="rpb must have shape"):
        na2d(q, k, v, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="backend must be one of"):
        na2d(q, k, v, 3, backend="cuda")
    with pytest.raises(TypeError, match="kernel_size"):
        na2d(q, k, v, (3, 3, 3))
    with pytest.raises(TypeError, match="is_causal"):
        na2d(q, k, v, 3, is_causal=(True,))
    with pytest.raises(ValueError, match="attn last dim"):
        na2d_av(torch.zeros(2, 8, 9, 2, 8), v, 3)
    if natten is not None:
        with pytest.raises(ValueError, match="no relative positional bias"):
            na2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5), backend="natten")


def test_memory_is_linear_in_tokens():
    """The torch path never forms N x N: its largest intermediate grows with N, not N^2."""
    from vzoo.layers import _na_torch as T
    sizes = {}
    for L in (16, 64):
        plan = T._nd_plan((L, L), (5, 5), (1, 1), (False, False), T._tiles_for((L, L), (5, 5), (1, 1), None),
                          False, "cpu")
        sizes[L] = plan["n_tiles"] * plan["tq"] * plan["tk"]
    assert sizes[64] / sizes[16] < 16 * 1.5  # tokens grew 16x; N^2 would be 256x
    assert sizes[64] < (64 * 64) ** 2 / 20


def test_benchmark_suite_tiny(tmp_path):
    import argparse
    from vzoo.benchmarks import load_suite
    suite = load_suite("na")
    p = argparse.ArgumentParser()
    suite.add_arguments(p)
    backends = ["torch", "sdpa"] + (["natten"] if natten is not None else [])
    args = p.parse_args(["--cases", "tiny", "--backends", *backends, "--device", "cpu", "--bwd", "--iters", "1",
                         "--warmup", "0", "--plot", str(tmp_path / "na.png")])
    rows = suite.run(args)
    assert [r["backend"] for r in rows] == backends
    torch_row = rows[0]
    assert torch_row["fwd_ms"] > 0 and torch_row["fwdbwd_ms"] > 0 and torch_row["x_vs_sdpa"] > 0
    if natten is not None:  # natten has no rpb (timed without it) and no CPU backward: said in the row
        assert "no rpb" in rows[-1]["note"] and rows[-1]["fwd_ms"] > 0
    assert (tmp_path / "na.png").stat().st_size > 1000


def test_non_contiguous_inputs_from_a_fused_qkv():
    qkv = torch.randn(2, 9, 7, 3, 2, 8)  # (B, H, W, 3, heads, C) as a qkv projection gives it
    q, k, v = qkv.unbind(3)
    assert not q.is_contiguous()
    torch.testing.assert_close(na2d(q, k, v, 3, dilation=2), na2d(q.contiguous(), k.contiguous(), v.contiguous(), 3,
                                                                  dilation=2))


# ---------------------------------------------------------------------------------------------------
# the torch path's per-shape dispatch (tiled / dense / window), non-finite and empty inputs
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["tiled", "dense", "window"])
@pytest.mark.parametrize("seed", range(4))
def test_every_torch_path_matches_reference(path, seed):
    """Each path of the dispatch, forced, is exact (forward and every gradient, float64)."""
    from vzoo.layers._na_torch import na_forward
    rng = random.Random(100 + seed)
    n = (1, 2, 3)[seed % 3]
    shape, ks, ss, ds, causal = _cfg(rng, n, max_len=8 if n == 3 else 13)
    q, k, v = _qkv(shape, vdim=5)
    rpb = torch.randn(2, *[2 * x - 1 for x in ks], dtype=torch.float64) if seed % 2 else None
    ins = [t.requires_grad_(True) for t in (q, k, v) + ((rpb,) if rpb is not None else ())]
    out = na_forward(q, k, v, ks, ss, ds, causal, 0.37, rpb=rpb, path=path)
    ref = dense_reference(q, k, v, ks, ss, ds, causal, 0.37, rpb)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(out)
    for a, b_ in zip(torch.autograd.grad(out, ins, g), torch.autograd.grad(ref, ins, g)):
        torch.testing.assert_close(a, b_, atol=1e-9, rtol=1e-9)


def test_dense_and_window_paths_gradcheck():
    from vzoo.layers._na_torch import na_forward
    torch.manual_seed(0)
    q, k, v = _qkv((5, 6), heads=2, dim=3, b=1)
    rpb = torch.randn(2, 5, 5, dtype=torch.float64)
    ins = [t.requires_grad_(True) for t in (q, k, v, rpb)]
    for path in ("dense", "window"):
        for stride, causal in [((1, 1), (False, False)), ((2, 3), (True, False))]:
            assert torch.autograd.gradcheck(
                lambda a, b, c, r: na_forward(a, b, c, (3, 3), stride, (1, 1), causal, 0.5, rpb=r, path=path), ins,
                fast_mode=True)


def test_dispatch_chooses_dense_where_the_regions_span_the_map():
    """Dense (one SDPA over all tokens, no mask where the window is the whole map) where a tile's key region
    would span the map; tiled elsewhere, with kernel-sized tiles on maps up to 4 kernels, for window
    attention (kernel == stride) and whenever a tile is given."""
    from vzoo.layers import _na_torch as T
    geo = dict(stride=(1, 1), causal=(False, False))
    assert T.choose_path((7, 7), (7, 7), **geo) == "dense"  # NAT-T stage 4: plain attention
    assert T.choose_path((10, 10), (7, 7), **geo) == "dense"  # every region is the whole map
    assert T.choose_path((14, 14), (7, 7), **geo) == "tiled"  # NAT-T stage 3: four 7 x 7 tiles
    assert T._tiles_for((14, 14), (7, 7), (1, 1), None) == (7, 7)
    assert T._tiles_for((56, 56), (7, 7), (1, 1), None) == (4, 8)
    assert T.choose_path((56, 56), (7, 7), **geo) == "tiled"
    assert T.choose_path((64, 64), (16, 16), (16, 16), (False, False)) == "tiled"  # HAT windows
    assert T.choose_path((7, 7), (7, 7), tile=(4, 4), **geo) == "tiled"
    full = T._nd_plan((7, 7), (7, 7), (1, 1), (False, False), (7, 7), False, "cpu")
    assert full["mask"] is None  # kernel == map: plain attention, no mask
    # the front runs the choice: the dense path at 10 x 10 (equal to the reference), plain SDPA at 7 x 7
    for L in (7, 10):
        q, k, v = _qkv((L, L), heads=2, dim=8, dtype=torch.float32)
        got = na2d(q, k, v, 7)
        torch.testing.assert_close(got, T.na_forward(q, k, v, (7, 7), (1, 1), (1, 1), (False, False), 8 ** -0.5,
                                                     path="dense"), atol=0, rtol=0)
        torch.testing.assert_close(got, dense_reference(q, k, v, (7, 7), (1, 1), (1, 1), (False, False), 8 ** -0.5),
                                   atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    q, k, v = _qkv((7, 7), heads=2, dim=8, dtype=torch.float32)
    want = torch.nn.functional.scaled_dot_product_attention(
        *[t.reshape(2, 49, 2, 8).transpose(1, 2) for t in (q, k, v)]).transpose(1, 2).reshape(q.shape)
    torch.testing.assert_close(na2d(q, k, v, 7), want, atol=0, rtol=0)
    with pytest.raises(ValueError, match="path must be one of"):
        T.na_forward(q, k, v, (7, 7), (1, 1), (1, 1), (False, False), 1.0, path="fast")


def _holders(shape, pos, kernel, stride=None, dilation=None):
    """Queries whose window holds the key at ``pos``: the product over axes of those per axis."""
    stride, dilation = stride or (1,) * len(shape), dilation or (1,) * len(shape)
    count = 1
    for L, p, k, s, d in zip(shape, pos, kernel, stride, dilation):
        g = p % d
        xs = torch.arange(g, L, d)
        lo, hi = window_bounds(len(xs), k, s, False, torch.arange(len(xs)))
        count *= int(((lo <= p // d) & (hi >= p // d)).sum())
    return count


@pytest.mark.parametrize("which", ["key", "value"])
@pytest.mark.parametrize("shape,pos,kernel,stride,dilation", [
    ((32, 32), (16, 16), 3, 1, 1),  # the case: natten gives 9; tiled path
    ((32, 32), (16, 16), 7, 1, 2),  # dilated; tiled path per group
    ((14, 14), (0, 0), 7, 1, 1),  # NAT-T stage 3: four 7 x 7 tiles
    ((10, 10), (0, 0), 7, 1, 1),  # dense path, masked (every region is the whole map)
    ((7, 7), (3, 3), 7, 1, 1),  # the window is the map: plain attention, every output sees it
    ((8, 12), (5, 6), 4, 4, 1),  # window attention (kernel == stride): the 16 tokens of its window
    ((40,), (20,), 5, 1, 1),  # na1d
    ((6, 7, 8), (3, 3, 4), 3, 1, 1),  # na3d
])
def test_nan_stays_in_the_windows_that_hold_it(which, shape, pos, kernel, stride, dilation):
    """One NaN key (or value) reaches exactly the outputs whose window holds it, whatever path the shape
    dispatches to; every other output equals the output with a finite key there."""
    torch.manual_seed(0)
    n = len(shape)
    q, k, v = _qkv(shape, heads=2, dim=8, dtype=torch.float32, b=2)
    bad = (k if which == "key" else v).clone()
    bad[(1,) + pos] = float("nan")
    args = (q, bad, v) if which == "key" else (q, k, bad)
    out = OPS[n](*args, kernel, stride=stride, dilation=dilation)
    hit = out.isnan().any(-1)  # (B, *S, heads)
    want = _holders(shape, pos, (kernel,) * n, stride=(stride,) * n, dilation=(dilation,) * n)
    assert int(hit[1].all(-1).sum()) == int(hit[1].any(-1).sum()) == want
    assert not hit[0].any()
    clean = OPS[n](q, k, v, kernel, stride=stride, dilation=dilation)
    torch.testing.assert_close(out[~hit], clean[~hit], atol=1e-5, rtol=1e-5)
    if n == 2 and kernel == 3 and dilation == 1 and which == "key" and natten is not None:
        want = natten.na2d(*args, kernel).isnan().any(-1)
        assert torch.equal(hit, want)


def test_nan_in_split_ops_stays_in_its_windows():
    """na2d_qk: a NaN key gives NaN only in the (query, slot) pairs that see it; na2d_av: a NaN value only
    in the outputs whose window holds it, on a large map (offset loop) and on a small one (tiled matmul)."""
    torch.manual_seed(0)
    q, k, _ = _qkv((32, 32), heads=2, dim=8, dtype=torch.float32, b=1)
    k[0, 16, 16] = float("nan")
    s = na2d_qk(q, k, 3)
    assert int(s.isnan().sum()) == 9 * 2  # 9 windows hold it, once each, in both heads
    for shape, kernel in (((32, 32), 3), ((7, 7), 5)):  # 49 <= 2 * 25: the small-map matmul path
        v = torch.randn(1, *shape, 2, 4)
        v[0, 1, 0] = float("nan")
        a = torch.rand(1, *shape, 2, kernel * kernel)
        hit = na2d_av(a, v, kernel).isnan().any(-1)
        assert int(hit.any(-1).sum()) == _holders(shape, (1, 0), (kernel, kernel))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("empty", ["batch", "heads"])
def test_empty_batch_or_heads_gives_an_empty_result(n, empty):
    shape = (6, 5, 4)[:n]
    b, h = (0, 2) if empty == "batch" else (2, 0)
    q, k = (torch.randn(b, *shape, h, 8, requires_grad=True) for _ in range(2))
    v = torch.randn(b, *shape, h, 4, requires_grad=True)
    rpb = torch.randn(h, *[5] * n, requires_grad=True)
    out = OPS[n](q, k, v, 3, rpb=rpb)
    assert out.shape == v.shape
    out.sum().backward()
    assert q.grad.shape == q.shape and v.grad.shape == v.shape and rpb.grad.shape == rpb.shape
    assert not rpb.grad.any()
    if n != 2:
        return
    s = na2d_qk(q, k, 3, rpb=rpb)
    assert s.shape == (b, *shape, h, 9)
    o = na2d_av(s.softmax(-1), v, 3)
    assert o.shape == v.shape
    o.sum().backward()


def test_channels_first_tensor_is_a_layout_error():
    """Issue 17 item 5: a heads-first (channels-first) 5-D tensor is named as a layout error, not as a kernel
    larger than the map (its 'H' is the head count)."""
    q = torch.randn(2, 2, 16, 16, 8)  # (B, heads, H, W, head_dim)
    with pytest.raises(ValueError, match=r"na2d: layout error: tensors must be \(B, H, W, heads, head_dim\)"):
        na2d(q, q, q, kernel_size=7)
    with pytest.raises(ValueError, match=r"larger than the input size"):  # a kernel too large for either layout
        na2d(q, q, q, kernel_size=17)


def _error_message(fn):
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return f"{info.type.__name__}: {info.value}"


def test_checks_are_cached_per_signature_without_changing_results_or_errors():
    """Issue 19: a repeated call skips the front's checks (looked up per signature); its result is the same,
    and a bad call after a good one of the same shapes (an argument equal as a dict key: True == 1 == 1.0)
    still raises the message it raises on a fresh cache."""
    import sys
    front = sys.modules["vzoo.layers.neighborhood_attention"]
    q, k, v = _qkv((6, 7), dtype=torch.float32)
    rpb = torch.randn(2, 5, 5)
    attn = torch.randn(2, 6, 7, 2, 9)
    bad_calls = {  # good call -> bad calls with the same tensors
        lambda: na2d(q, k, v, 1): [lambda: na2d(q, k, v, True), lambda: na2d(q, k, v, 1.0),
                                   lambda: na2d(q, k, v, 1, backend="cuda"), lambda: na2d(q, k.double(), v, 1)],
        lambda: na2d(q, k, v, (3, 3), is_causal=False, scale=1): [
            lambda: na2d(q, k, v, (3.0, 3)), lambda: na2d(q, k, v, (3, 3), is_causal=0),
            lambda: na2d(q, k, v, (3, 3), scale=True), lambda: na2d(q, k, v, ([3], 3))],
        lambda: na2d(q, k, v, 3, rpb=rpb): [lambda: na2d(q, k, v, 3, rpb=rpb[:1]), lambda: na2d(q, k, v, 3, rpb=1)],
        lambda: na2d_qk(q, k, 1): [lambda: na2d_qk(q, k, True)],
        lambda: na2d_av(attn, v, 3): [lambda: na2d_av(attn[..., :4], v, 3), lambda: na2d_av(attn, v, (3, True))],
    }
    for good, bads in bad_calls.items():
        front._CHECKED.clear()
        fresh = [_error_message(bad) for bad in bads]
        first = good()
        assert len(front._CHECKED) == 1  # the good call was remembered, none of the bad ones
        assert [_error_message(bad) for bad in bads] == fresh
        torch.testing.assert_close(good(), first, atol=0, rtol=0)
        front._CHECKED.clear()
        torch.testing.assert_close(good(), first, atol=0, rtol=0)
    # bounded: cleared when full
    for i in range(front._MAX_CHECKED + 3):
        na2d(q, k, v, 1, scale=1.0 + i)
    assert 0 < len(front._CHECKED) <= front._MAX_CHECKED


# ---------------------------------------------------------------------------------------------------
# the tiled path's matmul core (issue 19): hand-written backward, chunks, per-pattern rpb bias
# ---------------------------------------------------------------------------------------------------
def test_tiled_chunks_cover_every_tile_once():
    from vzoo.layers._na_torch import _chunks
    for batch, heads, tiles, tile_scores, limit in [(3, 4, 5, 10, 10 ** 6), (3, 4, 5, 10, 200), (3, 4, 5, 10, 50),
                                                    (3, 4, 5, 10, 20), (2, 3, 7, 10, 5)]:
        seen = torch.zeros(batch, heads, tiles, dtype=torch.long)
        chunks = _chunks(batch, heads, tiles, tile_scores, limit)
        for b0, b1, h0, h1, t0, t1 in chunks:
            seen[b0:b1, h0:h1, t0:t1] += 1
            assert (b1 - b0) * (h1 - h0) * (t1 - t0) * tile_scores <= max(limit, tile_scores)
        assert bool((seen == 1).all())
    assert len(_chunks(3, 4, 5, 10, 10 ** 6)) == 1 and len(_chunks(2, 3, 7, 10, 5)) == 2 * 3 * 7


@pytest.mark.parametrize("bias_shape", [None, (1, 2, 3, 3, 4), (1, 2, 1, 3, 4), (1, 1, 3, 3, 4)])
def test_tiled_attention_function_gradcheck(bias_shape, monkeypatch):
    """The hand-written backward in float64, in one chunk and in chunks of one tile."""
    from vzoo.layers import _na_torch as T
    torch.manual_seed(0)
    q = torch.randn(2, 2, 3, 3, 2, dtype=torch.float64, requires_grad=True)  # (B, h, tiles, tq, C)
    k = torch.randn(2, 2, 3, 4, 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    bias = None if bias_shape is None else torch.randn(bias_shape, dtype=torch.float64, requires_grad=True)
    ins = [t for t in (q, k, v, bias) if t is not None]
    for limit in (1 << 19, 12):
        monkeypatch.setattr(T, "_CHUNK_SCORES", limit)
        assert len(T._chunks(2, 2, 3, 12)) == (1 if limit > 12 else 12)
        assert torch.autograd.gradcheck(lambda *a: T._TiledAttention.apply(*a[:3], a[3] if bias is not None else None,
                                                                           0.3), ins, fast_mode=True)


@pytest.mark.parametrize("seed", range(4))
def test_tiled_rpb_grad_path_in_chunks_matches_reference(seed, monkeypatch):
    """The learnable-rpb tiled path (forced), in chunks of every kind (batches, heads, tiles), against the
    reference: forward and the gradients of q, k, v and rpb (float64; dilation, stride, causal)."""
    from vzoo.layers import _na_torch as T
    rng = random.Random(300 + seed)
    n = (1, 2, 3)[seed % 3]
    shape, ks, ss, ds, causal = _cfg(rng, n, max_len=8 if n == 3 else 13)
    q, k, v = _qkv(shape, heads=3, vdim=5, b=3)
    rpb = torch.randn(3, *[2 * x - 1 for x in ks], dtype=torch.float64)
    ins = [t.requires_grad_(True) for t in (q, k, v, rpb)]
    ref = dense_reference(q, k, v, ks, ss, ds, causal, 0.37, rpb)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, ins, g)
    for limit in (1 << 19, 2000, 300):
        monkeypatch.setattr(T, "_CHUNK_SCORES", limit)
        out = T.na_forward(q, k, v, ks, ss, ds, causal, 0.37, rpb=rpb, path="tiled")
        torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
        for a, b_ in zip(torch.autograd.grad(out, ins, g), want):
            torch.testing.assert_close(a, b_, atol=1e-9, rtol=1e-9)


def test_rpb_bias_is_gathered_once_per_tile_pattern():
    """Windows that tile the map share one bias (broadcast over the tiles); NA's border tiles differ."""
    from vzoo.layers import _na_torch as T
    win = T._nd_plan((16, 24), (8, 8), (8, 8), (False, False), (8, 8), True, "cpu")
    patterns, tile_pattern = win["rpb_patterns"]
    assert patterns.shape == (1, 64, 64) and tile_pattern is None
    na = T._nd_plan((20, 20), (5, 5), (1, 1), (False, False), (4, 4), True, "cpu")
    patterns, tile_pattern = na["rpb_patterns"]
    assert 1 < patterns.shape[0] < na["n_tiles"] and tile_pattern.shape == (na["n_tiles"],)
    torch.testing.assert_close(patterns[tile_pattern], na["rpb_idx_masked"], atol=0, rtol=0)
    rpb = torch.randn(2, 9, 9, dtype=torch.float64)
    want = T._bias_table(rpb, torch.float64)[:, na["rpb_idx_masked"]]
    torch.testing.assert_close(T._tile_bias(rpb, na, torch.float64), want, atol=0, rtol=0)


def test_sum_dim_is_sum():
    from vzoo.layers._na_torch import _sum_dim
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    for dim in range(3):
        torch.testing.assert_close(_sum_dim(x, dim), x.sum(dim))


def test_checks_cache_is_not_read_under_torch_compile(monkeypatch):
    """dynamo traces the checks (fullgraph, no break) and never reads the cache, so eager calls that add
    signatures later do not recompile the graph."""
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    q = torch.randn(1, 6, 7, 2, 8)
    attn = torch.randn(1, 6, 7, 2, 9)

    def scores_then_sum(x):
        return na2d_av(na2d_qk(x, x, 3).softmax(-1), x, 3) + na2d_av(attn, x, 3)

    compiled = torch.compile(scores_then_sum, backend="eager", fullgraph=True)
    first = compiled(q)
    na2d_qk(q, q, 1), na2d_av(attn[..., :1], q, 1)  # new signatures, in eager mode
    torch.testing.assert_close(compiled(q), first, atol=0, rtol=0)
    torch.testing.assert_close(first, scores_then_sum(q), atol=0, rtol=0)


def test_tiled_attention_function_compiles_fullgraph(monkeypatch):
    """The matmul core traces whole under torch.compile (forward and backward), in chunks."""
    from vzoo.layers import _na_torch as T
    monkeypatch.setattr(T, "_CHUNK_SCORES", 30)
    torch.manual_seed(0)
    shapes = [(2, 2, 3, 3, 4), (2, 2, 3, 5, 4), (2, 2, 3, 5, 4), (1, 2, 1, 3, 5)]  # q, k, v, bias
    ins = [torch.randn(s).requires_grad_() for s in shapes]

    def f(q, k, v, bias):
        return T._TiledAttention.apply(q, k, v, bias, 0.5)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(*ins)
    ref = f(*ins)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for a, b_ in zip(torch.autograd.grad(out, ins, g), torch.autograd.grad(ref, ins, g)):
        torch.testing.assert_close(a, b_)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tiled_rpb_grad_path_half_precision_as_autograd(dtype):
    """Half inputs on the learnable-rpb path: output and gradients as close to the float64 reference as
    autograd through the same half-precision ops (float32 scores, half matmuls) gets."""
    from vzoo.layers import _na_torch as T
    torch.manual_seed(0)
    q, k, v = _qkv((12, 10), heads=2, dim=16, dtype=dtype)
    rpb = torch.randn(2, 9, 9)
    ins = [t.requires_grad_() for t in (q, k, v, rpb)]
    geo = ((5, 5), (1, 1), (1, 1), (False, False), 0.3)
    ref = dense_reference(*(t.double() for t in ins[:3]), *geo, rpb.double())
    g = torch.randn_like(ref)
    plan = T._nd_plan((12, 10), (5, 5), (1, 1), (False, False), T._tiles_for((12, 10), (5, 5), (1, 1), None), True,
                      "cpu")
    # the same ops through autograd: half matmuls, float32 scores + bias and softmax
    qt, kt, vt = (T._gather_heads_major(x, plan[i], plan["n_tiles"]) for x, i in zip(ins, ("qflat", "rflat", "rflat")))
    s = torch.matmul(qt, kt.transpose(-1, -2)).float() * 0.3 + T._tile_bias(rpb, plan, torch.float32).repeat(2, 1, 1, 1)
    auto = T._untile_heads_major(torch.matmul(torch.softmax(s, -1).to(dtype), vt), plan, (12, 10), 2)
    out = T.na_forward(*ins[:3], *geo, rpb=rpb, path="tiled")
    want = torch.autograd.grad(ref, ins, g)
    assert out.dtype == dtype
    assert (out.double() - ref).abs().max() <= 1.5 * (auto.double() - ref).abs().max() + 1e-3
    for got, base, w in zip(torch.autograd.grad(out, ins, g.to(dtype)), torch.autograd.grad(auto, ins, g.to(dtype)),
                            want):
        assert (got.double() - w).abs().max() <= 1.5 * (base.double() - w).abs().max() + 1e-3


# torch.compile(fullgraph=True) of the fused torch path on a shape no eager call has planned yet
_COMPILE_CASES = {  # name: (shape, kernel, na2d keyword arguments, with rpb)
    "tiled": ((20, 20), 5, {}, False),
    "dense_masked": ((9, 9), 7, {}, False),
    "dense_plain": ((7, 7), 7, {}, False),
    "dilation": ((13, 11), 3, {"dilation": 2}, False),
    "rpb_tiled": ((20, 20), 5, {}, True),
    "rpb_dense": ((9, 9), 7, {}, True),
    "stride": ((20, 20), 5, {"stride": 2}, False),
    "causal": ((12, 12), 5, {"is_causal": (True, False)}, False),
}


def _check_compiled_na2d_on_fresh_shape(case, backend, grad_tol=None):
    """na2d on ``case``, compiled with every plan cache emptied first: output and gradients as eager."""
    from vzoo.layers import _na_torch as T
    shape, kernel, kwargs, with_rpb = _COMPILE_CASES[case]
    for cache in (T._axis_plan, T._nd_plan, T._kernel_gather_idx, T._auto_path, T._float_mask_of, T._split_plan):
        cache.cache_clear()
    torch._dynamo.reset()
    torch.manual_seed(0)
    ins = [t.requires_grad_() for t in _qkv(shape, dtype=torch.float32)]
    ins.append(torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, requires_grad=True) if with_rpb else None)

    def fn(q, k, v, rpb):
        return na2d(q, k, v, kernel, rpb=rpb, backend="torch", **kwargs)
    out = torch.compile(fn, fullgraph=True, backend=backend)(*ins)
    ref = fn(*ins)
    torch.testing.assert_close(out, ref)
    ins, g = [t for t in ins if t is not None], torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, ins, g), torch.autograd.grad(ref, ins, g)):
        torch.testing.assert_close(got, want, **(grad_tol or {}))


@pytest.mark.parametrize("case", list(_COMPILE_CASES))
def test_na2d_torch_compiles_fullgraph_on_fresh_shape(case):
    """The plans are constants of Python ints (built once at trace time, not traced): no graph break on a
    shape seen for the first time, on every path; outputs and gradients (rpb's included) as eager."""
    _check_compiled_na2d_on_fresh_shape(case, backend="aot_eager")


def test_na2d_torch_compiles_with_inductor():
    """One inductor compile of the learnable-rpb tiled path (C++ codegen: 3-8 s on a loaded 2-core CPU)."""
    _check_compiled_na2d_on_fresh_shape("rpb_tiled", backend="inductor", grad_tol=dict(atol=1e-4, rtol=1e-4))
