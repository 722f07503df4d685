"""Sparsifiner (``vzoo.models.sparsifiner``) on tiny ViTs: DeiT / release checkpoints, the sparse op against the
release's masked dense computation, token pruning, the training phases, and the two-phase training on the
digits through ``tools/train.py`` (the model contract is ``tests/test_model_contract.py``'s)."""
import argparse
import json
import sys
from pathlib import Path

import pytest
import timm
import torch

import vzoo  # noqa: F401
from vzoo.models import CheckpointError
from vzoo.models.sparsifiner import release_token_keep_rates
from vzoo.tasks.classification.sparsifiner import phase_lr, teacher_outputs

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)  # 1000 classes, as the cfg's


def _sparsifiner(**kwargs):
    return timm.create_model("sparsifiner_deit_small_patch16_224", **{**TINY, **kwargs}).eval()


def _vit():
    return timm.create_model("vit_tiny_patch16_224", **TINY).eval()


def test_deit_weights_load_with_a_fresh_predictor(tmp_path):
    """A DeiT checkpoint ('model' container) loads; at keep rate 1 every key is chosen: the DeiT's outputs."""
    vit = _vit()
    path = tmp_path / "deit.pth"
    torch.save({"model": vit.state_dict()}, path)
    m = _sparsifiner(attn_keep_rate=1.0, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), vit(x), rtol=1e-5, atol=1e-5)
    assert any(".mask_predictor." in k for k in m.state_dict())


def test_release_checkpoint_round_trip(tmp_path):
    """The release's main.py container (with its argparse args) loads and gives the same outputs."""
    torch.manual_seed(1)
    m = _sparsifiner(token_pruning_loc=(1,), token_keep_rate_base=0.5)
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"model": m.state_dict(), "epoch": 3, "args": argparse.Namespace(model="sparsifiner"), "best": 1.0},
               path)
    torch.manual_seed(2)
    loaded = _sparsifiner(token_pruning_loc=(1,), token_keep_rate_base=0.5, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    sd = {k: v for k, v in m.state_dict().items() if k != "blocks.1.attn.mask_predictor.proj_n"}
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="blocks.1.attn.mask_predictor.proj_n"):  # a partial predictor
        _sparsifiner(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize("pruning", [(), (0, 1)])
def test_sparse_op_matches_the_masked_dense_computation(pruning):
    torch.manual_seed(0)
    m = _sparsifiner(token_pruning_loc=pruning, token_keep_rate_base=0.6)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        sparse = m.forward_aux(x)
        m.masked_dense = True
        dense = m.forward_aux(x)
    torch.testing.assert_close(sparse["logits"], dense["logits"], rtol=1e-5, atol=1e-5)
    if pruning:  # keep rates [1, 0.6] for 2 blocks: block 1 keeps ceil(0.6 * 16) = 10 image tokens
        mask = sparse["token_masks"][-1]
        assert mask.sum(-1).tolist() == [10, 10] and torch.equal(mask, dense["token_masks"][-1])


def test_token_pruning_zeroes_tokens_and_refuses_feature_maps():
    m = _sparsifiner(token_pruning_loc=(1,), token_keep_rate_base=0.5)
    with torch.no_grad():
        out = m.forward_aux(torch.randn(2, 3, 32, 32))
    mask = out["token_masks"][1]
    assert out["token_masks"][0] is None and mask.sum(-1).tolist() == [8, 8]  # ceil(0.5 * 16) kept at block 1
    assert out["tokens"][~mask].abs().max() == 0 and out["tokens"][mask].abs().min() > 0  # pruned tokens zeroed
    with pytest.raises(RuntimeError, match="features_only"):
        m.forward_intermediates(torch.randn(1, 3, 32, 32))
    with pytest.raises(RuntimeError, match="features_only"):
        timm.create_model("sparsifiner_deit_small_patch16_224", features_only=True, token_pruning_loc=(3,),
                          token_keep_rate_base=0.7)


# 65 tokens: 10 basis tokens, so the predictor's top-8 of the basis coefficients runs too
GRAPH = dict(img_size=64, patch_size=8)
GRAPH_VARIANTS = {"top-k": {}, "pruned": dict(token_pruning_loc=(1,), token_keep_rate_base=0.5),
                  "threshold, pruned rows": dict(attn_score_topk=False, prune_attn_matrix_row=True,
                                                 token_pruning_loc=(1,), token_keep_rate_base=0.5)}


@pytest.mark.parametrize("variant", list(GRAPH_VARIANTS))
def test_torchscript_matches_eager(variant):
    """TorchScript compiles the masked dense computation (the sparse op's front is Python) and torch.topk:
    eager's outputs, token pruning and the threshold rule included."""
    torch.manual_seed(0)
    with timm.set_scriptable(True):
        m = _sparsifiner(**GRAPH, **GRAPH_VARIANTS[variant])
    scripted = torch.jit.script(m)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), m(x), rtol=1e-5, atol=1e-5)


