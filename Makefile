# Multimodal deepfake detector — developer entry points. See README.md.
SHELL := /bin/bash
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip
APT_PACKAGES := ffmpeg espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox chromium fonts-dejavu-core
# Dev checkouts sit next to ../shared (real weights that load offline); elsewhere weights are downloaded.
export WEIGHTS_DIR ?= $(abspath $(wildcard ../shared/weights))
VIDEO ?=
OUT ?= out
MANIFEST ?= ../shared/data/dev/manifest.tsv

.PHONY: help install apt venv web-deps web-test test lint scan faces weights eval bench serve synth calibrate calibrate-whisper visual-oof unseen-processing train clean

help:
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  make %-10s %s\n", $$1, $$2}'

install: apt venv web-deps ## system packages + .venv (runtime + dev requirements) + the React component's npm packages

apt: ## Debian packages (ffmpeg for media tests, chromium for browser tests)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv:
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt

web-deps: ## npm packages of web/react (DetectorBreakdown) from its lock file
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null || \
	  { echo "web/react needs Node.js 20+ with npm (Debian's nodejs 18 is too old: use the NodeSource package)"; exit 1; }
	cd web/react && npm ci --no-audit --no-fund

web-test: ## the React component's Vitest suite alone (make test runs it too, via tests/test_web.py)
	cd web/react && npm test

test: ## whole test suite + lint
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check .

scan: ## analyse one video: make scan VIDEO=clip.mp4 [ARGS="--json"]
	@test -n "$(VIDEO)" || { echo "usage: make scan VIDEO=path/to/clip.mp4"; exit 2; }
	$(PY) -m pipeline scan "$(VIDEO)" $(ARGS)

faces: ## aligned face crops + tracks JSON: make faces VIDEO=clip.mp4 OUT=out/faces
	@test -n "$(VIDEO)" || { echo "usage: make faces VIDEO=path/to/clip.mp4 [OUT=dir]"; exit 2; }
	$(PY) -m pipeline faces "$(VIDEO)" --out "$(OUT)"

weights: ## download every checkpoint of a real deployment (needs internet)
	$(PY) -m pipeline weights

eval: ## per-detector and fused AUC on a labelled manifest: make eval [MANIFEST=...] [ARGS="--reencode whatsapp"]
	$(PY) -m training eval --manifest "$(MANIFEST)" $(ARGS)

bench: ## speed + peak memory on 30 s / 3 min / 10 min phone clips (or one: make bench VIDEO=...)
	$(PY) -m pipeline bench $(if $(VIDEO),"$(VIDEO)",) $(ARGS)

HOST ?= 127.0.0.1
PORT ?= 8000

serve: ## local API + web UI on SQLite: make serve [HOST=0.0.0.0] [PORT=8000]
	$(PY) -m uvicorn web.server:create_app --factory --host "$(HOST)" --port "$(PORT)"

SYNTH ?= $(OUT)/synth
# recipe:count; the face recipes cost 3-5 s per item and gen_upsample ~1 min, the audio ones well under 1 s
SYNTH_COUNTS ?= av_shift:40 av_swap:40 voice_over:40 voice_resynth:30 face_blend:20 face_swap:20 mouth_swap:20 gen_upsample:8
REAL_PROCESSINGS ?= whatsapp telephone portrait_crop noise
EVAL_RUNS = all synth $(addprefix real-,$(REAL_PROCESSINGS))

