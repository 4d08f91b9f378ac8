"""Read back what wandb wrote for an offline run, using wandb's own protobuf record classes.

A ``run-<id>.wandb`` file is a 7-byte header (``:W&B``, 0xBEE1 little-endian, version 0) and
then a log in 32 KiB blocks: each chunk has a 7-byte header (CRC-32C, payload length, chunk
type) and chunks join into one serialized ``Record``. The CRC is not checked: a damaged
record fails to parse instead.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

MAGIC = b":W&B"
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: Path) -> Iterator[pb.Record]:
    """Every record stored in one ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    magic, ident, version = HEADER.unpack_from(data)
    if magic != MAGIC or ident != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a wandb run file (header {data[: HEADER.size]!r})")
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        room = BLOCK_SIZE - pos % BLOCK_SIZE
        if room < CHUNK.size:
            pos += room  # a block's tail too short for a chunk header is padding
            continue
        _crc, length, kind = CHUNK.unpack_from(data, pos)
        if kind not in (FULL, FIRST, MIDDLE, LAST):
            pos += room  # zeros: the rest of the block is padding
            continue
        start, pos = pos + CHUNK.size, pos + CHUNK.size + length
        if pos > len(data):
            break  # a chunk cut short: the writer stopped mid-record
        payload = data[start:pos]
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _set(target: dict, item: Any) -> None:
    """Store one config/summary/history item (flat ``key`` or ``nested_key`` path) in ``target``."""
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = json.loads(item.value_json)


def _remove(target: dict, item: Any) -> None:
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        target = target.get(part, {})
    target.pop(path[-1], None)


def read_wandb_file(path: Path) -> dict[str, Any]:
    """One ``.wandb`` file as ``run`` (with its ``config``), ``history``, ``summary``, ``exit_code``."""
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    exit_code: int | None = None
    start_time = 0.0
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            for item in r.config.update:
                _set(config, item)
            run = {
                "run_id": r.run_id,
                "entity": r.entity,
                "project": r.project,
                "group": r.run_group,
                "job_type": r.job_type,
                "display_name": r.display_name,
                "tags": list(r.tags),
                "resume": r.resume,
            }
            start_time = r.start_time.seconds + r.start_time.nanos / 1e9
        elif kind == "config":
            for item in record.config.update:
                _set(config, item)
            for item in record.config.remove:
                _remove(config, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item)
            history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set(summary, item)
            for item in record.summary.remove:
                _remove(summary, item)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    run["config"] = config
    return {
        "path": Path(path),
        "start_time": start_time,
        "run": run,
        "history": history,
        "summary": summary,
        "exit_code": exit_code,
    }


def read_wandb_parts(
    run_dir: Path, run_id: str | None = None, *, wait_s: float = 10.0
) -> list[dict[str, Any]]:
    """Every offline run file under ``run_dir/wandb`` (optionally one run id), oldest first.

    A resumed run writes one ``offline-run-*`` folder per attempt under the same id; together
    they are its whole history. wandb's service may still be writing a file when
    ``run.finish()`` returns, so this waits up to ``wait_s`` for every file's exit record.
    """
    pattern = f"offline-run-*/run-{run_id or '*'}.wandb"
    deadline = time.monotonic() + wait_s
    while True:
        parts = [read_wandb_file(path) for path in Path(run_dir, "wandb").glob(pattern)]
        finished = parts and all(part["exit_code"] is not None for part in parts)
        if finished or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not parts:
        raise FileNotFoundError(f"no {pattern} under {Path(run_dir, 'wandb')}")
    return sorted(parts, key=lambda part: (part["start_time"], str(part["path"])))


def read_wandb_run(
    run_dir: Path, run_id: str | None = None, *, wait_s: float = 10.0
) -> dict[str, Any]:
    """The latest offline run file under ``run_dir/wandb`` (see ``read_wandb_parts``)."""
    return read_wandb_parts(run_dir, run_id, wait_s=wait_s)[-1]
