"""Print the summary of a Lynis report as JSON: {"hardening_index", "warnings", "scanned_at"}.

Runs on the instance (standard library only, any Python 3). The report is Lynis's key=value file:
`hardening_index=NN` once, one `warning[]=...` line per warning. `scanned_at` is the time the report
was written (its modification time, unix seconds): the report's own dates carry no time zone.
"""

from __future__ import annotations

import json
import os
import sys


class ReportError(ValueError):
    pass


def summarise(text: str, written_at: float) -> dict[str, int]:
    index: int | None = None
    warnings = 0
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "hardening_index":
            if not value.strip().isdigit() or not 0 <= int(value) <= 100:
                raise ReportError(f"hardening_index is not a number from 0 to 100: {value[:40]!r}")
            index = int(value)
        elif key == "warning[]":
            warnings += 1
    if index is None:
        raise ReportError("no hardening_index in the report (did the audit finish?)")
    return {"hardening_index": index, "warnings": warnings, "scanned_at": int(written_at)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: lynis_summary.py REPORT", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8", errors="replace") as report:
            summary = summarise(report.read(), os.fstat(report.fileno()).st_mtime)
    except (OSError, ReportError) as exc:
        print(f"lynis report {argv[1]}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
