"""Sequence tools: embedding, masked-language pretraining and genomics tasks.

Private modules, re-exported by :mod:`diffbio_sc.tl`.
"""
