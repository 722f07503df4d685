"""vzoo.mm: VZooBackbone in mmdet's and mmseg's registries, for any timm-registered model."""
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
from mmengine.config import Config  # noqa: E402
from mmengine.optim import OptimWrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import vzoo.mm  # noqa: E402,F401
from vzoo.mm import VZooBackbone  # noqa: E402
from zoo import smallest_variant  # noqa: E402

# the families vzoo takes from timm as they are, at their smallest variant
TIMM_NATIVE = [smallest_variant(n) for n in ("davit_tiny", "gcvit_tiny", "poolformer_s12", "shvit_s1", "ecaresnet50d")]
SIZES = [(160, 224), (256, 192)]


def test_registered_in_both_registries():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    assert DET.get("VZooBackbone") is VZooBackbone and SEG.get("VZooBackbone") is VZooBackbone


@pytest.mark.parametrize("name", TIMM_NATIVE)
def test_timm_native_family_trains_in_retinanet(name):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    cfg = Config.fromfile("configs/detection/_base_/retinanet_vzoo_fpn_1x_coco.py")
    probe = VZooBackbone(name, out_indices=(-3, -2, -1))
    n = len(probe._stage_modules)
    cfg.model.backbone.update(model=name, out_indices=tuple(range(n - 3, n)))
    cfg.model.neck.in_channels = list(probe.channels)
    if probe.strides[0] != 8:
        s = probe.strides[0]
        cfg.model.bbox_head.anchor_generator.strides = [s * 2 ** i for i in range(5)]
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    model.train()
    for size in SIZES:
        data = demo_mm_inputs(batch_size=2, image_shapes=[(3, *size)] * 2, num_items=[2, 1], num_classes=80)
        losses = model.train_step(data, optim)
        assert torch.isfinite(sum(v for k, v in losses.items() if "loss" in k))


@pytest.mark.parametrize("size", [(160, 224), (96, 320), (224, 224)])
def test_gcvit_accepts_any_padded_size(size):
    bb = VZooBackbone("gcvit_xxtiny", out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, *size))
    assert [tuple(f.shape[-2:]) for f in feats] == [(size[0] // s, size[1] // s) for s in (4, 8, 16, 32)]
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]


def test_gcvit_fix_is_exact_at_construction_size():
    torch.manual_seed(0)
    ref = timm.create_model("gcvit_xxtiny", features_only=True).eval()
    bb = VZooBackbone("gcvit_xxtiny", out_indices=(0, 1, 2, 3)).eval()
    bb.body.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(bb(x), ref(x)):
            torch.testing.assert_close(a, b)


def test_pads_inputs_that_are_not_a_multiple_of_the_stride():
    bb = VZooBackbone("poolformer_s12", out_indices=(0, 3)).eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 100, 70))
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 18), (4, 3)]


