"""Where the shared research data lives (beside the checkout, never copied into it)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OPENB = SHARED / "traces" / "openb-2023"
EXPECTED = SHARED / "reference" / "fgd-expected"
