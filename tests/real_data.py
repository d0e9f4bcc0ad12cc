"""Where the read-only real data for tests lives (../shared/data beside the checkout; may be absent)."""
import os
from pathlib import Path

REAL_DATA = Path(os.environ.get("GANAUG_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
