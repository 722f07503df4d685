"""The package itself: what `import vzoo` does and does not do, and the install metadata."""
import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          cwd="/").stdout.strip()


def test_import_registers_models_without_mm_and_fast():
    out = _run(
        "import time, sys, torch, timm\n"
        "t = time.perf_counter(); import vzoo; dt = time.perf_counter() - t\n"
        "print(dt, any(m.split('.')[0] in ('mmdet', 'mmseg', 'mmcv') for m in sys.modules), "
        "len(vzoo.list_vzoo_models()))")
    dt, mm_imported, n = out.split()
    assert mm_imported == "False", "import vzoo must not import mmdet/mmseg/mmcv (vzoo.mm does)"
    assert float(dt) < 2.0, f"import vzoo took {float(dt):.2f} s beyond torch and timm"


def test_kernels_folder_is_vzoo_kernels():
    out = _run("import vzoo.kernels, os; print(os.path.realpath(vzoo.kernels.__file__))")
    assert out == str((ROOT / "kernels" / "__init__.py").resolve())


def test_setup_cfg_lists_every_package():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {"vzoo.kernels"} | {
        ".".join(p.relative_to(ROOT).parts[:-1]) for p in (ROOT / "vzoo").rglob("__init__.py")}
    assert found == listed, \
        f"setup.cfg [options] packages: missing {sorted(found - listed)}, stale {sorted(listed - found)}"


def test_stack_is_pinned_as_designed():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = cfg["options"]["install_requires"].split() + cfg["options.extras_require"]["mm"].split()
    for pin in ["torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31", "mmengine==0.10.7", "mmcv==2.1.0",
                "mmdet==3.3.0", "mmsegmentation==1.2.2", "natten==0.21.7", "albumentations==2.0.8"]:
        assert pin in reqs, pin
