"""Data pipeline: sources -> tokenized shards -> packed, mixed, resumable batches."""

from .long_docs import LongDocuments
from .sampler import MixtureSampler, TokenStream, validation_batches
from .shards import build_category
from .sources import DataError, SourceStats, iter_documents, resolve_files, stdlib_files

__all__ = ["LongDocuments", "MixtureSampler", "TokenStream", "validation_batches", "build_category", "DataError",
           "SourceStats", "iter_documents", "resolve_files", "stdlib_files"]
