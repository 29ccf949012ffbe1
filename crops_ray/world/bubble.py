"""How strong the world's filter bubble is, per ambiguous word: a table and a chart for the demo report.

For the requests that typed a bare ambiguous word, the share of minority-sense videos among what search
showed (clicked or exposed), among what the same users clicked after reformulating within the window, and
among those users' recommendation-feed interactions with videos of that word.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from crops_ray import schema as S
from crops_ray.sources import SHOWN_STAGES, Source


def bubble_table(world: str, window_s: int = 90):
    """A pandas frame, one row per ambiguous word, from the logs and ``eval/video_truth.parquet``."""
    truth = pq.read_table(f"{world}/eval/video_truth.parquet", columns=["video_id", "word", "dominant"]).to_pandas()
    words = set(truth.loc[truth["word"] != "", "word"])
    search = pq.read_table(S.table_files(world, "search_log")).to_pandas()
    search = search[["request_id", "user_id", "query", "ts", "video_id", "stage"]].merge(truth, on="video_id")
    rec = (
        pq.read_table(S.table_files(world, "rec_log"), columns=["user_id", "video_id"])
        .to_pandas()
        .merge(truth, on="video_id")
    )

    bare = search[search["query"].isin(words) & (search["word"] == search["query"])]
    shown = bare[bare["stage"].isin(SHOWN_STAGES)]
    requests = (
        search[["request_id", "user_id", "query", "ts"]].drop_duplicates("request_id").sort_values(["user_id", "ts"])
    )
    nxt = requests.groupby("user_id").shift(-1)
    reform = requests.assign(next_request=nxt["request_id"], next_query=nxt["query"], gap=nxt["ts"] - requests["ts"])
    reform = reform[
        reform["query"].isin(words) & (reform["gap"] <= window_s) & (reform["next_query"] != reform["query"])
    ]
    clicks = search[search["stage"] == Source.CLICKED][["request_id", "video_id", "word", "dominant"]]
    after = reform.merge(clicks, left_on="next_request", right_on="request_id")
    after = after[after["word"] == after["query"]]
    feed = rec.merge(bare[["user_id", "query"]].drop_duplicates(), on="user_id")
    feed = feed[feed["word"] == feed["query"]]

    import pandas as pd

    rows = []
    for word in sorted(words):

        def minority(frame, col="query"):
            part = frame[frame[col] == word]
            return float((~part["dominant"]).mean()) if len(part) else float("nan")

        rows.append(
            {
                "word": word,
                "requests": int(bare.loc[bare["query"] == word, "request_id"].nunique()),
                "minority_in_search_results": minority(shown),
                "minority_in_reformulation_clicks": minority(after),
                "minority_in_rec_feed": minority(feed),
            }
        )
    return pd.DataFrame(rows)


def plot_bubble(table, path: str) -> None:
    import numpy as np

    from crops_ray.report.plots import pyplot

    plt = pyplot()

    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(10, 4))
    for i, (col, label) in enumerate(
        [
            ("minority_in_search_results", "search results (clicked + exposed)"),
            ("minority_in_reformulation_clicks", "clicks after a reformulation <= 90 s"),
            ("minority_in_rec_feed", "the same users' rec feed"),
        ]
    ):
        ax.bar(x + (i - 1) * 0.27, table[col].fillna(0), width=0.27, label=label)
    ax.set_xticks(x, table["word"], rotation=30)
    ax.set_ylabel("share of minority-sense videos")
    ax.set_title("The filter bubble: minority senses of ambiguous queries, by where they appear")
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
