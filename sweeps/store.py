"""An MLflow store URI checked before anything is written to it: a sweep refuses a store
that cannot work before Ray starts, and the read-only CLIs never create one."""

from __future__ import annotations

import tempfile
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from relcore.errors import RelcoreError

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def check_store(uri: str, *, must_exist: bool = False) -> None:
    """Refuse, in one line and creating nothing, an MLflow store that cannot work.

    ``sqlite:///PATH``: the file must be an SQLite database if it is there; if not, it
    must be creatable (``must_exist``: it must be there). ``http(s)://``: the server must
    answer ``/health``. Any other URI: MLflow must be able to open it.
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser()
        if db.is_file():
            try:
                with open(db, "rb") as fh:
                    head = fh.read(len(SQLITE_HEADER))
            except OSError as exc:
                raise RelcoreError(f"MLflow store {uri}: cannot read {db}: {exc.strerror}") from None
            if head and head != SQLITE_HEADER:  # an empty file is an empty database
                raise RelcoreError(f"MLflow store {uri}: {db} is not an SQLite database")
        elif must_exist:
            raise RelcoreError(f"no MLflow store at {uri}")
        elif not db.resolve().parent.is_dir() or not _writable(db.resolve().parent):
            raise RelcoreError(f"MLflow store {uri}: folder {db.resolve().parent} is not writable")
    elif uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except Exception as exc:
            raise RelcoreError(f"MLflow tracking server {uri} is unreachable: {exc}") from exc
    else:
        try:
            MlflowClient(uri)
        except Exception as exc:  # MLflow raises several types for URIs it cannot serve
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RelcoreError(f"MLflow store {uri} cannot be opened: {first}") from None


def _writable(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False
