"""The TREC 2013 Session Track adapter: XML -> the log contract, and the engine's reformulation miner on the real
log.
"""

import os

import pyarrow.parquet as pq
import pytest

from crops_ray import schema as S
from crops_ray.adapters.trec_session import BASE_TS, DAY, clean_text, import_trec_session, read_sessions
from tests.conftest import SHARED

TREC_XML = os.path.join(SHARED, "data", "trec-session-2013", "sessiontrack2013.xml")

SMALL_XML = """<sessiontrack2013>
 <session num="7" starttime="0">
  <topic num="3"><desc>Find facts about jaguars.</desc></topic>
  <interaction num="1" starttime="10.5">
   <query>jaguar</query>
   <results>
    <result rank="1"><url>u</url><clueweb12id>doc-car</clueweb12id>
     <title>Jaguar XK &amp;mdash; review</title><snippet>The CittÃ\xa0 car</snippet></result>
    <result rank="2"><url>u</url><clueweb12id>doc-cat</clueweb12id>
     <title>Jaguar (Panthera onca)</title><snippet>Big cat of the Americas</snippet></result>
    <result rank="3"><url>u</url><clueweb12id></clueweb12id><title>no id</title><snippet>x</snippet></result>
   </results>
  </interaction>
  <interaction num="2" starttime="50">
   <query>jaguar   animal</query>
   <results>
    <result rank="1"><url>u</url><clueweb12id>doc-cat</clueweb12id>
     <title>Jaguar (Panthera onca)</title><snippet>Big cat of the Americas</snippet></result>
    <result rank="2"><url>u</url><clueweb12id>doc-cub</clueweb12id>
     <title>Jaguar cubs</title><snippet>Cubs learn to swim</snippet></result>
   </results>
   <clicked>
    <click num="1" starttime="60" endtime="NA"><rank>2</rank></click>
    <click num="2" starttime="70" endtime="75"><rank>1</rank></click>
    <click num="3" starttime="80" endtime="90"><rank>9</rank></click>
   </clicked>
  </interaction>
  <currentquery starttime="99"><query>jaguar habitat</query></currentquery>
 </session>
</sessiontrack2013>
"""


def test_xml_maps_to_the_log_contract(tmp_path):
    xml = tmp_path / "s.xml"
    xml.write_text(SMALL_XML, encoding="utf-8")
    videos, search, stats = read_sessions(str(xml))
    assert videos.schema == S.VIDEOS_SCHEMA and search.schema == S.SEARCH_LOG_SCHEMA
    docs = dict(zip(videos["video_id"].to_pylist(), videos["text"].to_pylist()))
    assert docs["doc-car"] == "Jaguar XK — review. The Città car"  # entities decoded twice, mojibake repaired
    rows = {(r["request_id"], r["video_id"]): r for r in search.to_pylist()}
    assert {k: r["stage"] for k, r in rows.items()} == {
        ("trec-s7-i1", "doc-car"): "exposed",
        ("trec-s7-i1", "doc-cat"): "exposed",
        ("trec-s7-i2", "doc-cat"): "clicked",
        ("trec-s7-i2", "doc-cub"): "clicked",
    }
    r = rows[("trec-s7-i2", "doc-cub")]
    assert (r["user_id"], r["query"], r["ts"]) == ("trec-s7", "jaguar animal", BASE_TS + 7 * DAY + 50)
    assert rows[("trec-s7-i1", "doc-car")]["ts"] == BASE_TS + 7 * DAY + 10
    assert (stats.results_skipped, stats.clicks, stats.clicks_skipped, stats.current_queries_skipped) == (1, 3, 1, 1)
    # a dwell threshold drops the click whose end time is "NA" and the 5 s one
    _, strict, _ = read_sessions(str(xml), min_dwell_s=8)
    assert [r["stage"] for r in strict.to_pylist() if r["request_id"] == "trec-s7-i2"] == ["exposed", "exposed"]
    out = tmp_path / "logs"
    import_trec_session(str(xml), str(out))
    assert (
        S.count_rows(S.table_files(str(out), "rec_log")) == 0
        and S.count_rows(S.table_files(str(out), "search_log")) == 4
    )


def test_bad_input_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_sessions(str(tmp_path / "absent.xml"))
    (tmp_path / "broken.xml").write_text("<sessiontrack2013><session>")
    with pytest.raises(ValueError, match="not well-formed"):
        read_sessions(str(tmp_path / "broken.xml"))
    (tmp_path / "other.xml").write_text("<rss><item/></rss>")
    with pytest.raises(ValueError, match="expected"):
        read_sessions(str(tmp_path / "other.xml"))
    assert clean_text(None) == "" and clean_text("a &amp;amp; b") == "a & b"
    assert clean_text("\\r \\tInternet use \\/ data") == "Internet use / data"


needs_trec = pytest.mark.skipif(not os.path.exists(TREC_XML), reason="TREC Session Track data not present in ../shared")


@needs_trec
def test_real_track_matches_its_readme(tmp_path):
    videos, search, stats = read_sessions(TREC_XML)
    assert (stats.sessions, stats.interactions, stats.clicks, len(stats.topics)) == (133, 401, 586, 61)
    assert 2700 <= stats.documents <= 2739
    assert set(search["stage"].to_pylist()) == {"clicked", "exposed"}


@needs_trec
@pytest.mark.ray
@pytest.mark.slow
def test_engine_mines_reformulation_positives_from_the_real_log(tmp_path, ray_local):
    from crops_ray.discriminator import DiscriminatorConfig
    from crops_ray.engine.build import EngineConfig, build_data

    import_trec_session(TREC_XML, str(tmp_path / "logs"))
    stats = build_data(
        str(tmp_path / "logs"),
        str(tmp_path / "out"),
        EngineConfig(sources=("p1",), discriminator=DiscriminatorConfig()),
        validate=True,
        progress=print,
    )
    p1 = stats["sources"]["reformulation"]
    cands = pq.read_table(str(tmp_path / "out" / "candidates")).to_pandas()
    kept = cands[cands["reformulation_kept"]]
    print(
        f"TREC 2013: {p1['candidates']} reformulation candidates, gate removed {p1['gate_removed']}, theta<=alpha "
        f"{p1['below_alpha']}, kept {p1['kept']}"
    )
    for r in kept.sort_values("score", ascending=False).head(8).itertuples():
        print(f"  {r.query!r} <- via {r.reformulated_queries[0]!r}: {r.text[:90]!r} theta={r.score:.2f}")
    assert p1["candidates"] > 50 and 0 < p1["kept"] < p1["candidates"]
    assert (kept["score"] > 0.6).all() and (kept["gate_score"] >= 0.3).all()
    samples = pq.read_table(str(tmp_path / "out" / "samples")).to_pandas()
    assert (samples.loc[samples["source"] == "reformulation", "level"] == 5).all()
    assert len(samples[samples["source"] == "reformulation"]) <= p1["kept"]
