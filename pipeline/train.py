"""``python -m pipeline.train <model> --manifest M``: train one of the project's trainable models.

    temporal  temporal detector: LR-ASD visual front-end + temporal head (default), or VideoMAE (--arch videomae)
    sync      lip-sync head on frozen LR-ASD audio/visual embeddings
    audio     AASIST fine-tuned on real vs synthetic speech with codec augmentation
    visual    MesoInception4 fine-tuned on aligned face crops with compression augmentation
    fusion    the optional attention fusion over per-second detector tokens

Each command trains on the TRAIN side of the committed group split, reports validation figures only,
and writes a checkpoint the pipeline loads (see ``--help`` of each).
"""

from __future__ import annotations

import sys
from importlib import import_module

COMMANDS = {
    "temporal": "pipeline.train_temporal",
    "sync": "pipeline.train_sync",
    "audio": "pipeline.train_audio",
    "visual": "pipeline.train_visual",
    "fusion": "pipeline.train_fusion",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        module = import_module(COMMANDS[argv[0]])
    except ModuleNotFoundError as exc:
        print(f"the '{argv[0]}' trainer is not available in this build: {exc}", file=sys.stderr)
        return 2
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
