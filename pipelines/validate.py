"""Validate logs against the data contract; bad rows go to quarantine with a reason, nothing is lost.

    python pipelines/validate.py --logs runs/world --out runs/validated [--config logs.yaml]

The config YAML may map column and stage names (``columns: {query: search_text}``,
``stages: {click: clicked}``) and the sane ``ts`` range. Writes OUT/{videos,search_log,rec_log}/,
OUT/quarantine/<table>/ and OUT/validation.json, and prints rows in / kept / quarantined per reason.
Exits 2 with a message naming the file and column when a whole file breaks the contract.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, pipeline_config
from crops_ray.schema import LogSchemaError
from crops_ray.storage import OutputError
from crops_ray.validate import ValidationConfig, format_summary, validate_logs


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--logs", required=True, help="log folder: videos/, search_log/, rec_log/ (folders or .parquet files)"
    )
    p.add_argument("--out", required=True, help="output folder for validated logs (replaced atomically)")
    add_config_args(p, "ValidationConfig")
    p.add_argument("--ts-min", type=int)
    p.add_argument("--ts-max", type=int)
    args = p.parse_args(argv)
    cfg = pipeline_config(p, ValidationConfig, args, {"ts_min": args.ts_min, "ts_max": args.ts_max})
    try:
        summaries = validate_logs(args.logs, args.out, cfg)
    except (LogSchemaError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summaries))
    print(f"validated logs: {args.out}  (quarantine: {args.out}/quarantine/, summary: {args.out}/validation.json)")
    return summaries


if __name__ == "__main__":
    main()