def test_exported_graphs_choose_keys_from_their_input(tmp_path):
    """ONNX (onnxruntime) and torch.export record the key choice (TopK), not the traced input's keys as
    constants: both give eager's outputs on another input too."""
    import onnx
    import onnxruntime as ort
    sys.path.insert(0, str(ROOT / "tools"))
    import export  # tools/export.py

    torch.manual_seed(0)
    m = _sparsifiner(**GRAPH)
    traced_x, other_x = torch.randn(2, 1, 3, 64, 64)
    path = export.export_onnx(m, traced_x, str(tmp_path / "sparsifiner.onnx"))
    assert "TopK" in {n.op_type for n in onnx.load(path).graph.node}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        program = torch.export.export(m, (traced_x,)).module()
        for x in (traced_x, other_x):
            ref = m(x)
            out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            assert (out - ref).abs().max() / ref.abs().max() < 1e-4
            torch.testing.assert_close(program(x), ref, rtol=1e-5, atol=1e-5)


def test_topk_indices_chooses_what_torch_topk_chooses():
    """The CPU fast path (numpy argpartition) gives torch.topk's sets, ties and NaN rows included."""
    from vzoo.layers.connectivity import topk_indices

    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 33)
    x[0, 0, :5] = 1 / 32  # tied rows (near-uniform softmax coefficients tie in float32)
    x[0, 1, 0, :20] = float("-inf")  # ties at -inf below the k-th value, and at it
    x[0, 1, 1, :30] = float("-inf")
    x[1, 2, 3, 7] = float("nan")
    for k in (1, 8, 29, 33):
        fast = topk_indices(x, k).sort(dim=-1).values
        ref = torch.topk(x, k, sorted=False)[1].sort(dim=-1).values
        assert fast.shape == ref.shape and torch.equal(fast, ref), k


def test_keep_rates_and_budget():
    assert release_token_keep_rates(0.7, 12) == pytest.approx([1] * 3 + [0.7] * 3 + [0.49] * 3 + [0.343] * 3)
    m = _sparsifiner(attn_keep_rate=0.25)
    assert m.blocks[0].attn.mask_predictor.attn_budget == 5  # ceil(0.25 * 17)
    with pytest.raises(ValueError, match="attn_keep_rate"):
        _sparsifiner(attn_keep_rate=[0.5, 0.5, 0.5])


def test_phases_choose_what_trains():
    m = _sparsifiner()
    trainable = lambda: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert trainable() and all(".mask_predictor." not in n for n in trainable())
    m.phase = "attn_recon"
    m.train()
    assert trainable() == {n for n, _ in m.named_parameters() if ".mask_predictor." in n}
    out = m.forward_aux(torch.randn(2, 3, 32, 32))
    sum(a.sum() for a in out["approx_attn"]).backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="phase"):
        m.phase = "joint"


def test_phase_lr_is_the_release_cosine_scheduler():
    # utils.cosine_scheduler(3e-4, 2e-4, epochs=5, niter_per_ep=4, warmup_epochs=3)
    lrs = [phase_lr(i, 4, 5, 3e-4, 2e-4, 3) for i in range(20)]
    assert lrs[0] == 0 and lrs[11] == pytest.approx(3e-4) and lrs[12] == pytest.approx(3e-4)
    assert lrs[-1] == pytest.approx(2e-4 + 0.5e-4 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()))


def test_teacher_attention_is_the_dense_softmax():
    vit = _vit()
    x = torch.randn(2, 3, 32, 32)
    logits, tokens, attn = teacher_outputs(vit, x)
    torch.testing.assert_close(logits, vit(x))
    assert len(attn) == 2 and attn[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(2, 2, 17))


# ---------------------------------------------------------------------------------------------------
# the two phases through tools/train.py on the digits
# ---------------------------------------------------------------------------------------------------
_PIPE = """[dict(type='LoadPILImage'),
    dict(type='TimmTransform', input_size=16, is_training={train}, crop_pct=1.0, scale=(0.8, 1.0), hflip=0.0,
         color_jitter=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    dict(type='PackClsInputs')]"""
VIT = dict(img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=3)


def _config(tmp_path, name, data_root, model, epochs, extra=""):
    text = f"""
_base_ = [{str(ROOT / 'configs/classification/demo_digits.py')!r}]
data_root = {data_root!r}
model = {model!r}
train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root, pipeline={_PIPE.format(train=True)}))
val_dataloader = dict(batch_size=64, dataset=dict(data_root=data_root, pipeline={_PIPE.format(train=False)}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={epochs}, max_keep_ckpts=1))
{extra}
"""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _scalars(work_dir):
    lines = next(Path(work_dir).glob("*/vis_data/scalars.json")).read_text().splitlines()
    return [json.loads(s) for s in lines]


