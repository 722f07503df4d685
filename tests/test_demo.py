"""``make demo``'s page: a tiny run of every task (``tools/demo.py --smoke``: tiny data, a few
iterations, the tools' own ``main`` in-process) writes ``index.html`` with, per task, the gallery that
``tools/test.py --show-dir`` draws and the training curves; every picture exists and is not blank."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import demo  # noqa: E402


def test_smoke_demo_renders_the_page(tmp_path):
    wd = tmp_path / "demo"
    demo.main(["--smoke", "--in-process", "--data-root", str(tmp_path / "data"), "--work-dir", str(wd)])
    rows = json.loads((wd / "results.json").read_text())
    assert [r["task"] for r in rows] == list(demo.TASKS)
    assert not [r for r in rows if r.get("error")], rows
    page = (wd / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    for task in demo.TASKS:
        assert f"{task}/curves.png" in srcs, task
        assert any(s.startswith(f"{task}/show/") and s.endswith("/gallery.png") for s in srcs), (task, srcs)
    for src in srcs:
        assert not Path(src).is_absolute()
        img = np.asarray(Image.open(wd / src).convert("L"), dtype=np.float32)
        assert img.std() > 5.0, f"{src} is blank"
    for r in rows:
        assert f"<td>{r['task']}</td>" in page
