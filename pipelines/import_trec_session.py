"""Turn the TREC 2013 Session Track log into the log contract (sessions as users, clicks as `clicked`).

    python pipelines/import_trec_session.py --out runs/trec            # the copy under ../shared/data
    python pipelines/import_trec_session.py --xml PATH/sessiontrack2013.xml --out runs/trec
    python pipelines/validate.py --logs runs/trec --out runs/trec-validated
    python pipelines/build_data.py --logs runs/trec-validated --out runs/trec-data --sources p1

Writes OUT/videos/ (result documents: title and snippet), OUT/search_log/ (shown results as `exposed`,
clicked ones as `clicked`) and an empty OUT/rec_log/. The data stays where it is; only OUT is written.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.adapters.trec_session import import_trec_session

DEFAULT_XML = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "data",
    "trec-session-2013",
    "sessiontrack2013.xml",
)


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xml", default=DEFAULT_XML, help="sessiontrack2013.xml (default: the copy in ../shared/data)")
    p.add_argument("--out", required=True, help="output log folder (replaced)")
    p.add_argument(
        "--min-dwell-s", type=float, default=0.0, help="count a click only if its dwell reached this many seconds"
    )
    args = p.parse_args(argv)
    try:
        stats = import_trec_session(os.path.normpath(args.xml), args.out, args.min_dwell_s)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print("| statistic | value |\n|---|---:|")
    for k, v in vars(stats).items():
        if k != "topics":
            print(f"| {k.replace('_', ' ')} | {v:,} |")
    print(f"| topics | {len(stats.topics)} |")
    print(f"logs: {args.out}")
    return stats


if __name__ == "__main__":
    main()
