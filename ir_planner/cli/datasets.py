"""``ir-planner datasets``: list, fetch and verify the public real datasets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ir_planner.cli.common import print_json, print_table, progress_printer
from ir_planner.core.errors import DatasetError
from ir_planner.sample.datasets import (
    DATA_DIR_ENV,
    default_cache_dir,
    fetch_dataset,
    get_dataset,
    load_registry,
    verify_dataset,
)

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``datasets`` command."""
    parser = subparsers.add_parser(
        "datasets",
        help="list, download and verify public real test datasets",
        description="Public third-party datasets (real CT, DICOM SEG, gantry-tilt series) with "
        "licences, URLs and SHA-256. Files are cached under --cache-dir, else "
        f"${DATA_DIR_ENV}, else ~/.cache/ir-planner/data.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=None,
                        help=f"dataset cache folder (default ${DATA_DIR_ENV} or "
                        "~/.cache/ir-planner/data)")
    common.add_argument("--registry", type=Path, default=None,
                        help="use another registry JSON file (mirrors, testing)")
    sub = parser.add_subparsers(dest="datasets_action", metavar="ACTION", required=True)
    p_list = sub.add_parser("list", parents=[common], help="list the datasets and their state")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_fetch = sub.add_parser("fetch", parents=[common],
                             help="download a dataset (verified by SHA-256)")
    p_fetch.add_argument("name", help="dataset name (see `ir-planner datasets list`)")
    p_fetch.add_argument("--timeout", type=float, default=30.0,
                         help="network timeout per request in seconds (default 30)")
    p_verify = sub.add_parser("verify", parents=[common],
                              help="check a dataset's files in the cache (offline)")
    p_verify.add_argument("name", help="dataset name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ir-planner datasets ACTION``."""
    registry = load_registry(args.registry)
    cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    if args.datasets_action == "list":
        rows = []
        for ds in registry.values():
            states = verify_dataset(ds, cache)
            present = sum(s.ok for s in states)
            rows.append({"name": ds.name, "files": len(ds.files),
                         "size_mb": round(ds.size_bytes / 1e6, 2),
                         "verified_files": present, "licence": ds.licence,
                         "homepage": ds.homepage, "description": ds.description})
        if args.json:
            print_json({"cache_dir": str(cache), "datasets": rows})
        else:
            print(f"cache: {cache}")
            print_table(["name", "files", "size (MB)", "in cache", "licence"],
                        [[r["name"], r["files"], r["size_mb"],
                          f"{r['verified_files']}/{r['files']}", r["licence"].split(" (")[0]]
                         for r in rows])
        return 0
    ds = get_dataset(args.name, registry)
    progress = progress_printer(args)
    if args.datasets_action == "fetch":
        paths = fetch_dataset(ds, cache, timeout_s=args.timeout, progress=progress)
        print(f"{ds.name}: {len(paths)} files verified in {cache}")
        return 0
    states = verify_dataset(ds, cache, progress=progress)
    bad = [s for s in states if not s.ok]
    for s in bad:
        print(f"{s.state:>10}  {s.file.path}  {s.detail}")
    if bad:
        raise DatasetError(f"{ds.name}: {len(bad)} of {len(states)} files missing or wrong in "
                           f"{cache}; run `ir-planner datasets fetch {ds.name}`")
    print(f"{ds.name}: all {len(states)} files verified in {cache}")
    return 0
