"""Where ``pretrained=True`` gets its weights when no local file is given: download, verify, convert, cache.

:func:`fetch_pretrained` is the one loader behind ``timm.create_model(name, pretrained=True)`` for vzoo's
families (called by :func:`vzoo.models.build_vzoo_model`), ``VZooBackbone(name, pretrained=True)`` and
``tools/convert.py``. It takes the release URL from the checkpoint index (or the ``url`` / ``hf_hub_id``
of ``pretrained_cfg_overlay``), downloads it with a progress bar into a temporary file, checks its
sha256 where the index pins one, converts it (:func:`convert_checkpoint`: the family's reader and
``checkpoint_filter_fn``, the key check, safetensors) and caches the result as
``$VZOO_CACHE/checkpoints/<model>/<url hash>.safetensors`` (``VZOO_CACHE`` defaults to ``~/.cache/vzoo``,
the folder ``scripts/install.sh`` keeps its wheels in). A later call loads that file without the network.

Hosts: plain HTTPS (GitHub releases, Hugging Face ``resolve`` URLs, Google Cloud Storage, fbaipublicfiles),
OneDrive share links (rewritten to the ``api.onedrive.com/v1.0/shares/u!.../root/content`` form), Google
Drive file links (``uc?export=download`` plus the confirm page that large files get, parsed by ``gdown``)
and Google Drive folders (the file named by the index entry's ``file``, listed with ``gdown``).

Failures are named and leave the cache clean: :class:`DownloadError` (HTTP status, connection lost,
fewer bytes than announced, an HTML page instead of a file), :class:`ChecksumError`, :class:`OfflineError`
(``VZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``), :class:`~vzoo.models.CheckpointError` (a file that cannot
be read safely or does not fit). Each says where a file fetched by hand can be put.
"""
from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from vzoo.checkpoint_index import load_index
from vzoo.models._builder import CheckpointError, load_checkpoint_file
from vzoo.utils import atomic_write

__all__ = [
    "DownloadError", "ChecksumError", "OfflineError", "cache_dir", "cached_path", "is_offline",
    "direct_download_url", "onedrive_direct_url", "gdrive_direct_url", "hf_hub_url", "host_style", "download",
    "convert_checkpoint", "fetch_pretrained", "release_row_url", "source_sha256",
]

_logger = logging.getLogger(__name__)

ONEDRIVE_API = "https://api.onedrive.com/v1.0/shares"
GDRIVE_DOWNLOAD = "https://drive.google.com/uc?export=download&id={id}"
TIMEOUT_S = (30, 120)  # (connect, between bytes), as requests takes them
CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")


class DownloadError(RuntimeError):
    """A download that failed: HTTP status, lost connection, short body, or a web page instead of a file."""


class ChecksumError(DownloadError):
    """A downloaded file whose sha256 differs from the one the checkpoint index pins."""


class OfflineError(DownloadError):
    """A download asked for while ``VZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set."""


def cache_dir() -> Path:
    """``$VZOO_CACHE/checkpoints`` (``VZOO_CACHE`` defaults to ``~/.cache/vzoo``)."""
    return Path(os.environ.get("VZOO_CACHE") or "~/.cache/vzoo").expanduser() / "checkpoints"


def is_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("VZOO_OFFLINE", "HF_HUB_OFFLINE"))


def cached_path(model: str, url: str) -> Path:
    """Where the converted weights of ``model`` from ``url`` are cached (one file per model and URL, so
    that a release's other rows, e.g. EViT's keep rates, do not overwrite each other)."""
    return cache_dir() / model / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.safetensors"


# ---- URLs ---------------------------------------------------------------------------------------------
def onedrive_direct_url(url: str, api: str = ONEDRIVE_API) -> str:
    """A OneDrive share link (``1drv.ms/...``, ``onedrive.live.com/...``) as the API's direct-download URL
    (``{api}/u!{base64url(link)}/root/content``, Microsoft's documented encoding of a sharing URL); an
    ``api.onedrive.com`` URL is returned as it is."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "api.onedrive.com":
        return url
    token = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    return f"{api.rstrip('/')}/u!{token}/root/content"


def gdrive_direct_url(url: str) -> str:
    """A Google Drive file link (``/file/d/ID/view``, ``open?id=ID``, ``uc?id=ID``) as ``uc?export=download``."""
    from gdown.parse_url import parse_url
    file_id, _ = parse_url(url)
    if not file_id:
        raise DownloadError(f"{url!r} is not a Google Drive file link (expected /file/d/ID/... or ?id=ID)")
    return GDRIVE_DOWNLOAD.format(id=file_id)


def hf_hub_url(repo_id: str, filename: str, revision: str = "main") -> str:
    """The ``resolve`` URL of a file on the Hugging Face Hub (``HF_ENDPOINT`` is honoured, as by huggingface_hub)."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return f"{endpoint.rstrip('/')}/{repo_id}/resolve/{revision}/{urllib.parse.quote(filename)}"


