"""The long API fuzzing run: schemathesis requests generated from the OpenAPI spec for every
operation (tests/test_fuzz.py runs a shorter one). Prints requests, status codes, operations,
server errors (must be none) and what was stored.

    .venv/bin/python bench/fuzz_api.py [--requests 6000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_fuzz import check_nothing_malformed_stored, fuzz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        started = time.perf_counter()
        out = fuzz(Path(d), args.requests)
        took = time.perf_counter() - started
        check_nothing_malformed_stored(out)
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(out["statuses"].items()))
    print(f"{out['requests']} generated requests over {out['ops']} operations in {took:.0f} s")
    print(f"status codes: {codes}")
    print(f"server errors (5xx or exceptions): {len(out['server_errors'])}")
    for line in out["server_errors"][:20]:
        print(f"  {line}")
    print(
        f"stored: {len(out['incidents'])} incidents, {len(out['receipts'])} report items "
        f"(all acknowledged, none malformed), {len(out['cases'])} cases"
    )
    return 1 if out["server_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
