import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_model_zoo_doc_is_generated_and_fresh():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_model_zoo.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
