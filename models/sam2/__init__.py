"""SAM 2 in the data engine: the official `sam2` package wrapped (build, predict, automatic
masklets, evaluation) plus a trainer for small configs trained here."""
from pathlib import Path

BASE_CONFIG = "dataengine_s128"
# The base model shipped with the project (trained on the synthetic base domain; see MODEL_CARD.md).
BASE_CHECKPOINT = Path(__file__).parent / "checkpoints" / "dataengine_s128_base.pt"
