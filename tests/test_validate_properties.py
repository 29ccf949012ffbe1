"""Validation's promise under generated inputs: whatever a producer wrote (nulls, bytes that are not UTF-8 in string
columns, extreme and odd timestamps, wrong types, duplicate ids, empty strings, huge values), the row rules never
raise, every row is kept or quarantined, a quarantined row's ``raw`` is strict JSON, and a kept row honours the data
contract. Function level (the row rules, no Ray), each generated batch first written to parquet and read back, as
the Ray Data job reads it."""

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crops_ray import schema as S
from crops_ray.validate import ValidationConfig, _kept, _quarantined
from crops_ray.validate_rules import RAW_COLUMN, check_batch, quarantine_later_copies

CFG = ValidationConfig()
KNOWN_VIDEOS = pa.array(["v1", "v2"])
TS = 1_767_300_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
HUGE_TEXT = "jaguar " * 20_000
# A few seconds each on a quiet 2-core machine; no example database written into the checkout.
PROPERTIES = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Values a log column holds when all is well, so that generated batches have good rows beside the bad ones.
GOOD_TEXT = ["v1", "v2", "u1", "jaguar", "like", *S.STAGES]
TEXT = st.one_of(
    st.sampled_from(GOOD_TEXT),
    st.sampled_from(["", " ", "\t\n", "v-unknown", "bookmarked", "\x00", "é" * 3, HUGE_TEXT]),
    st.text(max_size=12),
)
SECONDS = st.one_of(
    st.sampled_from([TS, CFG.ts_min, CFG.ts_min - 1, CFG.ts_max, CFG.ts_max + 1, 0, -1, INT64_MIN, INT64_MAX]),
    st.integers(INT64_MIN, INT64_MAX),
)
NUMBER_TEXT = st.one_of(
    SECONDS.map(str),
    st.sampled_from(["1e400", "-0", "0x10", " 1767300000 ", "1_767_300_000", "1767300000.0", "1.5", "nan", "-inf"]),
    st.floats().map(repr),
)
TIMEZONES = [None, "UTC", "Asia/Kolkata", "+05:30", "-12:00"]


def _with_nulls(values):
    return st.one_of(st.none(), values)


