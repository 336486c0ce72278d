"""``python -m training <command> ...``: everything that fits, calibrates, evaluates or splits.

    eval       per-detector and fused AUC/EER/FPR of the shipped pipeline on a labelled manifest (make eval)
    calibrate  fit the evidence (noisy-OR) fusion under leave-one-source-out from eval results (make calibrate)
    calibrate-logistic  the earlier logistic fusion fitted on the group split's validation side
    split      the committed train/validation group split (--extend keeps listed sides, places new items)
    eval-sync  lip-sync estimators on real clips vs shifted / swapped audio
    synth      label-certain fakes from real footage (av_shift, av_swap, voice_over, voice_resynth, face_blend,
               face_swap, mouth_swap, gen_upsample)
    temporal   temporal detector: LR-ASD visual front-end + temporal head (default), or VideoMAE (--arch videomae)
    sync       lip-sync head on frozen LR-ASD audio/visual embeddings
    audio      AASIST fine-tuned on real vs synthetic speech with codec augmentation
    visual     MesoInception4 fine-tuned on aligned face crops with compression augmentation
    fusion     the optional attention fusion over per-second detector tokens

Trainers use only the TRAIN side of the committed group split (``training.split.require_train_only``),
report validation figures, and write a checkpoint the pipeline loads (see ``--help`` of each).
"""

from __future__ import annotations

import sys
from importlib import import_module

COMMANDS = {
    "eval": "training.evaluate",
    "calibrate": "training.evidence_fusion",
    "calibrate-logistic": "training.calibrate",
    "split": "training.split",
    "eval-sync": "training.eval_sync",
    "synth": "training.synth",
    "temporal": "training.train_temporal",
    "sync": "training.train_sync",
    "audio": "training.train_audio",
    "visual": "training.train_visual",
    "fusion": "training.train_fusion",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