synth: ## label-certain fakes from the dev reals, every recipe: make synth [SYNTH_COUNTS="av_swap:40 ..."]
	@for rc in $(SYNTH_COUNTS); do r=$${rc%%:*}; n=$${rc##*:}; \
	  $(PY) -m training synth --recipe $$r --n $$n --split all --seed 1 --out $(SYNTH)/$$r || exit 1; done

# Refit a shipped head (python -m training.sync_loso --ship ...) BEFORE this scoring, not after: `make eval` drops
# every row scored with another head and scores it again.
# Scoring runs as two one-thread processes side by side: on 2 cores that is ~2x faster than one two-thread
# process (PyTorch's GRU and OpenBLAS spin when their threads share a core with other work).
ONE_THREAD := TORCH_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
EVAL := $(ONE_THREAD) $(PY) -m training eval
calibrate: ## the evidence fusion, fitted and thresholded under leave-one-source-out (scoring is resumable)
	@test -f $(SYNTH)/manifest.tsv || $(MAKE) synth
	@mkdir -p $(OUT)/eval
	@echo "scoring the dev set here, and the synthetic set + processed reals beside it (log: $(OUT)/eval/side.log)"
	@( $(EVAL) --manifest $(SYNTH)/manifest.tsv --out $(OUT)/eval/synth && \
	   for p in $(wordlist 1,2,$(REAL_PROCESSINGS)); do \
	     $(EVAL) --manifest "$(MANIFEST)" --reals-only --reencode $$p --out $(OUT)/eval/real-$$p || exit 1; done \
	 ) > $(OUT)/eval/side.log 2>&1 & side=$$!; \
	 ( $(EVAL) --manifest "$(MANIFEST)" --out $(OUT)/eval/all && \
	   for p in $(wordlist 3,99,$(REAL_PROCESSINGS)); do \
	     $(EVAL) --manifest "$(MANIFEST)" --reals-only --reencode $$p --out $(OUT)/eval/real-$$p || exit 1; done ); \
	 here=$$?; wait $$side; side_rc=$$?; \
	 if [ $$side_rc -ne 0 ]; then tail -20 $(OUT)/eval/side.log; fi; test $$here -eq 0 -a $$side_rc -eq 0
	@# the shipped lip-sync head, temporal head and AASIST-ft saw dev clips: the fusion is fitted on scores of
	@# models refitted without each fold
	$(PY) -m training.sync_oof --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/sync_oof \
	  --results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/$(r)/results.jsonl)
	$(PY) -m training.temporal_oof --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/temporal_oof \
	  --results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/sync_oof/$(r)/results.jsonl)
	$(AUDIO_OOF) --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/audio_oof \
	  --results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/temporal_oof/$(r)/results.jsonl)
	@# every row's mouth blur again from its kept crops: one version of the measure, also on runs scored before it
	$(PY) -m training.mouth_fill --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/mouth_fill \
	  --results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/audio_oof/$(r)/results.jsonl)
	@# the voice-change score of rows scored before that detector existed (rows that have it are kept)
	$(PY) -m training.voice_fill --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/voice_fill \
	  --results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/mouth_fill/$(r)/results.jsonl)
	$(PY) -m training calibrate --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --report $(OUT)/eval/loso \
	  --out $(CALIBRATION_OUT) --results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/voice_fill/$(r)/results.jsonl)

