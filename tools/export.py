"""Export a vzoo (or any timm) model to ONNX or to a ``torch.export`` program.

    python tools/export.py van_b0 --format onnx --img-size 224 --out van_b0.onnx
    python tools/export.py biformer_tiny --format torch-export --img-size 224 --out biformer_tiny.pt2
    python tools/export.py hat_s_x2 --format onnx --img-size 64 --pretrained-file hat_s_x2.pth

ONNX goes through the TorchScript-tracing exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17:
the trace runs the model's eager Python, so the op fronts (neighborhood attention, routing attention) take
their torch path on the CPU and land in the graph as standard ONNX ops (MatMul, Softmax, Gather, ...);
Sparsifiner's attention, whose key sets depend on the data, is recorded as its release's masked dense form
(TopK, ScatterElements, Softmax, MatMul; :func:`vzoo.layers.capturing_graph`). The graph is fixed to the
traced input size (``--img-size``); window and padding arithmetic is resolved at that size.
``torch-export`` writes ``torch.export.save`` of ``torch.export.export(model, (x,))`` at that size.
"""
import argparse
import os
import sys
from typing import Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timm  # noqa: E402

import vzoo  # noqa: E402,F401  (registers the models)

FORMATS = ("onnx", "torch-export")
EXPORTERS = ("auto", "legacy", "dynamo")
OPSET = 17
# families whose ops the TorchScript-tracing exporter cannot express (HAT's Tensor.unfold after a pad, OverLoCK's
# cached index tables): 'auto' exports them with the dynamo exporter (torch.export, then onnxscript)
DYNAMO_FAMILIES = ("hat", "overlock")


def _img_size(values: Sequence[int]) -> Tuple[int, int]:
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise ValueError(f"--img-size takes one or two positive ints (H [W]), got {list(values)}")
    return (values[0], values[-1])


def create(name: str, pretrained_file: str = "") -> torch.nn.Module:
    """The model in eval mode, with ``pretrained_file``'s weights if given."""
    kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file)) if pretrained_file else {}
    return timm.create_model(name, **kwargs).eval()


def onnx_exporter(name: str) -> str:
    """The exporter 'auto' picks for model ``name``: 'dynamo' for :data:`DYNAMO_FAMILIES`, else 'legacy'."""
    from timm.models import model_entrypoint
    return "dynamo" if model_entrypoint(name).__module__.rsplit(".", 1)[-1] in DYNAMO_FAMILIES else "legacy"


def export_onnx(model: torch.nn.Module, x: torch.Tensor, path: str, opset: int = OPSET,
                exporter: str = "legacy") -> str:
    """Write ``model`` traced at ``x``'s shape to ``path`` (ONNX, ``opset``); returns ``path``.

    ``exporter='legacy'`` (``dynamo=False``, the TorchScript tracer) traces the eager forward: the op fronts'
    checks and backend choice run as Python and only the torch compute is recorded; it is fast. ``'dynamo'``
    (``torch.export`` then onnxscript) covers ops the tracer cannot express, at several times the export time."""
    if exporter not in EXPORTERS[1:]:
        raise ValueError(f"exporter must be one of {EXPORTERS[1:]}, got {exporter!r}")
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["output"], opset_version=opset,
                          dynamo=exporter == "dynamo")
    return path


def export_program(model: torch.nn.Module, x: torch.Tensor, path: str) -> str:
    """Write ``torch.export.export(model, (x,))`` to ``path`` (``torch.export.save``); returns ``path``."""
    with torch.no_grad():
        program = torch.export.export(model, (x,))
    torch.export.save(program, path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a timm model name, e.g. van_b0")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224], help="H [W] of the traced input")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--pretrained-file", default="", help="weights to load (else random initialisation)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="auto",
                        help="ONNX exporter: 'legacy' (TorchScript tracer), 'dynamo', or 'auto' (per family)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (>= 17, default {OPSET})")
    parser.add_argument("--out", default="", help="output file (default MODEL.onnx / MODEL.pt2)")
    args = parser.parse_args(argv)
    try:
        h, w = _img_size(args.img_size)
        if args.opset < 17:
            raise ValueError(f"--opset must be >= 17, got {args.opset}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    except ValueError as e:
        parser.error(str(e))
    model = create(args.model, args.pretrained_file)
    in_chans = model.pretrained_cfg.get("input_size", (3,))[0]
    x = torch.randn(args.batch_size, in_chans, h, w)
    if args.format == "onnx":
        exporter = onnx_exporter(args.model) if args.exporter == "auto" else args.exporter
        path = export_onnx(model, x, args.out or f"{args.model}.onnx", opset=args.opset, exporter=exporter)
    else:
        path = export_program(model, x, args.out or f"{args.model}.pt2")
    print(f"{args.model}: wrote {path} ({args.format}, input {tuple(x.shape)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
