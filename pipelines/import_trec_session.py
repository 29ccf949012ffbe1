"""Turn the TREC 2013 Session Track log into the log contract (sessions as users, clicks as `clicked`).

    python pipelines/import_trec_session.py --out runs/trec            # the copy under ../shared/data
    python pipelines/import_trec_session.py --xml PATH/sessiontrack2013.xml --out runs/trec
    python pipelines/demo.py --logs runs/trec --out runs/trec-demo     # Table 1 on the real log

Writes OUT/videos/ (result documents: title and snippet), OUT/search_log/ (shown results as `exposed`,
clicked ones as `clicked`), an empty OUT/rec_log/, and OUT/eval/ from the held-out sessions (--eval-fraction,
default 0.3: their clicks, clicks after a reformulation, dwell-graded clicks; the track's judgments are not in
this copy) with OUT/import.json (the split's sizes and what the numbers can say). The data stays where it is;
only OUT is written.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.adapters.trec_session import import_trec_session
from crops_ray.report.markdown import key_value_table

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
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.3,
        help="share of sessions held out as eval/ (0: every session stays in the log, no eval/)",
    )
    p.add_argument("--seed", type=int, default=0, help="which sessions are held out")
    p.add_argument("--max-sessions", type=int, help="only the first N sessions (a slice)")
    args = p.parse_args(argv)
    try:
        stats = import_trec_session(
            os.path.normpath(args.xml), args.out, args.min_dwell_s, args.eval_fraction, args.seed, args.max_sessions
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    rows = [(k.replace("_", " "), v) for k, v in vars(stats).items() if k not in ("topics", "split")]
    print(key_value_table(rows + [("topics", len(stats.topics))]))
    split = stats.split
    if split:
        sessions = split["sessions"]["test"] + split["sessions"]["train"]
        print(
            f"held out {split['sessions']['test']} of {sessions} sessions "
            f"as eval/: CT {split['eval_pairs']['ct']} pairs / {split['eval_queries']['ct']} queries, QR "
            f"{split['eval_pairs']['qr']} / {split['eval_queries']['qr']}, qrels {split['eval_pairs']['qrels']}"
        )
    print(f"logs: {args.out}")
    return stats


if __name__ == "__main__":
    main()
