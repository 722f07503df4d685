"""Every detection and segmentation config of the repository, with its backbone shrunk to the
smallest variant of its family: built, one train step and one predict on the CPU at two non-square
sizes. Also checks that the channels a config declares are the ones its backbone produces."""
import copy
from pathlib import Path

import pytest
import timm
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
from mmengine.config import Config  # noqa: E402
from mmengine.optim import OptimWrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from zoo import smallest_variant  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the demo configs (3 classes, embedded data) are trained end to end by test_toolchain.py instead
CONFIGS = sorted(p for task in ("detection", "segmentation") for p in (ROOT / "configs" / task).glob("*.py")
                 if not p.name.startswith("demo_"))
SIZES = [(160, 224), (256, 192)]


def _channels(backbone: dict):
    kw = {k: v for k, v in backbone.items()
          if k not in ("type", "model", "out_indices", "frozen_stages", "norm_eval", "init_cfg", "pad_to",
                       "pretrained")}
    with torch.device("meta"):
        m = timm.create_model(backbone["model"], features_only=True, out_indices=tuple(backbone["out_indices"]), **kw)
    return m.feature_info.channels()


def _declared(model: dict):
    """Where a config states its backbone's channels: (dict, key, value-from-channels)."""
    out = []
    neck = model.get("neck")
    if neck is not None and "in_channels" in neck:
        out.append((neck, "in_channels", lambda ch: list(ch)))
    if neck is None:  # UPerNet-style: heads read the backbone directly
        out.append((model["decode_head"], "in_channels", lambda ch: list(ch)))
        aux = model.get("auxiliary_head")
        if aux is not None:
            out.append((aux, "in_channels", lambda ch, i=aux["in_index"]: ch[i]))
    return out


def _det_batch(size):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, *size)] * 2, num_items=[3, 2], num_classes=80,
                          with_mask=True)


def _seg_batch(size):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, *size), dtype=torch.uint8))
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, *size)))
        s.set_metainfo(dict(img_shape=size, ori_shape=size, pad_shape=size))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def test_there_are_dense_configs():
    assert len(CONFIGS) >= 10


def test_backbones_load_published_weights_by_model_name():
    """A backbone with published ImageNet weights loads them by its name (pretrained=True: downloaded and
    cached by vzoo.hub, or timm's own); the others name what makes their file, never a checkpoints/ path."""
    from vzoo.checkpoint_index import load_index
    index = load_index()
    for path in CONFIGS:
        bb = Config.fromfile(str(path)).model.backbone
        entry = index.get(bb.model, {})
        published = bool(entry.get("source")) and entry.get("downloadable", True)
        if published:
            assert bb.get("pretrained") is True and not bb.get("init_cfg"), f"{path.name}: expected pretrained=True"
        else:
            assert not bb.get("pretrained") and "checkpoints/" not in str(bb.get("init_cfg")), path.name


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_and_predicts(path):
    cfg = Config.fromfile(str(path))
    assert "vzoo.mm" in cfg.custom_imports["imports"]
    model_cfg = copy.deepcopy(cfg.model)
    bb = model_cfg.backbone
    assert bb.type == "VZooBackbone"
    declared = _declared(model_cfg)
    channels = _channels(bb)
    for d, key, expect in declared:
        assert d[key] == expect(channels), f"{path.name}: {key}={d[key]} but {bb.model} gives {expect(channels)}"

    # shrink to the smallest variant of the family, no pretrained file
    bb.model = smallest_variant(bb.model)
    bb.init_cfg = None
    bb.pop("pretrained", None)
    channels = _channels(bb)
    for d, key, expect in declared:
        d[key] = expect(channels)
    for head in ("decode_head", "auxiliary_head"):  # narrower seg heads: the same code, a fraction of the time
        if model_cfg.get(head) is not None and "channels" in model_cfg[head]:
            model_cfg[head].channels = 32

    import vzoo.mm  # noqa: F401
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == "mmdet":
        from mmdet.registry import MODELS
        batch = _det_batch
    else:
        from mmseg.registry import MODELS
        batch = _seg_batch
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    for size in SIZES:
        if cfg.default_scope == "mmseg":
            model.data_preprocessor.size = size
        model.train()
        losses = model.train_step(batch(size), optim)
        total = sum(v for k, v in losses.items() if "loss" in k)
        assert torch.isfinite(total), (size, losses)
        model.eval()
        with torch.no_grad():
            preds = model.test_step(batch(size))
        assert len(preds) == 2
        if cfg.default_scope == "mmseg":
            assert tuple(preds[0].pred_sem_seg.data.shape[-2:]) == size
        else:
            assert "bboxes" in preds[0].pred_instances
