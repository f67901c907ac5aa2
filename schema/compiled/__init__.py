"""Compiled execution of validated query documents: a plan per document, graphql-core for the rest."""

from schema.compiled.plan import Reads, planned_reads
from schema.compiled.queries import CompiledQueries

__all__ = ["CompiledQueries", "Reads", "planned_reads"]
