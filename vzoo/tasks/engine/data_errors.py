"""Dataset files that cannot be read are named: :class:`NamedFileErrors` for vzoo's datasets (a corrupt
image), :func:`annotation_file_errors` for the dataloaders the runner builds (a corrupt annotation file
of any dataset, mmdet's and mmseg's included)."""
from __future__ import annotations

import contextlib
import json
from typing import Iterator, Sequence

from .startup import DataFileError

__all__ = ["NamedFileErrors", "annotation_file_errors"]


class NamedFileErrors:
    """Mixin for an mmengine ``BaseDataset``: an image that cannot be decoded (PIL's ``OSError`` for a
    truncated or unidentified file, ``SyntaxError`` for a broken PNG) becomes a :class:`DataFileError`
    naming the sample's files (``file_keys`` of its data info)."""

    file_keys: Sequence[str] = ("img_path",)

    def prepare_data(self, idx):
        try:
            return super().prepare_data(idx)
        except (OSError, SyntaxError) as e:
            info = self.get_data_info(idx)
            files = ", ".join(repr(info[k]) for k in self.file_keys if isinstance(info.get(k), str))
            raise DataFileError(f"{type(self).__name__}: cannot read {files} ({type(e).__name__}: {e}); "
                                "replace or remove the file") from e


@contextlib.contextmanager
def annotation_file_errors(dataset_cfg) -> Iterator[None]:
    """While a dataset is built: a file that is not valid JSON / UTF-8 (a truncated COCO annotation file)
    becomes a :class:`DataFileError` naming the dataset's ``ann_file``."""
    try:
        yield
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        ann = dataset_cfg.get("ann_file") if isinstance(dataset_cfg, dict) else None
        root = dataset_cfg.get("data_root") if isinstance(dataset_cfg, dict) else None
        raise DataFileError(f"annotation file {ann!r} (data_root={root!r}) is corrupt or truncated "
                            f"({type(e).__name__}: {e})") from e
