"""Dataset and task registry.

Names a user can give:

- ``rel-f1`` (alias ``f1``): RelBench's Formula 1 database. With a raw directory
  (``raw_dir=`` or env ``RELCORE_F1_RAW_DIR``) it is built offline by relbench's own
  processing; without one, relbench downloads it.
- ``synthetic`` or ``synthetic:N`` (N rows; ``100k``, ``1m`` and ``5m`` suffixes work):
  the deterministic generator of :mod:`relcore.data.synthetic`.
- ``sqlite:PATH``: a user's SQLite file, schema from its declared keys.

Datasets are relbench :class:`~relbench.base.Dataset` objects and tasks relbench
task objects, so relbench's own task tables and metrics are used throughout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from relbench.base import AutoCompleteTask, Database, Dataset, EntityTask, RecommendationTask

from relcore.errors import RelcoreError

F1_NAMES = ("rel-f1", "f1")
DB_CUTS = ("test", "full")
AUTOCOMPLETE_UNSUPPORTED = (
    "relbench 2.1.2 autocomplete tasks build their tables over one timestamp per second "
    "(billions of rows): not supported"
)


@dataclass
class DatasetSpec:
    """Everything that identifies a database a user asked for (hashable, serialisable)."""

    name: str
    raw_dir: str | None = None
    time_cols: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0
    db_cut: str = "test"  # see :func:`get_db`

    def __post_init__(self) -> None:
        if self.db_cut not in DB_CUTS:
            raise RelcoreError(f"db cut must be one of {', '.join(DB_CUTS)}, got {self.db_cut!r}")

    @property
    def registry_name(self) -> str:
        """The name relbench's task registry knows this dataset by."""
        if self.name in F1_NAMES:
            return "rel-f1"
        if self.name.startswith("synthetic"):
            return "rel-synthetic"
        return self.name


def parse_size(text: str) -> int:
    """``'5000'``, ``'100k'``, ``'1m'``, ``'1.5M'`` -> number of rows."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not match:
        raise RelcoreError(f"bad synthetic size '{text}' (expected e.g. 5000, 100k, 1m)")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def load_dataset(spec: DatasetSpec | str, raw_dir: str | None = None) -> Dataset:
    """Return the relbench ``Dataset`` a spec names; raise :class:`RelcoreError` if unknown."""
    if isinstance(spec, str):
        spec = DatasetSpec(spec, raw_dir=raw_dir)
    name = spec.name
    if name in F1_NAMES:
        return _load_f1(spec.raw_dir or os.environ.get("RELCORE_F1_RAW_DIR"))
    if name == "synthetic" or name.startswith("synthetic:"):
        from relcore.data.synthetic import SyntheticDataset

        size = parse_size(name.split(":", 1)[1]) if ":" in name else 5_000
        return SyntheticDataset(num_rows=size, seed=spec.seed)
    if name.startswith("sqlite:"):
        from relcore.data.sqlite import SQLiteDataset, parse_time_cols

        return SQLiteDataset(name.split(":", 1)[1], time_cols=parse_time_cols(list(spec.time_cols)))
    raise RelcoreError(
        f"unknown dataset '{name}' (known: rel-f1, synthetic[:N], sqlite:PATH)"
    )


def _load_f1(raw_dir: str | None) -> Dataset:
    if raw_dir:
        from relcore.data.f1 import LocalF1Dataset

        return LocalF1Dataset(raw_dir)
    # No raw files: relbench's normal download path (needs network).
    from relbench.datasets import get_dataset

    try:
        return get_dataset("rel-f1", download=True)
    except Exception as exc:
        raise RelcoreError(
            f"rel-f1: no raw dir given (--raw-dir or RELCORE_F1_RAW_DIR) and download failed: "
            f"{type(exc).__name__}"
        ) from exc


def get_db(dataset: Dataset, cut: str = "test") -> Database:
    """The database a graph is materialised from.

    - ``test``: relbench's default, rows up to the test timestamp. Test seeds (dated after
      it) see no row newer than that timestamp.
    - ``full``: the whole database, as the paper's reference code fine-tunes. Each seed
      still sees no row after its own seed time (temporal sampling), but column statistics
      and vocabularies are computed over every row.

    Pretraining samples rows up to the validation timestamp from either.
    """
    if cut not in DB_CUTS:
        raise RelcoreError(f"db cut must be one of {', '.join(DB_CUTS)}, got {cut!r}")
    return dataset.get_db(upto_test_timestamp=cut == "test")


def task_names(spec: DatasetSpec) -> list[str]:
    """Entity tasks relbench registers for a dataset (empty for a SQLite file)."""
    _ensure_registered(spec)
    from relbench.tasks import task_registry

    return list(task_registry.get(spec.registry_name, {}).keys())


def load_task(spec: DatasetSpec, dataset: Dataset, task_name: str, entity_only: bool = True):
    """Instantiate relbench's task class ``task_name`` on ``dataset``.

    With ``entity_only`` (what fine-tuning needs), a link-prediction task is refused.
    """
    _ensure_registered(spec)
    from relbench.tasks import task_registry

    tasks = task_registry.get(spec.registry_name, {})
    if task_name not in tasks:
        known = ", ".join(tasks) or "none"
        raise RelcoreError(f"unknown task '{task_name}' for dataset '{spec.name}' (known: {known})")
    cls, args, kwargs = tasks[task_name]
    if issubclass(cls, AutoCompleteTask):
        raise RelcoreError(f"task '{task_name}': {AUTOCOMPLETE_UNSUPPORTED}")
    # relbench's registry points cache_dir at its download cache; tables are cheap to make.
    kwargs = {k: v for k, v in kwargs.items() if k != "cache_dir"}
    task = cls(dataset, *args, cache_dir=None, **kwargs)
    if entity_only and (isinstance(task, RecommendationTask) or not isinstance(task, EntityTask)):
        raise RelcoreError(f"task '{task_name}' is a link-prediction task: not supported yet")
    return task


def is_autocomplete(spec: DatasetSpec, task_name: str) -> bool:
    from relbench.tasks import task_registry

    _ensure_registered(spec)
    return issubclass(task_registry[spec.registry_name][task_name][0], AutoCompleteTask)


def entity_task_names(spec: DatasetSpec) -> list[str]:
    """Names of the entity (node-level) tasks relcore can fine-tune on."""
    from relbench.tasks import task_registry

    _ensure_registered(spec)
    names = []
    for name, (cls, _, _) in task_registry.get(spec.registry_name, {}).items():
        if issubclass(cls, EntityTask) and not issubclass(cls, (RecommendationTask, AutoCompleteTask)):
            names.append(name)
    return names


def _ensure_registered(spec: DatasetSpec) -> None:
    if spec.registry_name == "rel-synthetic":
        import relcore.data.synthetic  # noqa: F401  (registers its tasks with relbench)
