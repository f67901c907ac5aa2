"""Benchmarks that print figures (never assert wall time); run from the repository root as modules:

    python -m benchmarks.query_list --smoke
    python -m benchmarks.profile_query_list breakdown
    python -m benchmarks.fanout --smoke

What more than one of them needs lives in `benchmarks.support`.
"""
