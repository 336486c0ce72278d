// @vitest-environment jsdom
import { act } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, describe, expect, it } from "vitest";

import DetectorBreakdown, { BARS, parseDetectorScores, ScoreBar } from "./DetectorBreakdown";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

let root: Root | null = null;
let host: HTMLDivElement | null = null;

function render(element: React.ReactElement): HTMLDivElement {
  host = document.createElement("div");
  document.body.append(host);
  root = createRoot(host);
  act(() => root!.render(element));
  return host;
}

afterEach(() => {
  act(() => root?.unmount());
  host?.remove();
  root = null;
  host = null;
});

// A detection_history row as the service writes it (Report.detector_scores(), trimmed).
const ROW = {
  id: "5b1f6c1e-3f0c-4c55-9d7a-0e0c7f1d2a11",
  detection_result: "suspicious",
  confidence_score: 16.2,
  detector_scores: {
    face_quality: 0.97,
    visual_artifacts: 0.8123,
    temporal_consistency: null,
    audio_synthesis: 0.7,
    lip_sync_error: null,
    final_weighted_score: 0.64,
    verdict: "SUSPICIOUS",
    detectors: {
      visual: { status: "ok", reason: null, score: 0.8123 },
      temporal: { status: "unavailable", reason: "no fine-tuned temporal checkpoint" },
      audio: { status: "ok", reason: null, score: 0.7 },
      lip_sync: { status: "not_applicable", reason: "no speech in the audio" },
    },
  },
};

const fill = (el: HTMLElement, key: string) =>
  el.querySelector<HTMLElement>(`[data-key="${key}"] .dfd-bar-fill`);
// the bar's width in percent, as the browser reads the inline style
const width = (el: HTMLElement, key: string) => parseFloat(fill(el, key)!.style.width);

describe("DetectorBreakdown", () => {
  it("shows the customer's labels and colours, every bar higher = more authentic", () => {
    const el = render(<DetectorBreakdown row={ROW} />);
    const labels = [...el.querySelectorAll("[data-key]")].map((n) => n.getAttribute("data-key"));
    expect(labels).toEqual(BARS.map((b) => b.key));
    expect(el.textContent).toContain("Visual Quality");
    expect(el.textContent).toContain("Audio Authenticity");
    expect(el.textContent).toContain("Face Detection");
    expect(el.textContent).toContain("Overall Authenticity");
    expect(width(el, "visual_artifacts")).toBeCloseTo(18.77, 2); // Visual Quality = 1 − visual_artifacts
    expect(width(el, "audio_synthesis")).toBeCloseTo(30.0, 2); // Audio Authenticity = 1 − audio_synthesis
    expect(width(el, "face_quality")).toBeCloseTo(97.0, 2);
    expect(width(el, "final_weighted_score")).toBeCloseTo(36.0, 2);
    expect(fill(el, "visual_artifacts")!.style.background).toBe("rgb(37, 99, 235)"); // blue
    expect(fill(el, "face_quality")!.style.background).toBe("rgb(234, 88, 12)"); // orange
    const meter = el.querySelector('[data-key="visual_artifacts"] [role="meter"]')!;
    expect(meter.getAttribute("aria-valuenow")).toBe("18.8");
    expect(el.querySelector('[data-key="visual_artifacts"] .dfd-score-value')!.textContent).toBe("19 %");
    expect(el.textContent).toContain("higher = more authentic");
  });

  it("shows the status and reason instead of a bar for detectors that did not run", () => {
    const el = render(<DetectorBreakdown row={ROW} />);
    const temporal = el.querySelector<HTMLElement>('[data-key="temporal_consistency"]')!;
    expect(temporal.querySelector(".dfd-bar")).toBeNull();
    expect(temporal.textContent).toContain("unavailable");
    expect(temporal.textContent).toContain("no fine-tuned temporal checkpoint");
    const lips = el.querySelector<HTMLElement>('[data-key="lip_sync_error"]')!;
    expect(lips.textContent).toContain("not applicable");
    expect(lips.textContent).toContain("no speech in the audio");
  });

  it("every bar's hint states the one orientation: temporal consistency is stored as such, the others flipped", () => {
    const el = render(<DetectorBreakdown scores={{ temporal_consistency: 0.9, lip_sync_error: 0.9 }} />);
    const temporal = el.querySelector<HTMLElement>('[data-key="temporal_consistency"]')!;
    expect(width(el, "temporal_consistency")).toBeCloseTo(90.0, 2);
    expect(width(el, "lip_sync_error")).toBeCloseTo(10.0, 2);
    for (const b of BARS.filter((b) => b.key !== "face_quality")) {
      expect(el.querySelector(`[data-key="${b.key}"]`)!.textContent).toContain("higher = more authentic");
    }
    expect(temporal.textContent).toContain("Temporal Consistency");
  });

  it("draws 0 % and 100 % bars, and clamps out-of-range values", () => {
    const el = render(
      <DetectorBreakdown scores={{ visual_artifacts: 0, audio_synthesis: 1, lip_sync_error: 1.3, face_quality: -0.2 }} />,
    );
    expect(width(el, "visual_artifacts")).toBeCloseTo(100.0, 2);
    expect(width(el, "audio_synthesis")).toBeCloseTo(0.0, 2);
    expect(width(el, "lip_sync_error")).toBeCloseTo(0.0, 2);
    expect(width(el, "face_quality")).toBeCloseTo(0.0, 2);
    expect(el.querySelector('[data-key="visual_artifacts"] .dfd-score-value')!.textContent).toBe("100 %");
  });

  it("accepts detector_scores as a JSON string (a text column) and can hide the fused score", () => {
    const el = render(<DetectorBreakdown row={{ detector_scores: JSON.stringify(ROW.detector_scores) }} showFinal={false} />);
    expect(width(el, "visual_artifacts")).toBeCloseTo(18.77, 2);
    expect(el.querySelector('[data-key="final_weighted_score"]')).toBeNull();
  });

  it("renders old rows without detector_scores without error", () => {
    for (const row of [
      { id: "old", detection_result: "fake", confidence_score: 87.5 },
      { id: "old", detection_result: "fake", detector_scores: {} },
      { id: "old", detection_result: "fake", detector_scores: null },
      { id: "old", detection_result: "fake", detector_scores: "not json" },
    ]) {
      const el = render(<DetectorBreakdown row={row} />);
      expect(el.querySelector('[data-empty="true"]')).not.toBeNull();
      expect(el.querySelectorAll("[data-key]").length).toBe(0);
      act(() => root!.unmount());
      root = null;
    }
  });

  it("ScoreBar alone: a missing value shows the reason", () => {
    const el = render(<ScoreBar label="Lip Sync" value={null} colour="#db2777" status="failed" reason="decoder error" />);
    expect(el.textContent).toContain("failed");
    expect(el.textContent).toContain("decoder error");
    expect(el.querySelector(".dfd-bar")).toBeNull();
    expect(parseDetectorScores(null)).toBeNull();
    expect(parseDetectorScores('{"face_quality": 0.5}')).toEqual({ face_quality: 0.5 });
    expect(parseDetectorScores({})).toBeNull();
  });
});
