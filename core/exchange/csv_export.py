"""A run's epochs as CSV, and any table of flat rows.

One row per epoch with the run's config in columns (config_*), its status, device and schedule; floats are
written with repr(), so reading the file back (read_epochs_csv) gives exactly the stored numbers.
"""
from __future__ import annotations

import csv
import io
from dataclasses import fields

from ..config import RunConfig, schedule_text
from ..runs.store import EPOCH_FIELDS, Store

CONFIG_FIELDS = tuple(f.name for f in fields(RunConfig))
EPOCH_CSV_COLUMNS = ("run_id", *EPOCH_FIELDS, "status", "device", "schedule", "test_acc",
                     *(f"config_{name}" for name in CONFIG_FIELDS))
_INT_FIELDS = {"epoch", "phase"}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value)
    return str(value)


def _csv_text(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in header])
    return buffer.getvalue()


def epochs_csv(run: dict, epochs: list[dict]) -> str:
    """A run's history, one row per epoch, with its config (config_*), status, device and schedule."""
    config = run["config"]
    common = {"run_id": run["id"], "status": run["status"], "device": run.get("device", ""),
              "schedule": schedule_text(run.get("schedule", [])), "test_acc": run.get("test_acc"),
              **{f"config_{name}": config.get(name) for name in CONFIG_FIELDS}}
    return _csv_text(EPOCH_CSV_COLUMNS, [{**common, **epoch} for epoch in epochs])


def run_epochs_csv(store: Store, run_id: str) -> str:
    return epochs_csv(store.get_run(run_id), store.epochs(run_id))


def read_epochs_csv(text: str) -> list[dict]:
    """The epoch records of an epochs_csv file, typed as the store returns them."""
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = [c for c in EPOCH_FIELDS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"not an epochs CSV: no column(s) {', '.join(missing)}")
    records = []
    for row in rows:
        record = {}
        for name in EPOCH_FIELDS:
            value = row[name]
            if name == "warmup":
                record[name] = value == "true"
            elif name in _INT_FIELDS:
                record[name] = int(value)
            else:
                record[name] = float(value) if value != "" else None
        records.append(record)
    return records


def table_csv(rows: list[dict]) -> str:
    """Any list of flat dicts (e.g. the runs table) as CSV, columns in the first row's order."""
    header = list(rows[0]) if rows else []
    return _csv_text(header, rows)
