"""EViT: the token-reorganization op against a brute-force reference, the model against a per-sample
reference built from its own weights, checkpoint loading (the release's container, plain DeiT weights),
half precision, torch.compile, the keep-rate warm-up, training through tools/train.py on the embedded
digits with a tiny ViT, and tools/visualize_tokens.py on the trained model.

Parity with the release's own code needs a checkout of ``youweiliang/evit``:
``python tools/parity.py evit --official-src DIR`` (figures in docs/benchmarks.md); set
``VZOO_EVIT_OFFICIAL_SRC=DIR`` to run it here too.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

import pytest
import timm
import torch

import vzoo  # noqa: F401
from vzoo.layers import TokenReorganization, kept_token_count, reorganize_tokens
from vzoo.models import CheckpointError
from vzoo.models.evit import EViT, EViTBlock, load_release_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# a tiny DeiT-shaped ViT: 32x32 input, 8x8 patches -> 16 image tokens, reorganized after blocks 1 and 2
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, drop_loc=(1, 2))


def _tiny_evit(**kwargs):
    return timm.create_model("evit_deit_small_patch16_224", **dict(TINY, **kwargs)).eval()


def _tiny_deit(**kwargs):
    tiny = {k: v for k, v in TINY.items() if k != "drop_loc"}
    return timm.create_model("deit_small_patch16_224", **dict(tiny, **kwargs)).eval()


# ------------------------------------------------------------------------------------------------ the op
def test_kept_token_count_rounds_up_like_the_release():
    assert kept_token_count(196, 0.7) == 138  # ceil(137.2)
    assert kept_token_count(139, 0.7) == 98 and kept_token_count(99, 0.7) == 70  # the next two drop locations
    assert kept_token_count(100, 0.55) == 56  # 0.55 * 100 == 55.00000000000001 in floats: the release keeps 56
    assert kept_token_count(196, 0.5) == 98 and kept_token_count(196, 1.0) == 196
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="keep_rate"):
            kept_token_count(196, bad)


def _brute_force(x, cls_attn, keep_rate, fuse, prefix):
    """One sample at a time, in float64, with Python sorting: the op's definition written out."""
    out, idxs = [], []
    for xb, ab in zip(x.double(), cls_attn.double()):
        n = ab.numel()
        k = math.ceil(keep_rate * n)
        order = sorted(range(n), key=lambda i: -ab[i].item())
        keep, drop = order[:k], order[k:]
        rows = [xb[i] for i in range(prefix)] + [xb[prefix + i] for i in keep]
        if fuse and drop:
            rows.append(sum(ab[i] * xb[prefix + i] for i in drop))
        out.append(torch.stack(rows))
        idxs.append(keep)
    return torch.stack(out), torch.tensor(idxs)


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("prefix,n,keep_rate", [(1, 196, 0.7), (1, 10, 0.7), (2, 37, 0.5), (1, 16, 0.25)])
def test_reorganize_tokens_matches_brute_force(fuse, prefix, n, keep_rate):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, prefix + n, 8, generator=g)
    cls_attn = torch.randn(3, n, generator=g).softmax(-1)
    out, idx = reorganize_tokens(x, cls_attn, keep_rate, fuse_token=fuse, num_prefix_tokens=prefix)
    ref, ref_idx = _brute_force(x, cls_attn, keep_rate, fuse, prefix)
    assert out.shape == (3, prefix + math.ceil(keep_rate * n) + int(fuse), 8) and idx.dtype == torch.long
    assert torch.equal(idx, ref_idx)  # the kept tokens, in descending attention
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    module = TokenReorganization(keep_rate=keep_rate, fuse_token=fuse, num_prefix_tokens=prefix)
    assert torch.equal(module(x, cls_attn)[0], out)