def direct_download_url(url: str) -> str:
    """The URL that serves the file itself: OneDrive and Google Drive links rewritten, Hugging Face
    ``blob`` pages turned into ``resolve``; any other URL unchanged."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host in ("1drv.ms", "onedrive.live.com") or host.endswith(".sharepoint.com"):
        return onedrive_direct_url(url)
    if host in ("drive.google.com", "docs.google.com"):
        if "/folders/" in parts.path:
            raise DownloadError(f"{url!r} is a Google Drive folder: name the file in it (the index entry's 'file')")
        return gdrive_direct_url(url)
    if host == "huggingface.co" and "/blob/" in parts.path:
        return urllib.parse.urlunsplit(parts._replace(path=parts.path.replace("/blob/", "/resolve/", 1)))
    return url


def host_style(entry: Dict[str, Any]) -> str:
    """How an index entry's weights are published, in words (for docs/model_zoo.md)."""
    url = entry.get("source") or ""
    host = urllib.parse.urlsplit(url).hostname or ""
    if not url or not entry.get("downloadable", True):
        return "not published"
    if host == "huggingface.co":
        return "timm (Hugging Face)" if "/timm/" in url else "Hugging Face"
    if host in ("drive.google.com", "docs.google.com"):
        return "Google Drive folder" if "/folders/" in url else "Google Drive"
    if host in ("api.onedrive.com", "1drv.ms", "onedrive.live.com"):
        return "OneDrive"
    if host == "storage.googleapis.com":
        return "GCS (TF tarball)" if entry.get("format") == "tf" else "GCS"
    if host == "github.com" and "/releases/download/" in url:
        return "GitHub release"
    return "HTTPS"


def _gdrive_folder_file_url(folder_url: str, filename: str) -> str:
    """The download URL of ``filename`` in a public Google Drive folder, listed with gdown (which talks to
    drive.google.com itself, so this step has no loopback test)."""
    import gdown
    try:
        files = gdown.download_folder(url=folder_url, skip_download=True, quiet=True)
    except Exception as e:  # gdown raises its own errors for private, moved or rate-limited folders
        raise DownloadError(f"could not list the Google Drive folder {folder_url} ({type(e).__name__}: {e})") from e
    for f in files or ():
        if os.path.basename(f.path) == filename:
            return GDRIVE_DOWNLOAD.format(id=f.id)
    raise DownloadError(f"the Google Drive folder {folder_url} has no file {filename!r}")


# ---- download -----------------------------------------------------------------------------------------
def _gdrive_confirm_url(html: str) -> Optional[str]:
    """The real download URL of Google Drive's "can't scan this file for viruses" page (gdown's parser).

    Not ``gdown.download`` itself: it rewrites every Drive link to ``https://drive.google.com/uc?id=...``
    and runs its confirm step only for that host, so it cannot be pointed at a test server, and it would
    give Drive files another download path (temporary files, size check, hashing) than every other host."""
    from gdown.download import get_url_from_gdrive_confirmation
    try:
        return get_url_from_gdrive_confirmation(html)
    except Exception:  # gdown raises FileURLRetrievalError for a page it does not recognise
        return None


