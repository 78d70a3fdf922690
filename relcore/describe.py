"""What ``relcore describe`` reports: tables, stypes, keys, totals and task sizes."""

from __future__ import annotations

from relcore.data import (
    AUTOCOMPLETE_UNSUPPORTED,
    DatasetSpec,
    is_autocomplete,
    load_dataset,
    load_task,
    task_names,
)
from relcore.data.validate import count_rows_and_links
from relcore.graph import infer_stypes

SPLITS = ("train", "val", "test")


def describe_dataset(spec: DatasetSpec) -> dict:
    """Per-table facts of the full database plus every registered task's split sizes."""
    dataset = load_dataset(spec)
    db = dataset.get_db(upto_test_timestamp=False)
    stypes = infer_stypes(db)
    tables = {}
    for name, table in db.table_dict.items():
        keys = {table.pkey_col, *table.fkey_col_to_pkey_table}
        by_stype: dict[str, list[str]] = {}
        for col, st in stypes[name].items():
            if col not in keys:
                by_stype.setdefault(st.value, []).append(col)
        tables[name] = {
            "rows": len(table.df),
            "pkey": table.pkey_col,
            "time_col": table.time_col,
            "fkeys": dict(table.fkey_col_to_pkey_table),
            "columns": by_stype,
        }
    rows, links = count_rows_and_links(db)
    tasks = {}
    for task_name in task_names(spec):
        if is_autocomplete(spec, task_name):
            tasks[task_name] = {"supported": False, "reason": AUTOCOMPLETE_UNSUPPORTED}
            continue
        # A fresh dataset per task: relbench's autocomplete tasks mutate their dataset.
        task = load_task(spec, load_dataset(spec), task_name, entity_only=False)
        tasks[task_name] = {split: len(task.get_table(split)) for split in SPLITS}
        tasks[task_name]["type"] = task.task_type.value
    return {
        "dataset": spec.name,
        "rows": rows,
        "links": links,
        "tables": {name: t["rows"] for name, t in tables.items()},
        "table_details": tables,
        "val_timestamp": str(getattr(dataset, "val_timestamp", "")),
        "test_timestamp": str(getattr(dataset, "test_timestamp", "")),
        "tasks": tasks,
    }


def format_description(info: dict) -> str:
    """Human-readable rendering of :func:`describe_dataset`'s result."""
    lines = [f"dataset {info['dataset']}: {info['rows']:,} rows, {info['links']:,} links"]
    for name, t in info["table_details"].items():
        lines.append(f"  {name}: {t['rows']:,} rows, pkey={t['pkey']}, time={t['time_col']}")
        for fk, target in t["fkeys"].items():
            lines.append(f"    fkey {fk} -> {target}")
        for st, cols in t["columns"].items():
            lines.append(f"    {st}: {', '.join(cols)}")
    for name, sizes in info["tasks"].items():
        if "train" not in sizes:
            lines.append(f"  task {name}: not supported ({sizes['reason']})")
            continue
        lines.append(f"  task {name} ({sizes['type']}): "
                     + " / ".join(f"{s} {sizes[s]:,}" for s in SPLITS))
    return "\n".join(lines)