def test_reorganize_tokens_keeps_everything_when_nothing_rounds_away():
    x, a = torch.randn(2, 11, 4), torch.rand(2, 10)
    for keep_rate in (1.0, 0.95):  # ceil(0.95 * 10) == 10: no drop, and no fused token either
        out, idx = reorganize_tokens(x, a, keep_rate, fuse_token=True)
        assert out is x and torch.equal(idx, torch.arange(10).expand(2, 10))
    with pytest.raises(ValueError, match=r"cls_attn must be \(B, N\)"):
        reorganize_tokens(x, torch.rand(2, 11), 0.5)


def test_reorganize_tokens_gradients_reach_tokens_and_attention():
    x = torch.randn(2, 9, 3, dtype=torch.double, requires_grad=True)
    a = torch.rand(2, 8, dtype=torch.double, requires_grad=True)
    torch.autograd.gradcheck(lambda x, a: reorganize_tokens(x, a, 0.5, fuse_token=True)[0], (x, a))
    reorganize_tokens(x, a, 0.5, fuse_token=True)[0].sum().backward()
    assert (a.grad != 0).sum() == 2 * 4  # the dropped tokens' weights enter the fused token


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reorganize_tokens_half_precision(dtype):
    x, a = torch.randn(2, 50, 16).to(dtype), torch.randn(2, 49).softmax(-1)
    out, idx = reorganize_tokens(x, a, 0.7, fuse_token=True)
    ref, ref_idx = reorganize_tokens(x.float(), a, 0.7, fuse_token=True)
    assert out.dtype == dtype and torch.equal(idx, ref_idx)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------- the model
def _reference_forward(model, x):
    """EViT's forward written out from the model's weights: explicit softmax attention, then per sample the
    release's rule (class-token attention averaged over heads, top ceil(keep_rate*N), fusion by weight)."""
    t = model._pos_embed(model.patch_embed(x))
    P = model.num_prefix_tokens
    kept = {}
    for i, blk in enumerate(model.blocks):
        h = blk.norm1(t)
        B, L, C = h.shape
        q, k, v = blk.attn.qkv(h).reshape(B, L, 3, blk.attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = blk.attn.q_norm(q), blk.attn.k_norm(k)
        attn = (q @ k.transpose(-2, -1) * blk.attn.scale).softmax(-1)
        t = t + blk.ls1(blk.attn.proj((attn @ v).transpose(1, 2).reshape(B, L, C)))
        if i in model.drop_loc and math.ceil(model.keep_rate * (L - P)) < L - P:
            t, kept[i] = _brute_force(t, attn[:, :, 0, P:].mean(1), model.keep_rate, model.fuse_token, P)
            t = t.float()
        t = t + blk.ls2(blk.mlp(blk.norm2(t)))
    return model.forward_head(model.norm(t)), kept


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("keep_rate", [0.7, 0.5])
def test_model_matches_a_per_sample_reference(fuse, keep_rate):
    model = _tiny_evit(keep_rate=keep_rate, fuse_token=fuse)
    _check_against_reference(model, keep_rate, fuse)


def test_other_timm_vit_blocks_reorganize_too():
    """DeiT-III-style blocks (layer scale, q/k norm, register tokens, position embedding without the class
    token): the reorganization keeps every prefix token and ranks the image tokens only."""
    model = _tiny_evit(init_values=0.1, qk_norm=True, reg_tokens=2, no_embed_class=True)
    with torch.no_grad():
        for p in model.parameters():  # off timm's inits (layer scales, norms), so that each of them matters
            p.add_(0.05 * torch.randn_like(p))
    _check_against_reference(model, 0.7, True)


def _check_against_reference(model, keep_rate, fuse):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref, ref_kept = _reference_forward(model, x)
        out = model(x)
        feats, kept = model.forward_kept_indices(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.forward_head(feats), out)
    assert sorted(kept) == sorted(ref_kept) == [1, 2]
    for blk in kept:
        assert torch.equal(kept[blk], ref_kept[blk])
    n1 = math.ceil(keep_rate * 16)
    assert kept[1].shape == (3, n1) and kept[2].shape == (3, math.ceil(keep_rate * (n1 + fuse)))


def test_keep_rate_is_settable_and_validated():
    model = _tiny_evit()
    assert isinstance(model.blocks[1], EViTBlock) and type(model.blocks[0]).__name__ == "Block"
    x = torch.randn(1, 3, 32, 32)
    model.keep_rate = 0.25
    assert [b.reorganize.keep_rate for b in model.blocks if isinstance(b, EViTBlock)] == [0.25, 0.25]
    assert model.forward_kept_indices(x)[0].shape[1] == 1 + 2 + 1  # 16 -> 4 (+fused) -> 2 (+fused)
    with pytest.raises(ValueError, match="keep_rate"):
        model.keep_rate = 0.0
    with pytest.raises(ValueError, match="drop_loc"):
        _tiny_evit(drop_loc=(4,))
    with pytest.raises(ValueError, match="class token"):
        _tiny_evit(class_token=False, global_pool="avg")


def test_features_only_is_refused_with_a_reason():
    with pytest.raises(RuntimeError, match="features_only.*not offered"):
        timm.create_model("evit_deit_small_patch16_224", features_only=True)
    model = _tiny_evit()
    with pytest.raises(RuntimeError, match="forward_features"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32))
    model.keep_rate = 1.0  # a plain ViT: feature maps exist
    assert model.forward_intermediates(torch.randn(1, 3, 32, 32), intermediates_only=True)[0].shape == (1, 32, 4, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_model_runs_in_half_precision(dtype):
    model = _tiny_evit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_torch_compile_at_a_fixed_keep_rate():
    """Dynamo captures the whole model in one graph (aot_eager here: inductor's C++ build takes ~30 s on two
    cores; ``tools/benchmark.py evit --compile`` times inductor); a new keep rate is guarded and recompiled."""
    model = _tiny_evit()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
        model.keep_rate = 0.25
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    model.train()
    compiled(x).sum().backward()  # training step compiles too
    assert model.patch_embed.proj.weight.grad is not None


def test_torchscript():
    model = _tiny_evit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))


