"""Log validation: every kind of bad row is quarantined with its reason, and rows in = kept + quarantined."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crops_ray.schema import LogColumns, LogSchemaError, check_file_schemas, table_files
from crops_ray.validate import ValidationConfig, check_batch, validate_logs
from pipelines.validate import main as validate_main

TS = 1_767_300_000


def _search(**overrides):
    row = dict(request_id="r1", user_id="u1", query="jaguar", ts=TS, video_id="v1", stage="clicked")
    row.update(overrides)
    return row


BAD_SEARCH_ROWS = [
    (_search(request_id=None), "missing_request_id"),
    (_search(user_id=None), "missing_user_id"),
    (_search(user_id="   "), "missing_user_id"),
    (_search(query=None), "missing_query"),
    (_search(query="  "), "empty_query"),
    (_search(ts=None), "missing_ts"),
    (_search(ts=12), "ts_out_of_range"),
    (_search(ts=TS * 1000), "ts_out_of_range"),  # milliseconds mistaken for seconds
    (_search(video_id=None), "missing_video_id"),
    (_search(video_id="v-unknown"), "unknown_video_id"),
    (_search(stage="bookmarked"), "unknown_stage"),
    (_search(stage=None), "missing_stage"),
]


@pytest.mark.parametrize(
    "row,reason",
    BAD_SEARCH_ROWS,
    ids=[r for _, r in BAD_SEARCH_ROWS] and [f"{i}-{r}" for i, (_, r) in enumerate(BAD_SEARCH_ROWS)],
)
def test_each_bad_search_row_gets_its_reason(row, reason):
    good = _search(request_id="r0")
    batch = pa.Table.from_pylist(
        [good, row], schema=pa.schema([(k, pa.int64() if k == "ts" else pa.string()) for k in good])
    )
    out = check_batch(batch, "search_log", ValidationConfig(), pa.array(["v1"]))
    assert out["reason"].to_pylist() == [None, reason]
    raw = json.loads(out["raw"][1].as_py())
    assert raw["request_id"] == row["request_id"]  # the original values travel with the quarantined row


def test_undecodable_text_and_binary_ids():
    batch = pa.table(
        {
            "video_id": pa.array([b"v1", b"v2", b"\xff"], pa.binary()),
            "text": pa.array([b"fine", b"caf\xe9", b"ok"], pa.binary()),
        }
    )
    out = check_batch(batch, "videos", ValidationConfig())
    assert out["reason"].to_pylist() == [None, "undecodable_text", "undecodable_video_id"]
    assert out["text"][0].as_py() == "fine"
    assert out.schema.field("video_id").type == pa.string()


def test_timestamps_strings_and_mapping():
    cfg = ValidationConfig(
        columns=LogColumns(
            columns={"query": "search_text", "ts": "event_time"}, stages={"click": "clicked", "impression": "exposed"}
        )
    )
    batch = pa.table(
        {
            "request_id": ["a", "b", "c", "d"],
            "user_id": ["u"] * 4,
            "search_text": ["q"] * 4,
            "event_time": pa.array([TS * 1000, TS * 1000, TS * 1000, None], pa.timestamp("ms")),
            "video_id": ["v1"] * 4,
            "stage": ["click", "impression", "clicked", "click"],
            "device": ["ios"] * 4,
        }
    )
    out = check_batch(batch, "search_log", cfg, pa.array(["v1"]))
    assert out["reason"].to_pylist() == [None, None, None, "missing_ts"]
    assert out["ts"].to_pylist()[:3] == [TS, TS, TS]
    assert out["stage"].to_pylist()[:3] == ["clicked", "exposed", "clicked"]
    assert out.column_names[:6] == ["request_id", "user_id", "query", "ts", "video_id", "stage"]
    assert "device" in out.column_names  # extra columns are kept

    strings = pa.table({"user_id": ["u", "u", "u"], "video_id": ["v1"] * 3, "ts": [str(TS), "yesterday", "1.5"]})
    out = check_batch(strings, "rec_log", ValidationConfig(), pa.array(["v1"]))
    assert out["reason"].to_pylist() == [None, "invalid_ts", "invalid_ts"]
    assert out["action"].null_count == 3  # the optional column is added, empty


def test_a_shard_mixing_every_kind_of_bad_value_is_quarantined_not_crashed():
    """Timestamps past int64 (string, float, uint64), a timestamp Python cannot hold, undecodable bytes in a row
    quarantined for another reason: every row ends kept or quarantined with its raw values."""
    n = 7
    batch = pa.table(
        {
            "request_id": ["r"] * n,
            "user_id": pa.array([b"u", b"\xff", b"u", b"u", b"u", b"u", b"u"], pa.binary()),
            "query": ["q"] * n,
            "ts": pa.array([str(TS), "99999999999999999999999", "1e300", "-1e30", str(TS), "nan", str(TS)]),
            "video_id": ["v1", "v1", "v1", "v1", "v-gone", "v1", "v1"],
            "stage": ["clicked"] * n,
        }
    )
    out = check_batch(batch, "search_log", ValidationConfig(), pa.array(["v1"]))
    assert out["reason"].to_pylist() == [
        None,
        "undecodable_user_id",
        "invalid_ts",
        "invalid_ts",
        "unknown_video_id",
        "invalid_ts",
        None,
    ]
    raw = [json.loads(r) for r in out["raw"].to_pylist() if r is not None]
    assert (
        len(raw) == 5
        and raw[0]["user_id"] == "\\xff"
        and raw[0]["ts"] == "99999999999999999999999"
        and raw[1]["ts"] == "1e300"
    )
    big = pa.table({"user_id": ["u"] * 3, "video_id": ["v1"] * 3, "ts": pa.array([2**64 - 1, TS, 10**15], pa.uint64())})
    assert check_batch(big, "rec_log", ValidationConfig(), pa.array(["v1"]))["reason"].to_pylist() == [
        "invalid_ts",
        None,
        "ts_out_of_range",
    ]
    far = pa.table({"user_id": ["u"] * 2, "video_id": ["v1"] * 2, "ts": pa.array([10**15, TS], pa.timestamp("s"))})
    out = check_batch(far, "rec_log", ValidationConfig(), pa.array(["v1"]))
    assert out["reason"].to_pylist() == ["ts_out_of_range", None] and json.loads(out["raw"][0].as_py())["ts"] == 10**15


def _invalid_utf8(values, typ=pa.string()):
    """A string-typed column as a broken producer writes it: its bytes are not checked, some are not UTF-8."""
    binary = pa.large_binary() if typ == pa.large_string() else pa.binary()
    return pa.array(values, binary).view(typ)


def test_invalid_utf8_in_string_columns_is_a_row_problem_with_readable_raw():
    """String columns (not binary) holding bytes that are not UTF-8, in rows quarantined for that or for another
    reason: each row gets a reason, its raw is JSON with the bytes shown escaped, nothing raises."""
    batch = pa.table(
        {
            "request_id": ["r0", "r1", None, "r3", "r4"],
            "user_id": _invalid_utf8([b"u", b"\xff", b"u", b"u", b"u"]),
            "query": _invalid_utf8([b"q", b"q", b"caf\xe9", b"q", b"q"], pa.large_string()),
            "ts": _invalid_utf8([str(TS).encode(), str(TS).encode(), str(TS).encode(), b"17\xff", str(TS).encode()]),
            "video_id": _invalid_utf8([b"v1", b"v1", b"v1", b"v1", b"v\xfe"]).dictionary_encode(),
            "stage": ["clicked"] * 5,
        }
    )
    out = check_batch(batch, "search_log", ValidationConfig(), pa.array(["v1"]))
    assert out["reason"].to_pylist() == [
        None,
        "undecodable_user_id",
        "missing_request_id",  # the first reason wins; the bad query still travels in raw
        "invalid_ts",
        "undecodable_video_id",
    ]
    raw = [json.loads(r) for r in out["raw"].to_pylist()[1:]]
    assert raw[0]["user_id"] == "\\xff" and raw[1]["query"] == "caf\\xe9" and raw[1]["request_id"] is None
    assert raw[2]["ts"] == "17\\xff" and raw[3]["video_id"] == "v\\xfe"
    assert out.num_rows == batch.num_rows and out.validate(full=True) is None  # every output string is UTF-8


def test_nested_columns_and_mapped_name_collisions_are_whole_file_errors(tmp_path):
    path = str(tmp_path / "part-0.parquet")
    pq.write_table(pa.table({**{k: [v] for k, v in _search().items()}, "query": pa.array([["jaguar", "cub"]])}), path)
    with pytest.raises(LogSchemaError, match=r"part-0\.parquet: column 'query' of table 'search_log' is a list"):
        check_file_schemas([path], "search_log", LogColumns())
    pq.write_table(pa.table({**{k: [v] for k, v in _search().items()}, "uid": ["u9"]}), path)  # maps uid -> user_id
    with pytest.raises(LogSchemaError, match="'user_id' collides with the contract column that is mapped from 'uid'"):
        check_file_schemas([path], "search_log", LogColumns(columns={"user_id": "uid"}))


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown contract columns"):
        LogColumns(columns={"qury": "q"})
    with pytest.raises(ValueError, match="unknown stages"):
        LogColumns(stages={"click": "clicky"})


def _write_logs(root, videos, search, rec, single_files=False):
    for name, rows in (("videos", videos), ("search_log", search), ("rec_log", rec)):
        t = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
        if single_files:
            pq.write_table(t, f"{root}/{name}.parquet")
        else:
            os.makedirs(f"{root}/{name}", exist_ok=True)
            half = t.num_rows // 2
            pq.write_table(t.slice(0, half), f"{root}/{name}/part-0.parquet")
            pq.write_table(t.slice(half), f"{root}/{name}/part-1.parquet")


@pytest.mark.ray
def test_validate_logs_conserves_rows(tmp_path, ray_local):
    videos = pa.table(
        {
            "video_id": ["v1", "v2", "v3", "v2", None, "v5"],
            "text": pa.array(
                [b"jaguar at night", b"python tips", b"mustang", b"python tips again", b"orphan", b"\xff\xfe"],
                pa.binary(),
            ),
        }
    )
    search = [_search(request_id=f"g{i}") for i in range(7)] + [row for row, _ in BAD_SEARCH_ROWS]
    search = pa.Table.from_pylist(
        search, schema=pa.schema([(k, pa.int64() if k == "ts" else pa.string()) for k in _search()])
    )
    search = search.append_column("device", pa.array(["ios"] * search.num_rows))
    rec = pa.table(
        {
            "user_id": _invalid_utf8([b"u1", b"u1", None, b"u2", b"u\xff"]),  # a string column, written unchecked
            "video_id": ["v1", "v9", "v2", "v3", "v1"],
            "ts": [TS, TS, TS, 3, TS],
            "action": ["watch"] * 5,
        }
    )
    _write_logs(tmp_path / "logs", videos, search, rec) if os.makedirs(tmp_path / "logs") is None else None
    summaries = validate_logs(str(tmp_path / "logs"), str(tmp_path / "out"), ValidationConfig())

    v, s, r = summaries["videos"], summaries["search_log"], summaries["rec_log"]
    assert (v.rows_in, v.kept, v.quarantined) == (6, 3, 3)
    assert v.reasons == {"duplicate_video_id": 1, "missing_video_id": 1, "undecodable_text": 1}
    assert (s.rows_in, s.kept, s.quarantined) == (search.num_rows, 7, len(BAD_SEARCH_ROWS))
    expected = {}
    for _, reason in BAD_SEARCH_ROWS:
        expected[reason] = expected.get(reason, 0) + 1
    assert s.reasons == dict(sorted(expected.items()))
    assert r.reasons == {"missing_user_id": 1, "ts_out_of_range": 1, "undecodable_user_id": 1, "unknown_video_id": 1}
    for summary in summaries.values():
        assert summary.conserved

    out = tmp_path / "out"
    kept = pq.read_table(out / "search_log")
    assert kept.column_names == ["request_id", "user_id", "query", "ts", "video_id", "stage", "device"]
    assert kept.schema.field("ts").type == pa.int64()
    quarantine = pq.read_table(out / "quarantine" / "search_log")
    assert set(quarantine.column_names) >= {"reason", "raw", "request_id"}
    bad_rec = pq.read_table(out / "quarantine" / "rec_log").to_pylist()
    assert [json.loads(x["raw"])["user_id"] for x in bad_rec if x["reason"] == "undecodable_user_id"] == ["u\\xff"]
    kept_videos = pq.read_table(out / "videos").to_pylist()
    assert [(x["video_id"], x["text"]) for x in kept_videos] == [
        ("v1", "jaguar at night"),
        ("v2", "python tips"),
        ("v3", "mustang"),
    ]
    report = json.loads((out / "validation.json").read_text())
    assert report["tables"]["search_log"]["quarantined"] == len(BAD_SEARCH_ROWS)
    assert not any(p.name.startswith("out.tmp") for p in tmp_path.iterdir())  # staging folder renamed away

    # The CLI prints the table and rerunning into the same --out replaces it.
    validate_main(["--logs", str(tmp_path / "logs"), "--out", str(out)])
    assert pq.read_table(out / "search_log").num_rows == 7


@pytest.mark.ray
def test_a_search_log_and_a_feed_log_that_spell_their_columns_differently(tmp_path, ray_local, capsys):
    """The search team's log says event_time and search_text, the feed team's says ts_ms: one global map cannot
    read both (validation stops on the feed log, naming its column); a map per table over the global one can."""
    import yaml

    logs = tmp_path / "logs"
    logs.mkdir()
    videos = pa.table({"video_id": ["v1", "v2"], "text": ["jaguar at night", "python tips"]})
    search = pa.table(
        {
            "request_id": ["r1", "r2"],
            "user_id": ["u1", "u2"],
            "search_text": ["jaguar", "python"],
            "event_time": [TS, TS + 5],
            "video_id": ["v1", "v2"],
            "stage": ["clicked", "exposed"],
        }
    )
    rec = pa.table({"user_id": ["u1", "u1", "u2"], "video_id": ["v2", "v1", "v9"], "ts_ms": [TS, TS + 1, TS + 2]})
    _write_logs(logs, videos, search, rec)
    global_only = tmp_path / "global.yaml"
    global_only.write_text(yaml.safe_dump({"columns": {"columns": {"query": "search_text", "ts": "event_time"}}}))
    with pytest.raises(SystemExit) as exit_:
        validate_main(["--logs", str(logs), "--out", str(tmp_path / "o1"), "--config", str(global_only)])
    assert exit_.value.code == 2 and "'event_time' (mapped from 'ts') of table 'rec_log'" in capsys.readouterr().err

    per_table = tmp_path / "tables.yaml"
    per_table.write_text(
        yaml.safe_dump(
            {
                "columns": {
                    "columns": {"query": "search_text"},
                    "tables": {"search_log": {"ts": "event_time"}, "rec_log": {"ts": "ts_ms"}},
                }
            }
        )
    )
    summaries = validate_main(["--logs", str(logs), "--out", str(tmp_path / "o2"), "--config", str(per_table)])
    assert [(summaries[t].kept, summaries[t].quarantined) for t in ("search_log", "rec_log")] == [(2, 0), (2, 1)]
    kept_rec = pq.read_table(tmp_path / "o2" / "rec_log")
    assert kept_rec.column_names[:3] == ["user_id", "video_id", "ts"] and sorted(kept_rec["ts"].to_pylist()) == [
        TS,
        TS + 1,
    ]
    assert pq.read_table(tmp_path / "o2" / "search_log")["query"].to_pylist() == ["jaguar", "python"]
    with pytest.raises(ValueError, match="tables.rec_log maps columns \\['query'\\]"):
        LogColumns(tables={"rec_log": {"query": "q"}})
    with pytest.raises(ValueError, match="unknown tables \\['feed'\\]"):
        LogColumns(tables={"feed": {"ts": "t"}})


def test_whole_file_errors_fail_fast(tmp_path):
    root = tmp_path / "logs"
    os.makedirs(root)
    good = [_search()]
    _write_logs(
        root, [{"video_id": "v1", "text": "t"}], good, [{"user_id": "u", "video_id": "v1", "ts": TS}], single_files=True
    )
    assert table_files(str(root), "videos") == [f"{root}/videos.parquet"]

    os.makedirs(root / "search_log")
    os.remove(root / "search_log.parquet")
    pq.write_table(pa.Table.from_pylist(good), root / "search_log" / "part-0.parquet")
    (root / "search_log" / "notes.csv").write_text("query,video\njaguar,v1\n")
    (root / "search_log" / "_SUCCESS").write_text("")
    files = table_files(str(root), "search_log")
    assert [os.path.basename(f) for f in files] == ["notes.csv", "part-0.parquet"]
    with pytest.raises(LogSchemaError, match=r"notes\.csv: not a readable parquet file"):
        check_file_schemas(files, "search_log", LogColumns())

    os.remove(root / "search_log" / "notes.csv")
    no_stage = {k: v for k, v in _search().items() if k != "stage"}
    pq.write_table(pa.Table.from_pylist([no_stage]), root / "search_log" / "part-1.parquet")
    with pytest.raises(LogSchemaError, match=r"part-1\.parquet: required column 'stage'"):
        check_file_schemas(table_files(str(root), "search_log"), "search_log", LogColumns())
    with pytest.raises(LogSchemaError, match=r"'search_text' \(mapped from 'query'\)"):
        check_file_schemas(
            table_files(str(root), "search_log")[:1], "search_log", LogColumns(columns={"query": "search_text"})
        )
    with pytest.raises(LogSchemaError, match="table 'rec_log' not found"):
        table_files(str(tmp_path), "rec_log")
    # The CLI exits 2 with the message, before starting Ray.
    with pytest.raises(SystemExit) as exit_info:
        validate_main(["--logs", str(root), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
