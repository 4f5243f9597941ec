"""Benchmarks: Bit-Swap against classical lossless codecs, and the Bit-Swap paper's experiments.

``bitswap bench`` runs them (see ``bitswap bench -h``):

* :mod:`.codecs` — the codec registry (Bit-Swap models and methods, gzip,
  bzip2, LZMA, PNG, QOI, WebP, JPEG 2000, JPEG-LS, JPEG-XL);
* :mod:`.measure` — rate, time and memory over a folder of images, with
  CompressAI-style JSON, a Markdown table and plots;
* :mod:`.experiments` — the paper's block table, start-up cost and rate
  against image size.
"""
