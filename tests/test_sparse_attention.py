"""Sparse attention over per-query key sets (``vzoo.layers.sparse_attention``): the torch path and the Triton
kernels against the release's masked dense computation, float64 gradcheck, token masks, argument checks.

The Triton kernels run on the CPU under ``TRITON_INTERPRET=1`` in a subprocess (the variable must be set
before triton builds the kernels), in float32 and float16, with and without a key mask.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vzoo.layers import indices_to_mask, masked_dense_attention, softmax_with_policy, sparse_attention

ROOT = Path(__file__).resolve().parents[1]


def _problem(B=2, H=2, Nq=9, Nk=11, K=4, D=8, DV=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, n, D, generator=g, dtype=dtype) for n in (Nq, Nk))
    v = torch.randn(B, H, Nk, DV, generator=g, dtype=dtype)
    idx = torch.rand(B, H, Nq, Nk, generator=g).topk(K, dim=-1).indices
    return q, k, v, idx


def _grads(out, ins, g):
    return torch.autograd.grad(out, ins, g)


@pytest.mark.parametrize("tile", [4, 64])
@pytest.mark.parametrize("masked", [False, True])
def test_torch_matches_reference(tile, masked):
    q, k, v, idx = _problem()
    key_mask = torch.rand(2, 11) > 0.3 if masked else None
    if masked:
        key_mask[0, :] = False  # batch 0: no live key at all -> zero rows, as the release's nan_to_num
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    out = sparse_attention(*ins, idx, key_mask=key_mask, backend="torch", tile=tile)
    ref = sparse_attention(*ins, idx, key_mask=key_mask, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    for a, b in zip(_grads(out, ins, g), _grads(ref, ins, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if masked:
        assert out[0].abs().max() == 0


def test_reference_is_the_release_masked_softmax():
    """masked_fill(-inf) -> softmax -> nan_to_num -> @ v, on the mask of the indices."""
    q, k, v, idx = _problem()
    mask = indices_to_mask(idx, 11)
    assert mask.sum(-1).eq(4).all()
    attn = (q @ k.transpose(-2, -1)) * 8 ** -0.5
    want = torch.nan_to_num(attn.masked_fill(~mask, float("-inf")).softmax(-1)) @ v
    torch.testing.assert_close(sparse_attention(q, k, v, idx, backend="reference"), want)


def test_softmax_with_policy():
    """The release's formula: (exp(a - max) * policy + eps / N) / (sum + eps)."""
    attn = torch.randn(2, 3, 5, 7)
    policy = (torch.rand(2, 3, 5, 7) > 0.5).float()
    e = (attn - attn.amax(-1, keepdim=True)).exp() * policy
    want = (e + 1e-6 / 7) / (e.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(softmax_with_policy(attn, policy), want)
    q, k, v, idx = _problem()
    out = masked_dense_attention(q, k, v, indices_to_mask(idx, 11), policy_eps=1e-6)
    torch.testing.assert_close(out, sparse_attention(q, k, v, idx, backend="reference"), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_float64(masked):
    q, k, v, idx = _problem(B=1, H=2, Nq=5, Nk=6, K=3, D=4, DV=3, dtype=torch.float64)
    key_mask = torch.tensor([[True, False, True, True, False, True]]) if masked else None
    ins = [t.requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(
        lambda a, b, c: sparse_attention(a, b, c, idx, key_mask=key_mask, backend="torch", tile=2), ins)


def test_argument_checks():
    q, k, v, idx = _problem()
    with pytest.raises(ValueError, match="cannot run here"):
        sparse_attention(q, k, v, idx, backend="triton")  # CPU tensors, no TRITON_INTERPRET
    with pytest.raises(ValueError, match="backend must be one of"):
        sparse_attention(q, k, v, idx, backend="dense")
    with pytest.raises(ValueError, match=r"lie in \[0, 11\)"):
        sparse_attention(q, k, v, idx + 8)
    with pytest.raises(ValueError, match="int32/int64"):
        sparse_attention(q, k, v, idx.float())
    with pytest.raises(ValueError, match="key_mask"):
        sparse_attention(q, k, v, idx, key_mask=torch.ones(2, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes do not fit"):
        sparse_attention(q, k[..., :4], v, idx)


_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from vzoo.layers import sparse_attention
    torch.manual_seed(0)
    res = []
    for B, H, Nq, Nk, K, D, DV, dt, masked in json.loads(sys.argv[1]):
        dt = getattr(torch, dt)
        q, k = (torch.randn(B, H, n, D) for n in (Nq, Nk))
        v = torch.randn(B, H, Nk, DV)
        idx = torch.rand(B, H, Nq, Nk).topk(K, -1).indices
        key_mask = torch.rand(B, Nk) > 0.4 if masked else None
        if masked:
            key_mask[0] = False
        ins = [t.to(dt).requires_grad_() for t in (q, k, v)]
        refs = [t.detach().double().requires_grad_() for t in ins]
        o = sparse_attention(*ins, idx, key_mask=key_mask, backend="triton")
        r = sparse_attention(*refs, idx, key_mask=key_mask, backend="reference")
        g = torch.randn_like(r)
        ga = torch.autograd.grad(o, ins, g.to(dt))
        gb = torch.autograd.grad(r, refs, g)
        res.append([(o.double() - r).abs().max().item()]
                   + [(a.double() - b).abs().max().item() for a, b in zip(ga, gb)])
    print(json.dumps(res))
""")


def test_triton_interpreted_matches_reference():
    cases = [(1, 2, 9, 13, 5, 8, 8, "float32", False), (2, 1, 7, 7, 3, 6, 10, "float32", True),
             (1, 2, 17, 20, 18, 16, 16, "float32", False), (1, 2, 8, 12, 4, 16, 16, "float16", True)]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(cases)], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    errs = json.loads(out.stdout.strip().splitlines()[-1])
    for case, e in zip(cases, errs):
        tol = 2e-5 if case[7] == "float32" else 1e-2
        assert max(e) < tol, (case, e)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_cuda_matches_reference():
    q, k, v, idx = (t.cuda() for t in _problem(B=2, H=3, Nq=197, Nk=197, K=50, D=64, DV=64))
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    o = sparse_attention(*ins, idx)
    r = sparse_attention(*ins, idx, backend="reference")
    torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(o)
    for a, b in zip(_grads(o, ins, g), _grads(r, ins, g)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