@st.composite
def column(draw, n: int, ts: bool) -> pa.Array:  # long: one branch per kind of column a producer may write
    """One column of ``n`` rows in a type a log column may have (right or wrong for the contract), with nulls."""
    kinds = ["string", "invalid_utf8", "binary", "large_string", "dictionary", "string_view", "fixed_size_binary"]
    kinds += ["int64", "uint64", "float64", "bool", "timestamp", "date32", "duration", "decimal", "null"]
    kind = draw(st.sampled_from(kinds))

    def values(strategy):
        return draw(st.lists(_with_nulls(strategy), min_size=n, max_size=n))

    text = NUMBER_TEXT if ts else TEXT
    if kind == "string":
        return pa.array(values(text), pa.string())
    if kind == "invalid_utf8":  # a string column whose bytes were never checked
        return pa.array(values(st.one_of(st.binary(max_size=8), text.map(str.encode))), pa.binary()).view(pa.string())
    if kind == "binary":
        return pa.array(values(st.one_of(st.binary(max_size=8), text.map(str.encode))), pa.binary())
    if kind == "large_string":
        return pa.array(values(st.binary(max_size=8)), pa.large_binary()).view(pa.large_string())
    if kind == "dictionary":
        return (
            pa.array(values(st.one_of(st.binary(max_size=4), text.map(str.encode))), pa.binary())
            .view(pa.string())
            .dictionary_encode()
        )
    if kind == "string_view":
        return pa.array(values(text), pa.string_view())
    if kind == "fixed_size_binary":
        return pa.array(values(st.binary(min_size=3, max_size=3)), pa.binary(3))
    if kind == "int64":
        return pa.array(values(SECONDS), pa.int64())
    if kind == "uint64":
        return pa.array(values(st.one_of(st.integers(0, 2**64 - 1), st.just(TS))), pa.uint64())
    if kind == "float64":
        return pa.array(values(st.one_of(st.floats(), st.just(float(TS)))), pa.float64())
    if kind == "bool":
        return pa.array(values(st.booleans()), pa.bool_())
    if kind == "timestamp":
        unit, tz = draw(st.sampled_from(["s", "ms", "us", "ns"])), draw(st.sampled_from(TIMEZONES))
        # parquet stores seconds as milliseconds: a producer can write only the seconds that fit those
        stored = SECONDS.map(lambda v: max(-(INT64_MAX // 1000), min(v, INT64_MAX // 1000))) if unit == "s" else SECONDS
        return pa.array(values(stored), pa.int64()).cast(pa.timestamp(unit, tz=tz))
    if kind == "date32":
        return pa.array(values(st.integers(-(2**31), 2**31 - 1)), pa.int32()).cast(pa.date32())
    if kind == "duration":
        return pa.array(values(SECONDS), pa.int64()).cast(pa.duration("s"))
    if kind == "decimal":
        amounts = st.decimals(min_value=-(10**30), max_value=10**30, allow_nan=False, places=2)
        return pa.array(values(amounts), pa.decimal128(38, 2))
    return pa.nulls(n)


@st.composite
def log_batch(draw, table: str) -> pa.Table:
    """A batch of ``table`` as a broken producer may write it: every contract column in some type, an optional
    column sometimes absent, sometimes an extra column; written to parquet (row groups of half the batch, so the
    columns come back in chunks) and read back."""
    n = draw(st.integers(1, 8))
    columns = {}
    for name in S.SCHEMAS[table].names:
        if name in S.OPTIONAL_COLUMNS[table] and draw(st.booleans()):
            continue
        columns[name] = draw(column(n, ts=name == "ts"))
    if draw(st.booleans()):
        columns["device"] = draw(column(n, ts=False))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, row_group_size=max(1, n // 2))
    return pq.read_table(pa.BufferReader(sink.getvalue()))


def _strict_json(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _check_contract(batch: pa.Table, out: pa.Table, table: str) -> None:
    """Rows in = kept + quarantined; quarantined rows carry a known reason and strict-JSON raw; kept rows hold the
    contract's types and values."""
    target = S.SCHEMAS[table]
    kept, quarantined = _kept(out), _quarantined(out)
    assert out.num_rows == batch.num_rows == kept.num_rows + quarantined.num_rows
    assert out.select([*target.names, S.QUARANTINE_REASON, RAW_COLUMN]).validate(full=True) is None  # UTF-8
    for name in target.names:
        assert out.schema.field(name).type == target.field(name).type, name

    reasons = {"invalid_ts", "empty_query", "ts_out_of_range", "unknown_stage", "unknown_video_id"}
    reasons |= {f"{why}_{name}" for name in target.names for why in ("missing", "undecodable")}
    present = [name for name in target.names if name in batch.column_names]
    for row in quarantined.select([S.QUARANTINE_REASON, RAW_COLUMN]).to_pylist():
        assert row[S.QUARANTINE_REASON] in reasons, row
        raw = _strict_json(row[RAW_COLUMN])
        assert list(raw) == present

    required = [name for name in target.names if name not in S.OPTIONAL_COLUMNS[table]]
    for name in required:
        assert kept[name].null_count == 0, name
        if name != "ts":
            assert "" not in pc.utf8_trim_whitespace(kept[name]).to_pylist(), name
    if "ts" in target.names and kept.num_rows:
        assert CFG.ts_min <= pc.min(kept["ts"]).as_py() and pc.max(kept["ts"]).as_py() <= CFG.ts_max
    if "stage" in target.names:
        assert set(kept["stage"].to_pylist()) <= set(S.STAGES)
    if table != "videos":
        assert set(kept["video_id"].to_pylist()) <= set(KNOWN_VIDEOS.to_pylist())


@settings(max_examples=100, **PROPERTIES)
@given(data=st.data(), table=st.sampled_from(["search_log", "rec_log"]))
def test_any_event_batch_is_kept_or_quarantined_never_crashed(data, table):
    batch = data.draw(log_batch(table))
    out = check_batch(batch, table, CFG, KNOWN_VIDEOS)
    _check_contract(batch, out, table)


@settings(max_examples=50, **PROPERTIES)
@given(data=st.data(), batches=st.integers(1, 4))
def test_videos_keep_the_first_copy_of_an_id_across_batches(data, batches):
    """Duplicate ids, within and across batches: the first good copy is kept, every later one is quarantined as a
    duplicate with its raw values, and rows in = kept + quarantined over the whole table."""
    seen: set[str] = set()
    kept_ids, first_good, rows_in, kept_rows, quarantined_rows = [], [], 0, 0, 0
    for _ in range(batches):
        batch = data.draw(log_batch("videos"))
        checked = check_batch(batch, "videos", CFG)
        _check_contract(batch, checked, "videos")
        good = [
            v for v, why in zip(checked["video_id"].to_pylist(), checked[S.QUARANTINE_REASON].to_pylist()) if not why
        ]
        first_good += [v for i, v in enumerate(good) if v not in first_good and v not in good[:i]]
        out, kept = quarantine_later_copies(checked, seen)
        kept_ids += kept
        rows_in += batch.num_rows
        kept_rows, quarantined_rows = kept_rows + _kept(out).num_rows, quarantined_rows + _quarantined(out).num_rows
        assert _kept(out)["video_id"].to_pylist() == kept
        for before, row in zip(
            checked[S.QUARANTINE_REASON].to_pylist(),
            out.select(["video_id", S.QUARANTINE_REASON, RAW_COLUMN]).to_pylist(),
        ):
            if before is None and row[S.QUARANTINE_REASON] is not None:  # quarantined here: a later copy
                assert row[S.QUARANTINE_REASON] == "duplicate_video_id"
                assert _strict_json(row[RAW_COLUMN])["video_id"] == row["video_id"]
    assert rows_in == kept_rows + quarantined_rows
    assert kept_ids == first_good and len(set(kept_ids)) == len(kept_ids)
