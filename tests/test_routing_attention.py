"""Bi-level routing attention: the torch backends against the reference (the release's math), an
independent brute-force check of the routing semantics, gradcheck in float64, the module's auto_pad
and argument checks."""
import os

import pytest
import torch

from vzoo.layers import BiLevelRoutingAttention, bi_level_routing_attention, region_routing, routed_attention

# (B, H, W, n_win, topk, heads, head_dim, value_head_dim)
CASES = [(2, 6, 9, 3, 2, 2, 8, 8), (1, 8, 8, 2, 4, 1, 16, 12), (1, 10, 5, 5, 3, 3, 4, 6)]


def _qkv(B, H, W, heads, D, DV, dtype=torch.float32):
    return (torch.randn(B, H, W, heads * D, dtype=dtype), torch.randn(B, H, W, heads * D, dtype=dtype),
            torch.randn(B, H, W, heads * DV, dtype=dtype))


def brute_force(q, k, v, n_win, topk, heads, scale):
    """Token by token: region of every token, region means, top-k regions, softmax over their tokens."""
    B, H, W, C = q.shape
    h, w = H // n_win, W // n_win
    region = (torch.arange(H)[:, None] // h) * n_win + torch.arange(W)[None, :] // w  # (H, W)
    out = torch.zeros(B, H, W, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        qm = torch.stack([q[b][region == r].mean(0) for r in range(n_win * n_win)])
        km = torch.stack([k[b][region == r].mean(0) for r in range(n_win * n_win)])
        top = ((qm * scale) @ km.T).topk(topk, dim=-1).indices
        for y in range(H):
            for x in range(W):
                keep = torch.isin(region, top[region[y, x]]).flatten()
                kk, vv = k[b].reshape(H * W, C)[keep], v[b].reshape(H * W, -1)[keep]
                for m in range(heads):
                    d, dv = C // heads, v.shape[-1] // heads
                    a = ((q[b, y, x, m * d:(m + 1) * d] * scale) @ kk[:, m * d:(m + 1) * d].T).softmax(-1)
                    out[b, y, x, m * dv:(m + 1) * dv] = a @ vv[:, m * dv:(m + 1) * dv]
    return out


@pytest.mark.parametrize("case", CASES)
def test_reference_is_the_routing_semantics(case):
    B, H, W, n, topk, heads, D, DV = case
    q, k, v = _qkv(B, H, W, heads, D, DV, torch.float64)
    out = bi_level_routing_attention(q, k, v, n, topk, heads, scale=0.4, backend="reference")
    torch.testing.assert_close(out, brute_force(q, k, v, n, topk, heads, 0.4))


@pytest.mark.parametrize("case", CASES)
def test_torch_backend_matches_reference_forward_backward(case):
    B, H, W, n, topk, heads, D, DV = case
    q, k, v = (t.requires_grad_() for t in _qkv(B, H, W, heads, D, DV))
    outs, grads = [], []
    for backend in ("reference", "torch"):
        o = bi_level_routing_attention(q, k, v, n, topk, heads, backend=backend)
        g = torch.autograd.grad(o, (q, k, v), torch.ones_like(o) * torch.linspace(-1, 1, o.shape[-1]))
        outs.append(o)
        grads.append(g)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gradcheck_float64(backend):
    B, H, W, n, topk, heads, D, DV = 1, 4, 4, 2, 2, 2, 2, 2
    q, k, v = (t.requires_grad_() for t in _qkv(B, H, W, heads, D, DV, torch.float64))
    _, idx = region_routing(q.detach().reshape(1, 2, 2, 2, 2, 4).mean((2, 4)).reshape(1, 4, 4),
                            k.detach().reshape(1, 2, 2, 2, 2, 4).mean((2, 4)).reshape(1, 4, 4), topk, 0.5)
    w = torch.rand(1, 4, topk, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: routed_attention(a, b, c, idx, n, heads, 0.5, backend=backend),
                                    (q, k, v))
    assert torch.autograd.gradcheck(  # soft routing: the weights get gradients too
        lambda a, b, c, r: routed_attention(a, b, c, idx, n, heads, 0.5, r_weight=r, backend=backend), (q, k, v, w))


@pytest.mark.parametrize("size", [(14, 14), (9, 13), (5, 3)])
def test_module_auto_pad_is_zero_padding_before_qkv(size):
    """auto_pad: the release pads the (normed) input with zeros, so padded tokens carry the qkv bias
    and take part in routing and attention; the output is cropped."""
    torch.manual_seed(0)
    m = BiLevelRoutingAttention(16, num_heads=2, n_win=7, topk=4, side_dwconv=5, auto_pad=True).eval()
    x = torch.randn(2, *size, 16)
    H, W = (-(-s // 7) * 7 for s in size)
    padded = torch.nn.functional.pad(x, (0, 0, 0, W - size[1], 0, H - size[0]))
    with torch.no_grad():
        y = m(x)
        m.auto_pad = False
        y_full = m(padded)
        ref = m(x, backend="reference") if size == (14, 14) else None
    assert y.shape == x.shape
    torch.testing.assert_close(y, y_full[:, :size[0], :size[1]])
    if ref is not None:
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_module_soft_and_param_routing_train():
    m = BiLevelRoutingAttention(16, num_heads=2, n_win=2, topk=2, param_routing=True, diff_routing=True,
                                soft_routing=True)
    x = torch.randn(1, 4, 4, 16)
    a = m(x, backend="torch")
    b = m(x, backend="reference")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    a.sum().backward()
    assert m.router_proj.weight.grad is not None and m.router_proj.weight.grad.abs().sum() > 0


def test_explicit_triton_that_cannot_run_raises_and_auto_falls_back():
    """Soft routing has no kernel: 'triton' raises with the reason (the module used to swap to torch silently);
    the automatic choice falls back to torch (the chooser reads only the device type)."""
    from vzoo.layers._backend import ROUTING_BACKENDS, choose_backend
    m = BiLevelRoutingAttention(16, num_heads=2, n_win=2, topk=2, param_routing=True, diff_routing=True,
                                soft_routing=True)
    x = torch.randn(1, 4, 4, 16)
    with pytest.raises(ValueError, match=r"BiLevelRoutingAttention: backend='triton' cannot run here: .*soft routing"
                                         r".*Allowed: \('triton', 'torch', 'reference'\)"):
        m(x, backend="triton")
    torch.testing.assert_close(m(x, backend="auto"), m(x, backend="torch"), rtol=0, atol=0)
    cuda = torch.device("cuda")
    for requested in (None, "auto"):
        assert choose_backend("routed_attention", requested, ROUTING_BACKENDS, device=cuda, dtype=torch.float32,
                              soft_routing=True) == "torch"
        assert choose_backend("routed_attention", requested, ROUTING_BACKENDS, device=cuda, dtype=torch.float64,
                              soft_routing=False) == "torch"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        q, k, v = _qkv(1, 4, 4, 2, 4, 4)
        with pytest.raises(ValueError, match="routed_attention: backend='triton' cannot run here: .*CUDA tensors"):
            bi_level_routing_attention(q, k, v, 2, 2, 2, backend="triton")


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="kv_downsample_mode"):
        BiLevelRoutingAttention(16, kv_downsample_mode="ada_avgpool")
    with pytest.raises(ValueError, match="param_routing"):
        BiLevelRoutingAttention(16, param_routing=True)
    with pytest.raises(ValueError, match="diff_routing"):
        BiLevelRoutingAttention(16, diff_routing=True)
    with pytest.raises(ValueError, match="topk"):
        BiLevelRoutingAttention(16, n_win=2, topk=5)
    with pytest.raises(ValueError, match="backend"):
        BiLevelRoutingAttention(16, backend="cuda")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        BiLevelRoutingAttention(16, num_heads=3)
    with pytest.raises(ValueError, match="auto_pad"):
        BiLevelRoutingAttention(16, n_win=7)(torch.randn(1, 8, 8, 16))
    q, k, v = _qkv(1, 4, 4, 2, 4, 4)
    with pytest.raises(ValueError, match="n_win"):
        bi_level_routing_attention(q, k, v, 3, 2, 2)
    with pytest.raises(ValueError, match="NHWC"):
        bi_level_routing_attention(q[0], k[0], v[0], 2, 2, 2)
    with pytest.raises(ValueError, match="backend"):
        bi_level_routing_attention(q, k, v, 2, 2, 2, backend="fast")
    with pytest.raises(TypeError, match="r_idx"):
        routed_attention(q, k, v, torch.zeros(1, 4, 2), 2, 2)
    with pytest.raises(ValueError, match="r_idx"):
        routed_attention(q, k, v, torch.zeros(1, 3, 2, dtype=torch.long), 2, 2)
    with pytest.raises(ValueError, match="topk"):
        bi_level_routing_attention(q, k, v, 2, 5, 2)


def test_benchmark_suite_runs_and_its_official_gather_agrees():
    import argparse

    from vzoo.benchmarks import load_suite
    suite = load_suite("bra")
    p = argparse.ArgumentParser()
    suite.add_arguments(p)
    args = p.parse_args(["--cases", "tiny", "--device", "cpu", "--bwd", "--warmup", "0", "--iters", "1"])
    rows = suite.run(args)
    assert [r["backend"] for r in rows] == ["torch", "reference", "official"]
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in rows), rows
    q, k, v = _qkv(2, 12, 12, 2, 16, 16)
    torch.testing.assert_close(suite.official_bra(q, k, v, 3, 2, 2, 0.2),
                               bi_level_routing_attention(q, k, v, 3, 2, 2, 0.2, backend="reference"))


def test_torch_path_nan_stays_in_the_regions_that_route_to_it():
    """A NaN key or value reaches exactly the tokens whose region routes to the region holding it (natten's
    rule for neighbourhoods, here for routed regions); the rest equals the output with a finite key."""
    torch.manual_seed(0)
    q, k, v = _qkv(1, 8, 8, 2, 8, 8)
    r_idx = torch.tensor([[[0, 1], [1, 3], [2, 3], [3, 2]]])  # regions 0 and 1 route to region 1
    clean = routed_attention(q, k, v, r_idx=r_idx, n_win=2, num_heads=2, backend="torch")
    for which in ("key", "value"):
        bad = (k if which == "key" else v).clone()
        bad[0, 1, 5] = float("nan")  # region 1 (rows 0-3, columns 4-7)
        args = (q, bad, v) if which == "key" else (q, k, bad)
        out = routed_attention(*args, r_idx=r_idx, n_win=2, num_heads=2, backend="torch")
        hit = out.isnan().any(-1)[0]
        assert hit[:4].all() and not hit[4:].any()  # the top regions 0 and 1: 32 tokens
        torch.testing.assert_close(out[0, 4:], clean[0, 4:])


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_empty_batch_gives_an_empty_result(backend):
    q, k, v = (t.requires_grad_() for t in _qkv(0, 8, 8, 2, 8, 4))
    out = bi_level_routing_attention(q, k, v, n_win=2, topk=2, num_heads=2, backend=backend)
    assert out.shape == v.shape
    out.sum().backward()
    assert q.grad.shape == q.shape and v.grad.shape == v.shape
    m = BiLevelRoutingAttention(16, num_heads=2, n_win=2, topk=2, backend=backend)
    assert m(torch.randn(0, 8, 8, 16)).shape == (0, 8, 8, 16)
