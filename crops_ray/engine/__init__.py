"""The CroPS data engine: positives from three perspectives, verified, and labelled with HLA.

Read in this order: :mod:`.reformulation` (P1) and :mod:`.recommendation` (P2), the per-user logic;
:mod:`.users`, which runs both on each user in one Ray Data shuffle; :mod:`.world_knowledge` (P3, the LLM: its
model and backends in :mod:`.llm`, prompts, parsing, quality control and verification in :mod:`.descriptions`);
:mod:`.assemble` (pairs, labels, HLA levels); :mod:`.build`, the steps end to end (settings in :mod:`.config`,
inputs in :mod:`.inputs`, parquet helpers in :mod:`.io`, counters, stats.json and the summary in
:mod:`.summary`); :mod:`crops_ray.world.audit`, precision against a generated world's ground truth.
"""