# After `make calibrate`: every real video again after processings the fusion never saw (never fitted on, never setting
# a threshold), through the same out-of-fold steps; the temporal heads learn from as-is rows only, so refitting them
# over all runs (into their own folder) leaves every other row's temporal score as it was.
# The dev fakes too after UNSEEN_FAKE_PROCESSINGS: whether a processing hides fakes (sharpening does: README).
UNSEEN_PROCESSINGS ?= down360 messenger_vlow beauty sharpen grade captions
UNSEEN_FAKE_PROCESSINGS ?= sharpen
UNSEEN_RUNS = $(addprefix real-,$(UNSEEN_PROCESSINGS)) $(addprefix fake-,$(UNSEEN_FAKE_PROCESSINGS))
unseen-processing: ## the false-FAKE budget on reals after processings the fit never saw (after make calibrate)
	@for p in $(UNSEEN_PROCESSINGS); do \
	  $(EVAL) --manifest "$(MANIFEST)" --reals-only --modality video_av,video --reencode $$p \
	    --out $(OUT)/eval/real-$$p || exit 1; done
	@for p in $(UNSEEN_FAKE_PROCESSINGS); do \
	  $(EVAL) --manifest "$(MANIFEST)" --fakes-only --modality video_av,video --reencode $$p \
	    --out $(OUT)/eval/fake-$$p || exit 1; done
	$(PY) -m training.sync_oof --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/sync_oof \
	  --results $(foreach r,$(UNSEEN_RUNS),$(OUT)/eval/$(r)/results.jsonl)
	$(PY) -m training.temporal_oof --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/temporal_oof_unseen \
	  --results $(foreach r,$(EVAL_RUNS) $(UNSEEN_RUNS),$(OUT)/eval/sync_oof/$(r)/results.jsonl)
	$(AUDIO_OOF) --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/audio_oof \
	  --results $(foreach r,$(UNSEEN_RUNS),$(OUT)/eval/temporal_oof_unseen/$(r)/results.jsonl)
	$(PY) -m training.mouth_fill --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/mouth_fill \
	  --results $(foreach r,$(UNSEEN_RUNS),$(OUT)/eval/audio_oof/$(r)/results.jsonl)
	$(PY) -m training.voice_fill --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/voice_fill \
	  --results $(foreach r,$(UNSEEN_RUNS),$(OUT)/eval/mouth_fill/$(r)/results.jsonl)
	$(PY) -m training.unseen_processing --unseen $(sort $(UNSEEN_PROCESSINGS) $(UNSEEN_FAKE_PROCESSINGS)) \
	  --manifest "$(MANIFEST)" \
	  $(SYNTH)/manifest.tsv --report $(OUT)/eval/unseen_processing \
	  --results $(foreach r,$(EVAL_RUNS) $(UNSEEN_RUNS),$(OUT)/eval/voice_fill/$(r)/results.jsonl)

# the audio rows refitted per fold: AASIST-ft fine-tuned again (default), or the Whisper head (calibrate-whisper)
AUDIO_OOF ?= $(ONE_THREAD) $(PY) -m training.audio_oof --jobs 2
CALIBRATION_OUT ?= pipeline/calibration.json

# The same protocol with the Whisper audio detector in the audio slot, into its own fusion file (the scoring runs
# under out/whisper; the synthetic set is shared): AUDIO_DETECTOR=whisper_head CALIBRATION_FILE=<that file>.
calibrate-whisper: ## the evidence fusion for AUDIO_DETECTOR=whisper_head -> pipeline/calibration_whisper.json
	AUDIO_DETECTOR=whisper_head $(MAKE) calibrate OUT=$(OUT)/whisper SYNTH=$(SYNTH) \
	  AUDIO_OOF="$(PY) -m training.whisper_oof" CALIBRATION_OUT=pipeline/calibration_whisper.json

# A comparison, not a refit of what ships: after `make calibrate`, the visual rows scored again by SBI models
# trained without each row's fold, two one-thread processes sharing the bins, then the fusion's LOSO on them.
visual-oof: ## SBI vs the released MesoNet through the fused LOSO (after make calibrate): out/eval/loso_sbi
	@$(ONE_THREAD) $(VISUAL_OOF) --threads 1 --reverse > $(OUT)/eval/visual_oof.log 2>&1 & rev=$$!; \
	 $(ONE_THREAD) $(VISUAL_OOF) --threads 1; rc=$$?; kill $$rev 2>/dev/null; exit $$rc
	$(PY) -m training calibrate --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --report $(OUT)/eval/loso_sbi \
	  --out '' --results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/visual_oof/$(r)/results.jsonl)

VISUAL_OOF = $(PY) -m training.visual_oof --manifest "$(MANIFEST)" $(SYNTH)/manifest.tsv --out $(OUT)/eval/visual_oof \
	--results $(foreach r,$(EVAL_RUNS),$(OUT)/eval/voice_fill/$(r)/results.jsonl)

clean:
	rm -rf .pytest_cache .ruff_cache out
