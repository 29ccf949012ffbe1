"""The reports of the demo and the alpha sweep: every markdown table through :func:`markdown.markdown_table`.

- :mod:`markdown`: the one table helper (``pandas.DataFrame.to_markdown``);
- :mod:`per_query`: tables from each method's per-query run (splits by bucket and kind, recall at K, paired CIs);
- :mod:`additivity`: do the perspectives' gains add up (the ablations);
- :mod:`tables`: Table 1, the online A/B test over seeds, the logs' size, top-k side by side, the time table;
- :mod:`demo`: the demo's report.md, metrics.json and README block from what a run collected;
- :mod:`sweep`: the alpha sweep's tables, summary and alpha_sweep.md;
- :mod:`plots`: the charts (Table 1, the alpha sweep);
- :mod:`readme`: the README block between the table1 markers.
"""