def download(url: str, dst: str | os.PathLike, desc: Optional[str] = None) -> str:
    """Download ``url`` to ``dst`` (atomically: ``dst`` appears whole or not at all) and return its sha256.

    Redirects are followed; a Google Drive confirm page is answered once. Raises :class:`DownloadError`
    for an HTTP error status, a connection lost mid-body, fewer bytes than ``Content-Length`` announced,
    or an HTML page instead of a file. The progress bar (tqdm) shows only on a terminal.
    """
    import requests
    from tqdm.auto import tqdm

    headers = {"Accept-Encoding": "identity"}  # the byte count is then the file's, comparable to Content-Length
    with requests.Session() as session:
        try:
            res = session.get(url, stream=True, timeout=TIMEOUT_S, headers=headers)
            if res.ok and res.headers.get("Content-Type", "").startswith("text/html"):
                confirm = _gdrive_confirm_url(res.text)
                if confirm is None:
                    raise DownloadError(f"{url} returned an HTML page, not a weights file (a login, share or "
                                        f"error page?); open it in a browser to check")
                res.close()
                res = session.get(confirm, stream=True, timeout=TIMEOUT_S, headers=headers)
                if res.ok and res.headers.get("Content-Type", "").startswith("text/html"):
                    raise DownloadError(f"{url}: Google Drive answered its confirm step with another page "
                                        f"(quota exceeded or not shared publicly?)")
            if not res.ok:
                raise DownloadError(f"{url}: HTTP {res.status_code} {res.reason}")
            total = int(res.headers["Content-Length"]) if "Content-Length" in res.headers else None
            digest, size = hashlib.sha256(), 0
            with atomic_write(dst) as tmp, open(tmp, "wb") as f, tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=None) as bar:
                for block in res.iter_content(chunk_size=CHUNK):
                    f.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
                f.flush()
                if total is not None and size != total:
                    raise DownloadError(f"{url}: the connection ended after {size} of {total} bytes")
        except requests.RequestException as e:
            raise DownloadError(f"{url}: {type(e).__name__}: {e}") from e
    return digest.hexdigest()


# ---- convert ------------------------------------------------------------------------------------------
def convert_checkpoint(model: str, src: str | os.PathLike, dst: str | os.PathLike, fmt: str = "torch",
                       metadata: Optional[Dict[str, str]] = None) -> torch.nn.Module:
    """Convert the official file ``src`` of ``model`` into vzoo's safetensors file ``dst`` and return the model.

    ``src`` is read exactly as ``timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(file=src))``
    reads a local file (never executing pickled code; a DeiT-style release container through its family's
    ``load_release_checkpoint``), then the family's ``checkpoint_filter_fn`` and the strict key check run, so
    a file that does not fit raises :class:`~vzoo.models.CheckpointError` and nothing is written. A
    non-PyTorch release (``fmt='tf'``) is read by the family's ``convert_<fmt>_checkpoint``; timm's own
    models by :func:`~vzoo.models.load_checkpoint_file`. ``dst`` is written atomically with the model
    name, its pretrained cfg and ``metadata`` in the file's metadata.
    """
    import timm
    from safetensors.torch import save_file

    import vzoo
    src = os.fspath(src)
    family = importlib.import_module(timm.models.model_entrypoint(model).__module__)
    if fmt not in ("torch", "safetensors", "basicsr"):
        fn = getattr(family, f"convert_{fmt}_checkpoint", None)
        if fn is None:
            raise CheckpointError(f"{family.__name__} has no convert_{fmt}_checkpoint for format={fmt!r}")
        overlay = dict(state_dict=fn(src))
    elif family.__name__.startswith("vzoo."):
        overlay = dict(file=src)
    else:  # timm's own loader would take the file too, but vzoo's reader names a bad file the same way for all
        overlay = dict(state_dict=load_checkpoint_file(src))
    net = timm.create_model(model, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    meta = {"vzoo_model": model, "vzoo_version": vzoo.__version__,
            "pretrained_cfg": json.dumps(net.pretrained_cfg, default=str), **(metadata or {})}
    with atomic_write(dst) as tmp:  # dst is either absent (or the old file) or the complete new one
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, tmp, metadata=meta)
    return net


def source_sha256(path: str | os.PathLike) -> Optional[str]:
    """The sha256 of the official file a converted ``path`` was made from (its metadata), if recorded."""
    from safetensors import safe_open
    with safe_open(os.fspath(path), "pt") as f:
        return (f.metadata() or {}).get("source_sha256") or None


