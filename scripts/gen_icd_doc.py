"""Write docs/ICD.md from flight/link/dictionary.json; with --check, only report whether it is stale."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flight.link.icd_markdown import render_icd  # noqa: E402

ICD_PATH = Path(__file__).resolve().parents[1] / "docs" / "ICD.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/ICD.md is stale")
    args = parser.parse_args()
    text = render_icd()
    if args.check:
        stale = not ICD_PATH.exists() or ICD_PATH.read_text(encoding="utf-8") != text
        print(f"{ICD_PATH} is {'stale: run scripts/gen_icd_doc.py' if stale else 'up to date'}")
        return int(stale)
    ICD_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {ICD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