# ------------------------------------------------------------------------------------------- weights
def test_deit_weights_load_and_equal_deit_at_keep_rate_one(tmp_path):
    deit = _tiny_deit()
    path = tmp_path / "deit_small_tiny.pth"
    torch.save({"model": deit.state_dict()}, path)  # DeiT's release container
    evit = _tiny_evit(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), keep_rate=1.0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(evit(x), deit(x))  # the same timm blocks, the same operations
        evit.keep_rate = 0.5
        assert not torch.allclose(evit(x), deit(x))
    assert sum(p.numel() for p in evit.parameters()) == sum(p.numel() for p in deit.parameters())


def test_release_container_loads_its_model_entry(tmp_path):
    """main.py saves {'model', 'model_ema', 'optimizer', ..., 'args': Namespace}; its --eval loads 'model'."""
    ref = _tiny_evit()
    sd = ref.state_dict()
    path = tmp_path / "evit_release.pth"
    torch.save({"model": sd, "model_ema": {k: v + 1 for k, v in sd.items()}, "epoch": 299,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
                "lr_scheduler": {"t_initial": 300}, "scaler": {"scale": 65536.0},
                "args": argparse.Namespace(model="deit_small_patch16_shrink_base", base_keep_rate=0.7)}, path)
    assert all(torch.equal(v, sd[k]) for k, v in load_release_checkpoint(path).items())
    torch.manual_seed(7)
    loaded = _tiny_evit(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_release_checkpoint(corrupt)


def test_checkpoint_filter_fn_takes_old_linear_patch_embeddings(tmp_path):
    ref = _tiny_evit()
    sd = dict(ref.state_dict())
    sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].flatten(1)  # the release's pre-conv layout
    path = tmp_path / "old.pth"
    torch.save({"model": sd}, path)
    loaded = _tiny_evit(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))


@pytest.mark.skipif(not os.environ.get("VZOO_EVIT_OFFICIAL_SRC"),
                    reason="needs VZOO_EVIT_OFFICIAL_SRC (a checkout of youweiliang/evit)")
