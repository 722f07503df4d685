"""pretrained=True without a local file (vzoo.hub): official-format checkpoints served by a real HTTP server on
127.0.0.1, downloaded, verified, converted, cached; every host style and failure, no network."""
import argparse
import base64
import hashlib
import io
import json
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import timm
import torch

from vzoo.checkpoint_index import INDEX_DIR, load_index, record_sha256, sha256_file
from vzoo.hub import (
    ChecksumError, DownloadError, OfflineError, cached_path, direct_download_url, fetch_pretrained,
    onedrive_direct_url, release_row_url,
)
from vzoo.models import CheckpointError
from vzoo.models._pyramid import pyramid_to_pvt_keys
from vzoo.models.overlock import to_official_keys

from test_biformer import to_official as biformer_to_official  # noqa: E402  (tests/ is on sys.path)
from test_hat import _official_state_dict as hat_to_official  # noqa: E402
from test_van import OFFICIAL_BLOCK_RENAMES as VAN_RENAMES  # noqa: E402


def _release_file(name: str, model) -> bytes:
    """``model``'s weights in the container and key names its family's release uses."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if name.startswith("biformer"):
        obj = {"model": biformer_to_official(sd), "epoch": 300}
    elif name.startswith("eca"):
        # main.py's checkpoint: DataParallel 'module.' keys (the release's 'eca' for vzoo's 'se') under 'state_dict'
        obj = {"state_dict": {"module." + k.replace(".se.", ".eca."): v for k, v in sd.items()}, "epoch": 90,
               "arch": name, "best_prec1": torch.tensor(70.9)}
    elif name.startswith("van"):
        obj = {"state_dict": pyramid_to_pvt_keys(sd, VAN_RENAMES), "epoch": 310}
    elif name.startswith("overlock"):
        obj = to_official_keys(sd, model)  # a bare state dict with the official names
    elif name.startswith("hat"):
        obj = {"params_ema": hat_to_official(model)}  # BasicSR
    elif name.startswith("evit"):  # main.py: {'model', 'model_ema', ..., 'args': Namespace}; --eval loads 'model'
        obj = {"model": sd, "model_ema": {k: torch.zeros_like(v) for k, v in sd.items()}, "epoch": 299,
               "args": argparse.Namespace(model=name, base_keep_rate=0.7)}
    else:
        raise ValueError(name)
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


CONFIRM_PAGE = ('<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                '<p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>\n'
                '<form id="download-form" action="{base}/download" method="get">'
                '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                '<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">'
                '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="5e2c"></form>\n'
                '</body></html>')


class _Handler(BaseHTTPRequestHandler):
    """/files/NAME, /truncated/NAME (a whole response of half the file), /killed/NAME (announces the file,
    sends half, closes), /uc?id=NAME + /download (Google Drive's confirm step), /v1.0/shares/u!TOKEN/root/content
    (OneDrive: redirects to the file), /REPO/resolve/main/NAME (Hugging Face), anything else 404."""

    def log_message(self, *args):
        pass

    def _send(self, data: bytes, length=None, ctype="application/octet-stream", extra=()):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        files = self.server.files
        self.server.requests.append(self.path)
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        name = parts.path.rsplit("/", 1)[-1]
        kind = parts.path.split("/")[1]
        if kind == "files" and name in files:
            self._send(files[name])
        elif kind == "truncated" and name in files:
            self._send(files[name][:len(files[name]) // 2])
        elif kind == "killed" and name in files:
            self._send(files[name][:len(files[name]) // 2], length=len(files[name]))
            self.close_connection = True
        elif kind == "page":
            self._send(b"<html><body>Sign in to continue</body></html>", ctype="text/html; charset=utf-8")
        elif parts.path == "/uc" and query.get("id", [""])[0] in files:
            page = CONFIRM_PAGE.format(base=f"http://127.0.0.1:{self.server.server_port}", id=query["id"][0])
            self._send(page.encode(), ctype="text/html; charset=utf-8")
        elif parts.path == "/download" and query.get("confirm") == ["t"] and query.get("id", [""])[0] in files:
            self._send(files[query["id"][0]], extra=[("Content-Disposition", f'attachment; filename="{name}"')])
        elif parts.path.startswith("/v1.0/shares/u!") and parts.path.endswith("/root/content"):
            token = parts.path.split("/")[3][2:]
            share = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            self.send_response(302)
            self.send_header("Location", "/files/" + share.rsplit("/", 1)[-1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif "/resolve/main/" in parts.path and name in files:
            self._send(files[name])
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests = {}, []
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("VZOO_CACHE", str(root))
    monkeypatch.delenv("VZOO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return root


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _serve(server, name, seed=0):
    torch.manual_seed(seed)
    model = timm.create_model(name).eval()
    data = _release_file(name, model)
    server.files[f"{name}.pth"] = data
    return model, data


FAMILIES = ["biformer_tiny", "eca_resnet18", "van_b0", "overlock_xt", "hat_s_x2", "evit_deit_tiny_patch16_224"]


@pytest.mark.parametrize("name", FAMILIES)
def test_release_downloads_converts_and_caches(name, server, cache):
    """Each family's release container and key names through pretrained=True from a URL: the weights of the
    model the file was made from (what loading the file directly gives: the families' own tests), and a
    second call served from the cache."""
    model, _ = _serve(server, name)
    url = f"{server.url}/files/{name}.pth"
    before = len(server.requests)
    torch.manual_seed(123)  # another random init: equality proves the weights were loaded
    fetched = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=url)).eval()
    assert server.requests[before:] == [f"/files/{name}.pth"]
    expected, got = model.state_dict(), fetched.state_dict()
    assert expected.keys() == got.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0, msg=k)
    if name in ("van_b0", "eca_resnet18"):
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(fetched(x), model(x), rtol=0, atol=0)
    assert _files(cache) == [str(cached_path(name, url).relative_to(cache))]  # the converted file only
    assert fetch_pretrained(name, url=url) == cached_path(name, url)  # what a second create_model does
    assert len(server.requests) == before + 1, "the second call went to the server"


def test_second_create_model_loads_from_the_cache(server, cache):
    model, _ = _serve(server, "van_b0")
    url = f"{server.url}/files/van_b0.pth"
    timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    before = len(server.requests)
    again = timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    assert len(server.requests) == before
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0, msg=k)


def test_index_source_and_its_pinned_sha256(server, cache, tmp_path):
    _, data = _serve(server, "van_b0")
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    entry = {"source": f"{server.url}/files/van_b0.pth", "format": "torch", "sha256": "0" * 64,
             "filter_fn": "vzoo.models.van.checkpoint_filter_fn"}
    (index_dir / "van.json").write_text(json.dumps({"family": "van", "models": {"van_b0": entry}}, indent=1))
    with pytest.raises(ChecksumError, match="expected 0000"):
        fetch_pretrained("van_b0", index_dir=index_dir)
    assert _files(cache) == []
    record_sha256("van_b0", sha256_file_bytes(data), index_dir=index_dir)  # as tools/convert.py --record does
    assert load_index(index_dir)["van_b0"]["sha256"] == sha256_file_bytes(data)
    path = fetch_pretrained("van_b0", index_dir=index_dir)
    assert path == cached_path("van_b0", entry["source"]) and path.is_file()


def sha256_file_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("route, error, match", [
    ("truncated", CheckpointError, "corrupt"),
    ("killed", DownloadError, "van_b0: .*(ended after|IncompleteRead|ChunkedEncodingError)"),
    ("nowhere", DownloadError, "HTTP 404"),
    ("page", DownloadError, "HTML page"),
])
def test_failed_downloads_are_named_and_leave_the_cache_clean(route, error, match, server, cache):
    _serve(server, "van_b0")
    url = f"{server.url}/{route}/van_b0.pth"
    with pytest.raises(error, match=match) as e:
        timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    if error is DownloadError:
        assert str(cached_path("van_b0", url)) in str(e.value)  # where a file fetched by hand can go
    assert _files(cache) == []  # no cached file, no temporary file left behind


def test_google_drive_confirm_page(server, cache):
    model, _ = _serve(server, "van_b0")
    server.files["1vanB0fileID"] = server.files["van_b0.pth"]
    url = f"{server.url}/uc?export=download&id=1vanB0fileID"
    before = len(server.requests)
    fetched = timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    steps = server.requests[before:]
    assert steps[0].startswith("/uc?") and steps[1].startswith("/download?") and "confirm=t" in steps[1]
    for k, v in fetched.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0)


def test_onedrive_share_link_and_hugging_face(server, cache, monkeypatch):
    model, _ = _serve(server, "van_b0")
    share = "https://1drv.ms/u/s!AkBbczdRlZvChHEO/van_b0.pth"
    url = onedrive_direct_url(share, api=f"{server.url}/v1.0/shares")
    fetched = timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    assert server.requests[-2:] == [urllib.parse.urlsplit(url).path, "/files/van_b0.pth"]  # API, then its redirect
    torch.testing.assert_close(fetched.state_dict()["head.weight"], model.state_dict()["head.weight"], rtol=0, atol=0)

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    fetched = timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(
        hf_hub_id="Visual-Attention-Network/VAN-Tiny-original", hf_hub_filename="van_b0.pth"))
    assert server.requests[-1] == "/Visual-Attention-Network/VAN-Tiny-original/resolve/main/van_b0.pth"
    torch.testing.assert_close(fetched.state_dict()["head.weight"], model.state_dict()["head.weight"], rtol=0, atol=0)


def test_url_rewriting():
    share = "https://1drv.ms/u/s!AkBbczdRlZvChHEOoGkgwgQzEDlM"
    token = base64.urlsafe_b64encode(share.encode()).decode().rstrip("=")
    assert direct_download_url(share) == f"https://api.onedrive.com/v1.0/shares/u!{token}/root/content"
    api = "https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHEOoGkgwgQzEDlM/root/content"
    assert direct_download_url(api) == api
    file_id = "1FfvdEBss9f8gexjqEY8vOSUQe_8qwYuL"
    uc = f"https://drive.google.com/uc?export=download&id={file_id}"
    assert direct_download_url(f"https://drive.google.com/file/d/{file_id}/view?usp=sharing") == uc
    assert direct_download_url(f"https://drive.google.com/open?id={file_id}") == uc
    assert direct_download_url("https://huggingface.co/a/b/blob/main/x.pth") == "https://huggingface.co/a/b/resolve/main/x.pth"
    gh = "https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_xt_in1k_224.pth"
    assert direct_download_url(gh) == gh
    with pytest.raises(DownloadError, match="folder"):
        direct_download_url("https://drive.google.com/drive/folders/1HpmReFfoUqUbnAOQ7rvOeNU3uf_m69w0")


def test_offline_names_model_url_and_cache_path(server, cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = f"{server.url}/files/van_b0.pth"
    before = len(server.requests)
    with pytest.raises(OfflineError) as e:
        timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    dst = cached_path("van_b0", url)
    assert "van_b0" in str(e.value) and url in str(e.value) and str(dst) in str(e.value)
    assert len(server.requests) == before
    # the index's own source by default; a file put by hand at the named path is used offline
    with pytest.raises(OfflineError, match=load_index()["van_b0"]["source"]):
        timm.create_model("van_b0", pretrained=True)
    torch.manual_seed(0)
    model = timm.create_model("van_b0")
    from safetensors.torch import save_file
    dst.parent.mkdir(parents=True)
    save_file(model.state_dict(), str(dst))
    loaded = timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=dict(url=url))
    torch.testing.assert_close(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_releases_without_a_download_say_so(cache):
    with pytest.raises(CheckpointError, match="no official weights to download.*pretrained_cfg_overlay"):
        timm.create_model("favit_b0", pretrained=True)
    with pytest.raises(CheckpointError, match="no official weights"):
        timm.create_model("ulsam_mobilenetv1_g1", pretrained=True)


def test_tf_release_without_tensorflow_says_how_before_downloading(server, cache):
    try:
        import tensorflow  # noqa: F401
        pytest.skip("TensorFlow is installed")
    except ImportError:
        pass
    before = len(server.requests)
    with pytest.raises(ImportError, match=r"pip install \.\[tf\]"):
        fetch_pretrained("tiny_moat_0", url=f"{server.url}/files/tiny_moat_0.tar.gz")
    assert len(server.requests) == before and _files(cache) == []


def test_every_downloadable_index_source_has_a_direct_url():
    for name, entry in load_index().items():
        if entry["source"] and entry.get("downloadable", True) and "huggingface.co/timm/" not in entry["source"]:
            if "/folders/" in entry["source"]:
                assert entry.get("file"), f"{name}: a Google Drive folder needs the file's name"
            else:
                assert direct_download_url(entry["source"]).startswith("https://"), name


def test_record_sha256_changes_only_that_value(tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(INDEX_DIR, index_dir)
    before = (index_dir / "overlock.json").read_text()
    digest = sha256_file(index_dir / "overlock.json")
    record_sha256("overlock_t", digest, index_dir=index_dir)
    after = (index_dir / "overlock.json").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 1 and digest in changed[0][1] and '"overlock_t"' in after
    assert load_index(index_dir)["overlock_t"]["sha256"] == digest
    assert load_index(index_dir)["overlock_xt"]["sha256"] is None


def test_release_rows_are_chosen_by_the_model_kwargs(cache, monkeypatch):
    entry = load_index()["evit_deit_small_patch16_224"]
    rows = entry["release_files"]
    monkeypatch.setenv("VZOO_OFFLINE", "1")
    with pytest.raises(OfflineError, match=rows["keep_rate=0.9,fuse_token=True"].split("/d/")[1].split("/")[0]):
        timm.create_model("evit_deit_small_patch16_224", keep_rate=0.9, pretrained=True)
    assert release_row_url(entry, dict(keep_rate=0.5, fuse_token=False)) == rows["keep_rate=0.5,fuse_token=False"]
    assert release_row_url(entry, None) == entry["source"] == rows["keep_rate=0.7,fuse_token=True"]
    assert release_row_url(entry, dict(keep_rate=0.75)) == entry["source"]  # no such row: the default's weights
    assert release_row_url(load_index()["van_b0"], dict(keep_rate=0.5)) == load_index()["van_b0"]["source"]


def test_convert_tool_without_src_fetches_and_records(server, cache, tmp_path):
    """tools/convert.py MODEL [--dst D] --record: the same fetch as pretrained=True, then the sha256 pinned."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import convert
    _, data = _serve(server, "van_b0")
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    (index_dir / "van.json").write_text(json.dumps({"family": "van", "models": {"van_b0": {
        "source": f"{server.url}/files/van_b0.pth", "format": "torch", "sha256": None,
        "filter_fn": "vzoo.models.van.checkpoint_filter_fn"}}}))
    dst = tmp_path / "van_b0.safetensors"
    info = convert.fetch("van_b0", str(dst), index_dir=index_dir, record=True)
    assert info["src_sha256"] == sha256_file_bytes(data) == load_index(index_dir)["van_b0"]["sha256"]
    assert dst.is_file() and sha256_file(dst) == sha256_file(cached_path("van_b0", f"{server.url}/files/van_b0.pth"))