def test_pretrained_init_cfg_loads_the_classifier_checkpoint(tmp_path):
    torch.manual_seed(1)
    cls = timm.create_model("poolformer_s12").eval()
    path = tmp_path / "p.safetensors"
    save_file({k: v.contiguous() for k, v in cls.state_dict().items()}, str(path))
    bb = VZooBackbone("poolformer_s12", out_indices=(1, 3), init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    bb.init_weights()
    bb.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = bb(x)
        want = cls.forward_intermediates(x, indices=(1, 3), intermediates_only=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # a detector checkpoint: the backbone's weights under "backbone."
    det = tmp_path / "det.pth"
    torch.save({"state_dict": {"backbone." + k: v for k, v in cls.state_dict().items()}}, det)
    bb2 = VZooBackbone("poolformer_s12", out_indices=(1, 3),
                       init_cfg=dict(type="Pretrained", checkpoint=str(det), prefix="backbone."))
    bb2.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(bb2.eval()(x)[1], want[1], rtol=0, atol=0)

    # a detector's own checkpoint: a VZooBackbone's weights (no classifier) under "backbone.body."
    det_sd = {"backbone.body." + k: v for k, v in bb.body.state_dict().items()}
    det2 = tmp_path / "det2.pth"
    torch.save(det_sd, det2)
    bb3 = VZooBackbone("poolformer_s12", out_indices=(1, 3),
                       init_cfg=dict(type="Pretrained", checkpoint=str(det2), prefix="backbone.body."))
    bb3.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(bb3.eval()(x)[1], want[1], rtol=0, atol=0)
    # ... and it is still checked strictly: a missing backbone weight is named
    missing = sorted(det_sd)[-1]
    torch.save({k: v for k, v in det_sd.items() if k != missing}, det2)
    bb4 = VZooBackbone("poolformer_s12", out_indices=(1, 3),
                       init_cfg=dict(type="Pretrained", checkpoint=str(det2), prefix="backbone.body."))
    with pytest.raises(Exception, match=re.escape(missing[len("backbone.body."):])):
        bb4.init_weights()


def test_pretrained_with_missing_keys_fails_naming_them(tmp_path):
    sd = timm.create_model("poolformer_s12").state_dict()
    del sd["stages.1.blocks.0.mlp.fc1.weight"]
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    bb = VZooBackbone("poolformer_s12", init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    with pytest.raises(RuntimeError, match=r"stages\.1\.blocks\.0\.mlp\.fc1\.weight"):
        bb.init_weights()


def test_frozen_stages_and_norm_eval():
    bb = VZooBackbone("ecaresnet26t", out_indices=(1, 2, 3, 4), frozen_stages=1, norm_eval=True)
    frozen = {n for n, p in bb.body.named_parameters() if not p.requires_grad}
    assert any(n.startswith("conv1.") for n in frozen) and any(n.startswith("layer1.") for n in frozen)
    assert not any(n.startswith("layer2.") for n in frozen)
    bb.train()
    assert not bb.body.bn1.training  # stem frozen → eval
    assert all(not m.training for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))
    feats = bb(torch.randn(2, 3, 64, 64))
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is None for n, p in bb.body.named_parameters() if n in frozen)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="model='no_such_net'"):
        VZooBackbone("no_such_net")
    with pytest.raises(ValueError, match="frozen_stages=7"):
        VZooBackbone("poolformer_s12", frozen_stages=7)
    with pytest.raises(ValueError, match="init_cfg type"):
        VZooBackbone("poolformer_s12", init_cfg=dict(type="Kaiming"))


def test_pretrained_by_model_name_or_url_uses_the_hub_cache(tmp_path, monkeypatch):
    """pretrained=True, init_cfg checkpoint=MODEL_NAME and checkpoint=URL fetch what timm.create_model(...,
    pretrained=True) fetches: here a converted file put by hand where vzoo.hub caches it (VZOO_OFFLINE is set
    for the tests, so nothing is downloaded), which init_weights loads into the features."""
    from vzoo.checkpoint_index import load_index
    from vzoo.hub import OfflineError, cached_path
    monkeypatch.setenv("VZOO_CACHE", str(tmp_path))
    torch.manual_seed(0)
    full = timm.create_model("van_b0").eval()
    url = "https://example.invalid/van_b0.pth"
    for source in (load_index()["van_b0"]["source"], url):
        dst = cached_path("van_b0", source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_file(full.state_dict(), str(dst))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=(1, 3), intermediates_only=True)
    for kwargs in (dict(pretrained=True), dict(init_cfg=dict(type="Pretrained", checkpoint="van_b0")),
                   dict(init_cfg=dict(type="Pretrained", checkpoint=url))):
        torch.manual_seed(1)
        bb = VZooBackbone("van_b0", out_indices=(1, 3), **kwargs)
        bb.init_weights()
        with torch.no_grad():
            for got, want in zip(bb.eval()(x), expected):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(OfflineError, match="example.invalid/other.pth"):
        VZooBackbone("van_b0", init_cfg=dict(type="Pretrained", checkpoint="https://example.invalid/other.pth")
                     ).init_weights()
    with pytest.raises(ValueError, match="names another model"):
        VZooBackbone("van_b0", init_cfg=dict(type="Pretrained", checkpoint="van_b1")).init_weights()
    with pytest.raises(ValueError, match="not both"):
        VZooBackbone("van_b0", pretrained=True, init_cfg=dict(type="Pretrained", checkpoint="van_b0"))