def test_parity_with_the_release():
    from vzoo.benchmarks import parity
    rows = parity.run("evit", os.environ["VZOO_EVIT_OFFICIAL_SRC"], variants=["evit_deit_small_patch16_224"], log=None)
    assert rows and all(r["status"] == "ok" for r in rows), rows


# --------------------------------------------------------------------------------- keep-rate warm-up
def test_warmup_keep_rate_follows_the_release_schedule():
    from vzoo.tasks.classification import warmup_keep_rate
    rate = lambda it: warmup_keep_rate(it, iters_per_epoch=10, base_keep_rate=0.7, shrink_start_epoch=2,  # noqa: E731
                                       shrink_epochs=4)
    assert [rate(i) for i in (0, 19)] == [1.0, 1.0]  # epochs 0-1: keep everything
    assert rate(20) == pytest.approx(1.0) and rate(40) == pytest.approx(0.85)  # cosine start, midpoint
    assert rate(50) == pytest.approx(0.7 + 0.3 * (math.cos(0.75 * math.pi) + 1) / 2)
    assert rate(60) == rate(1000) == 0.7
    rates = [rate(i) for i in range(70)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert warmup_keep_rate(0, 10, 0.5, shrink_start_epoch=0, shrink_epochs=0) == 0.5  # the release's fine-tuning


# ------------------------------------------------------------------------ training, configs, figures
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny EViT (16x16 digits, 4x4 patches, keep 0.5 with fusion after blocks 1 and 2) trained for 8 short
    epochs through tools/train.py: keep rate 1 in epoch 0, a cosine down to 0.5 in epochs 1-2, then 0.5."""
    pytest.importorskip("mmengine")
    sys.path.insert(0, str(ROOT))
    from tools import train as train_tool
    from vzoo.tasks import demo_data
    tmp = tmp_path_factory.mktemp("evit_train")
    data = demo_data.make_digits(str(tmp / "digits"), size=16, limit=30)
    cfg = tmp / "evit_digits.py"
    cfg.write_text(f"""
_base_ = [{str(ROOT / 'configs/classification/demo_digits.py')!r}]
data_root = {data!r}
model = dict(arch='evit_deit_small_patch16_224', label_smoothing=0.0, arch_kwargs=dict(
    img_size=16, patch_size=4, embed_dim=48, depth=4, num_heads=3, keep_rate=0.5, drop_loc=(1, 2)))
norm = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
train_dataloader = dict(batch_size=16, dataset=dict(data_root=data_root, pipeline=[
    dict(type='LoadPILImage'), dict(type='TimmTransform', input_size=16, crop_pct=1.0, **norm),
    dict(type='PackClsInputs')]))
val_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root, pipeline=[
    dict(type='LoadPILImage'), dict(type='TimmTransform', input_size=16, crop_pct=1.0, **norm),
    dict(type='PackClsInputs')]))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.0))
