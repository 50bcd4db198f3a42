"""Normalizer throughput: rows/s of `convert_rows` and `convert_arrow` on synthetic wide rows,
and of NDJSON lines written from Arrow chunks the plain way and a whole column at a time.

The rows are the eight columns of the large-result benchmark (LONG, DOUBLE, DECIMAL(18,2),
STRING, DATE, TIMESTAMP, BOOLEAN, a LONG that is NULL in every third row), in the string forms
the local warehouse sends and as the Arrow batch it sends. Prints one JSON document.
`--baseline FILE` also times another copy of normalize.py in the same run, alternating runs,
so that two versions are compared on the same (noisy) machine.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa

from dbx_backend.engine import normalize
from dbx_backend.engine.json_lines import JsonLines, encode_rows

COLUMNS = [
    ("id", "LONG", "BIGINT", None),
    ("dbl", "DOUBLE", "DOUBLE", None),
    ("dec", "DECIMAL", "DECIMAL(18,2)", 2),
    ("str", "STRING", "STRING", None),
    ("dt", "DATE", "DATE", None),
    ("ts", "TIMESTAMP", "TIMESTAMP", None),
    ("flag", "BOOLEAN", "BOOLEAN", None),
    ("maybe", "LONG", "BIGINT", None),
]
EPOCH_DAY = date(2020, 1, 1)
EPOCH = datetime(2020, 1, 1)


def text_rows(count: int) -> list[list[str | None]]:
    """JSON_ARRAY rows as the local warehouse renders the benchmark statement."""
    rows: list[list[str | None]] = []
    for i in range(count):
        moment = EPOCH + timedelta(seconds=i)
        rows.append(
            [
                str(i),
                repr(i * 1.5),
                f"{i // 100}.{i % 100:02d}",
                f"row-{i}",
                (EPOCH_DAY + timedelta(days=i % 1000)).isoformat(),
                f"{moment:%Y-%m-%dT%H:%M:%S}.000Z",
                "true" if i % 2 == 0 else "false",
                None if i % 3 == 0 else str(i),
            ]
        )
    return rows


def arrow_batch(count: int) -> pa.RecordBatch:
    """The same rows as one Arrow batch with the types the local warehouse sends."""
    ids = list(range(count))
    arrays = [
        pa.array(ids, pa.int64()),
        pa.array([i * 1.5 for i in ids], pa.float64()),
        pa.array([Decimal(i).scaleb(-2) for i in ids], pa.decimal128(18, 2)),
        pa.array([f"row-{i}" for i in ids], pa.string()),
        pa.array([EPOCH_DAY + timedelta(days=i % 1000) for i in ids], pa.date32()),
        pa.array([1_577_836_800_000_000 + i * 1_000_000 for i in ids], pa.timestamp("us", "UTC")),
        pa.array([i % 2 == 0 for i in ids], pa.bool_()),
        pa.array([None if i % 3 == 0 else i for i in ids], pa.int64()),
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[name for name, *_ in COLUMNS])


def load_module(path: Path) -> ModuleType:
    """Another copy of normalize.py, imported under its own name."""
    spec = importlib.util.spec_from_file_location("normalize_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def converter(module: ModuleType) -> Any:
    columns = [
        module.Column(name, type_, text, position, scale=scale)
        for position, (name, type_, text, scale) in enumerate(COLUMNS)
    ]
    return module.RowConverter(columns)


def timed(call: Callable[[], list[list[Any]]], rows: int) -> float:
    """Rows per second of one call; the result is dropped before the clock is read again."""
    gc.collect()
    start = time.perf_counter()
    out = call()
    elapsed = time.perf_counter() - start
    if len(out) != rows:
        raise SystemExit(f"expected {rows} rows, got {len(out)}")
    del out
    return rows / elapsed


def measure(versions: dict[str, ModuleType], count: int, repeats: int) -> dict[str, Any]:
    """Median rows/s of each version on `count` rows, after checking that they agree."""
    texts, batch = text_rows(count), arrow_batch(count)
    if len(versions) > 1:  # both versions must agree before their speeds mean anything
        outputs = [converter(m).convert_rows(texts[:5000]) for m in versions.values()]
        arrows = [converter(m).convert_arrow(batch.slice(0, 5000)) for m in versions.values()]
        if outputs[0] != outputs[1] or arrows[0] != arrows[1]:
            raise SystemExit("the versions disagree on the benchmark rows")
    samples: dict[str, dict[str, list[float]]] = {
        name: {"convert_rows": [], "convert_arrow": []} for name in versions
    }
    for repeat in range(repeats + 1):
        for name, module in versions.items():  # alternate, so drift hits both alike
            conv = converter(module)
            rows_per_s = timed(partial(conv.convert_rows, texts), count)
            arrow_per_s = timed(partial(conv.convert_arrow, batch), count)
            if repeat:  # the first round only warms up (allocator, caches)
                samples[name]["convert_rows"].append(rows_per_s)
                samples[name]["convert_arrow"].append(arrow_per_s)
    medians = {
        name: {path: round(statistics.median(runs)) for path, runs in paths.items()}
        for name, paths in samples.items()
    }
    entry: dict[str, Any] = dict(medians)
    if "baseline" in medians:
        entry["speedup"] = {
            path: round(medians["current"][path] / medians["baseline"][path], 2)
            for path in medians["current"]
        }
    return entry


def measure_ndjson(count: int, chunk_rows: int, repeats: int) -> dict[str, Any]:
    """Rows/s of NDJSON lines from Arrow chunks of `chunk_rows` (as the local warehouse sends
    them): the plain way (`convert_arrow`, then orjson per row) and whole columns at a time
    (`JsonLines`), alternating; both must give the same bytes first."""
    batch = arrow_batch(count)
    chunks = [batch.slice(start, chunk_rows) for start in range(0, count, chunk_rows)]
    conv = converter(normalize)
    lines = JsonLines(conv.columns, normalize.NormalizeOptions())

    def plain() -> list[bytes]:
        return [encode_rows(conv.convert_arrow(chunk)) for chunk in chunks]

    def whole_columns() -> list[bytes | memoryview]:
        return [lines.from_arrow(chunk).data for chunk in chunks]

    if b"".join(plain()) != b"".join(bytes(d) for d in whole_columns()):
        raise SystemExit("the two ways disagree on the benchmark rows")
    samples: dict[str, list[float]] = {"plain": [], "whole_columns": []}
    for repeat in range(repeats + 1):
        for name, call in (("plain", plain), ("whole_columns", whole_columns)):
            gc.collect()
            start = time.perf_counter()
            out = call()
            elapsed = time.perf_counter() - start
            del out
            if repeat:
                samples[name].append(count / elapsed)
    medians = {name: round(statistics.median(runs)) for name, runs in samples.items()}
    return {
        "chunk_rows": chunk_rows,
        "rows_per_s": medians,
        "speedup": round(medians["whole_columns"] / medians["plain"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another normalize.py to time alongside")
    parser.add_argument("--chunk-rows", type=int, default=10_000, help="NDJSON: rows per chunk")
    args = parser.parse_args()

    versions: dict[str, ModuleType] = {"current": normalize}
    if args.baseline is not None:
        versions["baseline"] = load_module(args.baseline)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "repeats": args.repeats,
        "columns": [f"{name} {text}" for name, _, text, _ in COLUMNS],
        "rows_per_s": {},
    }
    report["ndjson_from_arrow"] = {}
    for count in args.rows:
        report["rows_per_s"][str(count)] = measure(versions, count, args.repeats)
        ndjson = measure_ndjson(count, args.chunk_rows, args.repeats)
        report["ndjson_from_arrow"][str(count)] = ndjson
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
