"""LV-ViT (TokenLabeling release layout) and Sparsifiner on LV-ViT: checkpoints, head, starting point."""
import pytest
import timm
import torch
from timm.models import create_feature_extractor

import vzoo  # noqa: F401  (registers the models)
from vzoo.models.lvvit import LvViT

SMALL = dict(depth=2)  # the release's LV-ViT-S with 2 blocks: fast, same key layout

# The TokenLabeling release's keys (tlt/models/lvvit.py, lvvit_s): stem, one block, head and token-labeling head.
RELEASE_KEYS = {
    "cls_token", "pos_embed", "norm.weight", "norm.bias", "head.weight", "head.bias", "aux_head.weight",
    "aux_head.bias", "patch_embed.proj.weight", "patch_embed.proj.bias",
    *(f"patch_embed.conv{i}.weight" for i in (1, 2, 3)),
    *(f"patch_embed.bn{i}.{n}" for i in (1, 2, 3)
      for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
    *(f"blocks.{b}.{n}" for b in range(2) for n in (
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
        "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")),
}


def _randomized(model):
    """Every weight and BatchNorm statistic off its init, so that each one changes the output."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(t + 0.02 * torch.randn(t.shape, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


def _image(batch=2):
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def test_keys_are_the_releases():
    model = timm.create_model("lvvit_s", **SMALL)
    assert isinstance(model, LvViT)
    assert set(model.state_dict()) == RELEASE_KEYS


@pytest.mark.parametrize("container", ["bare", "state_dict", "model"])
def test_release_checkpoint_round_trip(tmp_path, container):
    """A state dict in the release's layout (bare, as its released files; timm train.py's ``state_dict``;
    a DeiT-style ``model``) loads through timm's pretrained path and gives the same outputs."""
    src = _randomized(timm.create_model("lvvit_s", **SMALL))
    release_sd = dict(src.state_dict())  # the inverse mapping is the identity: our keys are the release's
    obj = release_sd if container == "bare" else {container: release_sd, "epoch": 3}
    path = tmp_path / "lvvit_s.pth.tar"
    torch.save(obj, path)
    model = timm.create_model("lvvit_s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), src(x), rtol=0, atol=0)


def test_prediction_adds_the_token_labeling_head():
    """The release's evaluation output: ``head(cls) + 0.5 * max_tokens aux_head(tokens)``."""
    model = _randomized(timm.create_model("lvvit_s", **SMALL))
    x = _image()
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = model.head(tokens[:, 0]) + 0.5 * model.aux_head(tokens[:, 1:]).max(dim=1)[0]
        torch.testing.assert_close(model(x), expected)
        assert model.forward_head(tokens, pre_logits=True).shape == (2, 384)
    model.reset_classifier(10)
    assert model.aux_head.out_features == 10 and model(x).shape == (2, 10)
    model.reset_classifier(0)
    assert model(x).shape == (2, 384)


def test_lvvit_checkpoint_starts_sparsifiner(tmp_path):
    """An LV-ViT checkpoint is Sparsifiner-LV-ViT's starting point: its weights load, the predictors are fresh,
    and with every key kept the model computes LV-ViT."""
    src = _randomized(timm.create_model("lvvit_s", **SMALL))
    path = tmp_path / "lvvit_s.pth.tar"
    torch.save(src.state_dict(), path)
    model = timm.create_model("sparsifiner_lvvit_s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              attn_keep_rate=1.0, **SMALL).eval()
    sd = model.state_dict()
    assert {k for k in sd if ".mask_predictor." not in k} == set(src.state_dict())
    assert any(".mask_predictor." in k for k in sd)
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=1e-5, atol=1e-5)
    default = timm.create_model("sparsifiner_lvvit_s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                **SMALL).eval()
    assert default.blocks[0].attn.mask_predictor.attn_budget == 50  # ceil(0.25 * 197), the release's default


def test_lvvit_scripts_and_traces():
    model = timm.create_model("lvvit_s", **SMALL).eval()
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))
        out = create_feature_extractor(model, {"norm": "tokens"})(x)["tokens"]
    assert out.shape == (2, 197, 384)


def test_sparsifiner_lvvit_contract():
    """What the model contract checks of each family's smallest model, for the LV-ViT variant of Sparsifiner."""
    model = timm.create_model("sparsifiner_lvvit_s", **SMALL)
    x = _image()
    model(x).pow(2).mean().backward()
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    feats = timm.create_model("sparsifiner_lvvit_s", features_only=True, out_indices=(0, 1), **SMALL)(x)
    assert [f.shape for f in feats] == [(2, 384, 14, 14)] * 2
    meta = timm.create_model("sparsifiner_lvvit_s", device="meta", dtype=torch.bfloat16, **SMALL)
    assert all(t.device.type == "meta" and t.dtype == torch.bfloat16 for t in meta.parameters())