def test_two_phase_training_on_digits(tmp_path):
    sys.path.insert(0, str(ROOT))
    from tools import train as train_tool
    from vzoo.tasks import demo_data
    from vzoo.tasks.engine import load_runner_checkpoint

    data = demo_data.make_digits(str(tmp_path / "digits"), size=16, limit=50)
    # 1. the dense teacher
    teacher_cfg = _config(tmp_path, "teacher.py", data, dict(
        type="TimmClassifier", arch="vit_tiny_patch16_224", num_classes=10, arch_kwargs=VIT), epochs=20,
        extra="""optim_wrapper = dict(optimizer=dict(lr=3e-3, weight_decay=0.01))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', T_max=18, eta_min=1e-5, by_epoch=True, begin=2, end=20,
                        convert_to_iter_based=True)]""")
    train_tool.main([teacher_cfg, "--work-dir", str(tmp_path / "teacher")])
    sd = load_runner_checkpoint(str(tmp_path / "teacher/epoch_20.pth"))["state_dict"]
    weights = tmp_path / "teacher.pth"
    torch.save({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}, weights)
    teacher_acc = [s for s in _scalars(tmp_path / "teacher") if "accuracy/top1" in s][-1]["accuracy/top1"]
    # 2. Sparsifiner from the teacher's weights (keep rate 0.5: 9 of 17 keys), 2 epochs attn_recon, 2 cls_distill
    student_cfg = _config(tmp_path, "student.py", data, dict(
        type="SparsifinerClassifier", arch="sparsifiner_deit_small_patch16_224", num_classes=10,
        arch_kwargs=dict(VIT, attn_keep_rate=0.5), pretrained=str(weights),
        teacher=dict(arch="vit_tiny_patch16_224", arch_kwargs=VIT, pretrained=str(weights))), epochs=4,
        extra="""param_scheduler = None
custom_hooks = [dict(type='SparsifinerPhaseHook', phases=[
    dict(name='attn_recon', epochs=2, warmup_epochs=0, base_lr=3e-2, final_lr=1e-2),
    dict(name='cls_distill', epochs=2, warmup_epochs=0, base_lr=3e-4, final_lr=1e-5)])]""")
    train_tool.main([student_cfg, "--work-dir", str(tmp_path / "student")])
    logs = _scalars(tmp_path / "student")
    recon = [s["loss_attn_recon"] for s in logs if "loss_attn_recon" in s]
    assert len(recon) >= 10 and sum(recon[-3:]) < 0.7 * sum(recon[:3]), recon
    assert any("loss_cls_distill" in s for s in logs)
    acc = [s for s in logs if "accuracy/top1" in s][-1]["accuracy/top1"]
    assert acc >= teacher_acc - 0.05, (acc, teacher_acc)  # accuracy as a fraction: 5 points


def test_release_configs_parse_and_build_on_meta():
    from mmengine.config import Config

    from vzoo.tasks.registry import MODELS, build_in_vzoo_scope
    cfg = Config.fromfile(str(ROOT / "configs/classification/sparsifiner_deit_small_8xb168-50e_from-deit-s.py"))
    assert cfg.train_cfg.max_epochs == 50 and cfg.train_dataloader.batch_size == 168 and cfg.param_scheduler is None
    phases = next(h for h in cfg.custom_hooks if h.type == "SparsifinerPhaseHook").phases
    assert [(p.name, p.epochs, p.base_lr, p.final_lr) for p in phases] == [
        ("attn_recon", 5, 3e-4, 2e-4), ("cls_distill", 45, 8e-5, 2e-6)]
    with torch.device("meta"):
        model = build_in_vzoo_scope(MODELS, cfg.model)
    assert model.model.blocks[0].attn.mask_predictor.attn_budget == 50  # ceil(0.25 * 197)
    assert type(model.teacher).__name__ == "VisionTransformer"


def test_benchmark_suite_runs():
    from vzoo.benchmarks import load_suite
    suite = load_suite("sparsifiner")
    p = argparse.ArgumentParser()
    suite.add_arguments(p)
    rows = suite.run(p.parse_args(["--tokens", "33", "--keep-rates", "0.25", "--img-size", "96", "--repeats", "1",
                                   "--iters", "1", "--warmup", "0"]))
    ops = [r for r in rows if r["part"] == "op"]
    assert {(r["case"], r["mode"]) for r in ops} == {(c, m) for c in ("sparse", "masked_dense", "sdpa")
                                                     for m in ("fwd", "fwd+bwd")}
    assert all(r["keys"] == 9 and r["ms"] > 0 for r in ops)
    assert len([r for r in rows if r["part"] == "model"]) == 3


def test_fx_feature_extraction():
    """timm's FX feature extraction: the blocks are leaves (their key choice depends on the data)."""
    from timm.models._features_fx import create_feature_extractor
    m = _sparsifiner()
    fx = create_feature_extractor(m, {"head": "out"})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fx(x)["out"], m(x))
