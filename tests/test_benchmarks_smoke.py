"""The benchmarks keep running against today's gateway (figures are printed, never asserted).

Only the in-process one runs here: query_list and fanout start servers and clients in subprocesses and
take longer than a unit test may; mypy checks them, and their `--smoke` flags run them by hand.
"""

from __future__ import annotations

import pytest

from benchmarks import profile_query_list


def test_profile_breakdown_prices_every_layer(capsys: pytest.CaptureFixture[str]) -> None:
    # Each full request is checked for a page of exactly the 12 fields; each variant for no GraphQL errors.
    assert profile_query_list.main(["breakdown", "--rows", "100", "--requests", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for label in (
        "gateway app, full request, trusted id",
        "gateway app, full request, ad-hoc text",
        "service narrow_page()",
        "strawberry on a pre-built connection",
        "compiled path",
    ):
        assert label in out