param_scheduler = []
train_cfg = dict(max_epochs=8, val_interval=8)
log_processor = dict(window_size=1)  # the log's loss is each iteration's own
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=8, max_keep_ckpts=1))
custom_hooks = [dict(type='KeepRateWarmupHook', shrink_start_epoch=1, shrink_epochs=2)]
""")
    wd = tmp / "wd"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and never oversubscribes a busy machine
    try:
        runner = train_tool.main([str(cfg), "--work-dir", str(wd)])
    finally:
        torch.set_num_threads(threads)
    scalars = next(wd.glob("*/vis_data/scalars.json"))
    logs = [json.loads(line) for line in scalars.read_text().splitlines()]
    return dict(cfg=str(cfg), ckpt=str(wd / "epoch_8.pth"), data=data, runner=runner,
                logs=[r for r in logs if "keep_rate" in r])


def test_training_through_tools_train_with_the_warmup(trained):
    logs = trained["logs"]
    n = 15  # 240 training digits / batch 16, every iteration logged
    assert len(logs) == 8 * n
    rates = [r["keep_rate"] for r in logs]
    assert rates[:n] == [1.0] * n  # epoch 0: keep everything
    assert rates[n] == pytest.approx(1.0) and rates[2 * n] == pytest.approx(0.75) and rates[3 * n - 1] < 0.51
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # epochs 1-2: cosine down to the target
    assert rates[3 * n:] == [0.5] * 5 * n  # then the target
    losses = [r["loss"] for r in logs]
    assert sum(losses[-n:]) < 0.9 * sum(losses[:n]), losses  # it learns
    net = trained["runner"].model.model
    assert isinstance(net, EViT) and net.keep_rate == 0.5


def test_visualize_tokens_on_the_trained_model(trained, tmp_path):
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from tools import visualize_tokens
    images = sorted(Path(trained["data"], "val").glob("[0-2]/*.png"))[:3]
    written = visualize_tokens.main([trained["cfg"], trained["ckpt"], *map(str, images),
                                     "--out", str(tmp_path / "vis")])
    assert len(written) == 3
    with Image.open(written[0]) as im:
        assert im.width >= 3 * 224 and im.height < 2 * 224  # input + one panel per reorganizing block (2)
    folder = visualize_tokens.main([trained["cfg"], trained["ckpt"], str(Path(trained["data"], "val", "7")),
                                    "--out", str(tmp_path / "vis7"), "--keep-rate", "0.25"])
    assert len(folder) == len(list(Path(trained["data"], "val", "7").glob("*.png")))


def test_patch_states_follow_tokens_through_fusion():
    sys.path.insert(0, str(ROOT))
    from tools.visualize_tokens import patch_states
    # 6 patches; block 1 keeps patches 4, 0, 2 (+ the fused token at position 3); block 2 keeps the fused
    # token and patch 2 (positions 3 and 2 of its input)
    states = patch_states({1: torch.tensor([[4, 0, 2]]), 2: torch.tensor([[3, 2]])}, 6, fuse_token=True)
    assert states[1][0].tolist() == [True, False, True, False, True, False]
    assert states[2][0].tolist() == [False, False, True, False, False, False]


def test_release_configs_parse_and_build_on_meta():
    pytest.importorskip("mmengine")
    from mmengine.config import Config

    from vzoo.tasks.registry import MODELS, build_in_vzoo_scope
    for name, epochs, start, shrink in (("evit_deit_small_0.7_8xb256-300e_in1k.py", 300, 10, 100),
                                        ("evit_deit_small_0.7_8xb256-ft30e_from-deit-s.py", 30, 0, 0)):
        cfg = Config.fromfile(str(ROOT / "configs/classification" / name))
        assert cfg.train_cfg.max_epochs == epochs and cfg.train_dataloader.batch_size == 256
        warmup = next(h for h in cfg.custom_hooks if h.type == "KeepRateWarmupHook")
        assert (warmup.shrink_start_epoch, warmup.shrink_epochs) == (start, shrink)
        assert any(h.type == "EMAHook" for h in cfg.custom_hooks) and cfg.model.mixup.label_smoothing == 0.1
        with torch.device("meta"):
            model = build_in_vzoo_scope(MODELS, cfg.model)
        assert model.model.keep_rate == 0.7 and model.model.fuse_token and model.model.drop_loc == (3, 6, 9)


def test_benchmark_suite_runs():
    from vzoo.benchmarks import load_suite
    suite = load_suite("evit")
    p = argparse.ArgumentParser()
    suite.add_arguments(p)
    rows = suite.run(p.parse_args(["--model", "evit_deit_tiny_patch16_224", "--baseline", "deit_tiny_patch16_224",
                                   "--batch-size", "1", "--keep-rates", "0.5", "--repeats", "1",
                                   "--iters", "1", "--warmup", "0"]))
    assert [r["keep_rate"] for r in rows] == [None, 0.5]
    assert all(r["img_s"] > 0 for r in rows) and rows[0]["speedup"] == 1.0
