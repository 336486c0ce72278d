// DetectorBreakdown / ScoreBar: the seed's per-detector bars, as a drop-in React component.
//
// Takes a `detection_history` row (as Supabase returns it) or its `detector_scores` JSON (object or string).
// Every bar reads "higher = more authentic" (the customer's design: the visual bar is 1 − visual_artifacts, the
// audio bar 1 − audio_synthesis, ...). Labels, orientation, colours and hints come from labels.json, a link to
// pipeline/labels.json: the one source the CLI, HTML report, web page and WhatsApp reply also read. Stored values
// keep the database's orientation; `shownValue` turns one into its bar. A detector that did not run is null: it
// shows its status and reason instead of a bar.
// No hooks and no CSS framework: works in server and client components; style through the className /
// data-* hooks or the inline defaults.
import type { CSSProperties, ReactElement } from "react";

import SPEC from "./labels.json";

export type DetectorStatus = "ok" | "unavailable" | "not_applicable" | "failed";

export interface DetectorDetail {
  key?: string;
  label?: string;
  model?: string;
  status?: DetectorStatus | string;
  reason?: string | null;
  score?: number | null;
  calibrated?: number | null;
  timeline?: Array<[number, number, number]>;
  [extra: string]: unknown;
}

export interface DetectorScores {
  face_quality?: number | null;
  visual_artifacts?: number | null;
  temporal_consistency?: number | null;
  audio_synthesis?: number | null;
  lip_sync_error?: number | null;
  mouth_blur?: number | null;
  voice_change?: number | null;
  final_weighted_score?: number | null;
  verdict?: string;
  confidence?: number | null;
  detectors?: Record<string, DetectorDetail>;
  [extra: string]: unknown;
}

export interface DetectionRow {
  id?: string;
  detection_result?: string | null;
  confidence_score?: number | string | null;
  detector_scores?: DetectorScores | string | null;
  [column: string]: unknown;
}

export type ScoreKey =
  | "visual_artifacts"
  | "temporal_consistency"
  | "audio_synthesis"
  | "face_quality"
  | "lip_sync_error"
  | "mouth_blur"
  | "voice_change"
  | "final_weighted_score";

export interface BarSpec {
  key: ScoreKey;
  slot: string | null; // detectors.<slot> holds status/reason
  label: string;
  colour: string;
  from: "one_minus" | "same"; // how the shown value (higher = more authentic) is made from the stored one
  hint: string;
  words: string[];
  suspicion: string | null;
}

// In display order, from labels.json.
export const BARS: readonly BarSpec[] = SPEC.bars as BarSpec[];
export const ORIENTATION_NOTE: string = SPEC.orientation_note;
const STATUS_WORDS: Record<string, string> = SPEC.status_words;

/** A bar's shown value (higher = more authentic) from its stored value; null when there is none. */
export function shownValue(bar: BarSpec, stored: unknown): number | null {
  const v = asNumber(stored);
  if (v === null) return null;
  return bar.from === "one_minus" ? 1 - v : v;
}

/** A detector_scores value (an object, or JSON text from a text column) as an object; null when empty/absent. */
export function parseDetectorScores(value: DetectorScores | string | null | undefined): DetectorScores | null {
  let parsed: unknown = value;
  if (typeof parsed === "string") {
    try {
      parsed = JSON.parse(parsed);
    } catch {
      return null;
    }
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return null;
  return Object.keys(parsed).length ? (parsed as DetectorScores) : null;
}

const asNumber = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const clamp01 = (v: number): number => Math.min(1, Math.max(0, v));

export interface ScoreBarProps {
  label: string;
  value: number | null | undefined;
  colour: string;
  hint?: string;
  status?: string | null;
  reason?: string | null;
  dataKey?: string;
}

export function ScoreBar({ label, value, colour, hint, status, reason, dataKey }: ScoreBarProps): ReactElement {
  const v = asNumber(value);
  const row: CSSProperties = { display: "flex", justifyContent: "space-between", alignItems: "baseline", gap: 12 };
  return (
    <div className="dfd-score" data-key={dataKey} data-value={v ?? ""} style={{ padding: "8px 0" }}>
      <div style={row}>
        <span style={{ fontWeight: 600 }}>
          <span aria-hidden="true" style={{ display: "inline-block", width: 10, height: 10, borderRadius: 5,
            marginRight: 7, background: colour }} />
          {label}
        </span>
        <span className="dfd-score-value" style={{ fontWeight: 700, fontVariantNumeric: "tabular-nums" }}>
          {v === null ? "" : `${Math.round(100 * v)} %`}
        </span>
      </div>
      {hint ? <div className="dfd-score-hint" style={{ fontSize: 12, color: "#6b7280", margin: "1px 0 5px" }}>{hint}</div> : null}
      {v === null ? (
        <div className="dfd-score-na" style={{ fontSize: 13, color: "#4b5563", fontStyle: "italic" }}>
          <span style={{ fontStyle: "normal", fontWeight: 700, fontSize: 11, textTransform: "uppercase", marginRight: 6 }}>
            {status ? STATUS_WORDS[status] ?? status : "not run"}
          </span>
          {reason || "no score for this file"}
        </div>
      ) : (
        <div role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(1000 * v) / 10}
          className="dfd-bar" style={{ height: 12, background: "#eef0f3", borderRadius: 6, overflow: "hidden" }}>
          <div className="dfd-bar-fill" style={{ height: "100%", width: `${(100 * clamp01(v)).toFixed(2)}%`, background: colour }} />
        </div>
      )}
    </div>
  );
}

export interface DetectorBreakdownProps {
  row?: DetectionRow | null;
  scores?: DetectorScores | string | null;
  showFinal?: boolean;
  className?: string;
}

export function DetectorBreakdown({ row, scores, showFinal = true, className }: DetectorBreakdownProps): ReactElement {
  const ds = parseDetectorScores(scores !== undefined ? scores : row?.detector_scores);
  if (!ds) {
    // rows written before per-detector scores existed (e.g. the seed's image checks)
    return (
      <div className={className ? `dfd-breakdown ${className}` : "dfd-breakdown"} data-empty="true">
        <p style={{ color: "#6b7280", fontSize: 13, margin: 0 }}>No per-detector scores were stored for this detection.</p>
      </div>
    );
  }
  const detectors = ds.detectors ?? {};
  return (
    <div className={className ? `dfd-breakdown ${className}` : "dfd-breakdown"}>
      <p className="dfd-orientation" style={{ fontSize: 12, color: "#6b7280", margin: "0 0 4px" }}>{ORIENTATION_NOTE}</p>
      {BARS.filter((b) => showFinal || b.key !== "final_weighted_score").map((b) => {
        const det = b.slot ? detectors[b.slot] : undefined;
        const value = shownValue(b, ds[b.key]);
        let reason = det?.reason ?? null;
        if (value === null && !reason && b.key === "face_quality") reason = "no face was found to judge";
        return (
          <ScoreBar key={b.key} dataKey={b.key} label={b.label} value={value} colour={b.colour} hint={b.hint}
            status={det?.status ?? (b.key === "face_quality" && value === null ? "no face" : null)} reason={reason} />
        );
      })}
    </div>
  );
}

export default DetectorBreakdown;