# ---- the loader ---------------------------------------------------------------------------------------
def release_row_url(entry: Dict[str, Any], model_kwargs: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The index source of the release row that ``model_kwargs`` select (an entry's ``release_files``:
    ``{"keep_rate=0.9,fuse_token=True": URL, ...}``, one file per row of EViT's table); the entry's
    ``source`` (its default row) when no kwarg names a row or no row matches (logged)."""
    files = entry.get("release_files") or {}
    rows = {url: dict(kv.split("=", 1) for kv in key.split(",")) for key, url in files.items()}
    default = rows.get(entry.get("source"), {})
    if not default or not any(k in (model_kwargs or {}) for k in default):
        return entry.get("source")
    wanted = {k: str(model_kwargs.get(k, v)) for k, v in default.items()}
    for url, row in rows.items():
        if row == wanted:
            return url
    _logger.warning(f"no release file for {wanted}; loading the default row's weights ({entry['source']})")
    return entry.get("source")


def _by_hand(model: str, url: str, dst: Path) -> str:
    return (f"To use a file fetched by hand, download {url} and run: python tools/convert.py {model} FILE {dst} "
            f"(or load it directly: timm.create_model({model!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file=FILE)))")


def fetch_pretrained(model: str, url: Optional[str] = None, hf_hub_id: Optional[str] = None,
                     hf_hub_filename: Optional[str] = None, sha256: Optional[str] = None,
                     index_dir: Optional[os.PathLike] = None, model_kwargs: Optional[Dict[str, Any]] = None) -> Path:
    """The cached, converted weights of ``model``, downloaded and converted first if not cached yet.

    The source is ``url``, else ``hf_hub_id`` (+ ``hf_hub_filename``), else the checkpoint index entry
    (its ``source``, or the ``release_files`` row that ``model_kwargs`` select; for a Google Drive folder,
    its ``file`` in that folder). ``sha256`` (or, for the index's own source, the index's pinned one) is
    checked before anything is converted.
    """
    entry: Dict[str, Any] = load_index(index_dir).get(model, {})
    fmt = entry.get("format", "torch")
    if url is None and hf_hub_id:
        url = hf_hub_url(hf_hub_id, hf_hub_filename or "pytorch_model.bin")
    if url is None:
        url = release_row_url(entry, model_kwargs)
        if not url or not entry.get("downloadable", True):
            notes = f" ({entry['notes']})" if entry.get("notes") else ""
            raise CheckpointError(
                f"{model}: no official weights to download{notes}. Pass a local file: "
                f"timm.create_model({model!r}, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))")
        sha256 = sha256 or (entry.get("sha256") if url == entry.get("source") else None)
        folder_file = entry.get("file")  # a file inside a Google Drive folder
    else:
        folder_file = None
    # a Drive folder's file is cached under the folder URL + its name
    dst = cached_path(model, f"{url}#{folder_file}" if folder_file else url)
    shown = f"{url} (its file {folder_file})" if folder_file else url
    if dst.is_file():
        return dst
    if is_offline():
        raise OfflineError(f"{model}: weights not cached and downloads are off (VZOO_OFFLINE / HF_HUB_OFFLINE): "
                           f"{shown} is not fetched. Cache path: {dst}. " + _by_hand(model, shown, dst))
    if fmt == "tf" and importlib.util.find_spec("tensorflow") is None:  # before fetching a large tarball
        raise ImportError(f"{model}: the release is a TensorFlow checkpoint ({shown}); converting it needs "
                          f"TensorFlow: pip install .[tf]")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".download-", dir=dst.parent)  # same file system as the cache
    try:
        fetch = _gdrive_folder_file_url(url, folder_file) if folder_file else direct_download_url(url)
        name = re.sub(r"[^\w.-]", "_", folder_file or os.path.basename(urllib.parse.urlsplit(url).path)) or "weights"
        known = name.endswith((".safetensors", ".tar.gz", ".pth", ".tar"))  # the reader is picked by suffix
        raw = os.path.join(tmp_dir, name if known else name + ".pth")
        _logger.info(f"{model}: downloading {shown}")
        try:
            digest = download(fetch, raw, desc=model)
        except DownloadError as e:
            raise type(e)(f"{model}: {e}. Cache path: {dst}. " + _by_hand(model, shown, dst)) from e
        if sha256 and digest != sha256:
            raise ChecksumError(f"{model}: {shown} has sha256 {digest}, expected {sha256} (damaged or changed "
                                f"download); nothing cached")
        try:
            convert_checkpoint(model, raw, dst, fmt=fmt, metadata={"source": shown, "source_sha256": digest})
        except CheckpointError as e:  # name the download, not the temporary file that is removed below
            raise CheckpointError(f"{model}: the file downloaded from {shown} (sha256 {digest}) cannot be used, "
                                  f"nothing cached: {e}") from e
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dst
