// The status-bar text for a `spectab/status` answer. No `vscode` import (unit-tested under node).

export interface ServerStatus {
  state?: "loading" | "ready" | "error" | string;
  error?: string | null;
  profile?: string | null;
  target?: string | null;
  draft?: string | null;
  device?: string | null;
  requests?: number;
  generations?: number;
  acceptedSuggestions?: number;
  /** next-word / next-line steps (a whole accept after them still counts in acceptedSuggestions) */
  partialAccepts?: number;
  /** suggestions cut short / hidden entirely by minConfidence */
  confidenceCut?: number;
  confidenceHidden?: number;
  lastLatencyMs?: number | null;
  lastStopReason?: string | null;
  acceptanceRate?: number | null;
  prefixCacheHitRate?: number | null;
  engine?: "shared" | "inprocess" | "remote" | string;
  enginePid?: number | null;
  engineUrl?: string | null;
  engineKey?: string | null;
  /** the KV lane of the document whose uri the request sent */
  lane?: number | null;
}

export interface StatusView {
  text: string;
  /** also the aria label, so it has to read as a sentence */
  tooltip: string;
  severity: "ok" | "warning" | "error";
}

function percent(rate: number | null | undefined): string {
  return typeof rate === "number" && isFinite(rate) ? `${Math.round(rate * 100)}%` : "n/a";
}

/** e.g. `engine shared (pid 4242), lane 1`, `engine remote http://gpu:8000`; "" when the server did not say. */
export function engineText(status: ServerStatus): string {
  if (!status.engine) {
    return "";
  }
  const where = status.engine === "remote" ? (status.engineUrl ? ` ${status.engineUrl}` : "")
    : typeof status.enginePid === "number" ? ` (pid ${status.enginePid})` : "";
  const lane = typeof status.lane === "number" ? `, lane ${status.lane}` : "";
  return `engine ${status.engine}${where}${lane}`;
}

/** e.g. `accepted suggestions 3, partial accepts 5` (a server without partial accepts: no second part). */
export function acceptedText(status: ServerStatus): string {
  const partial = typeof status.partialAccepts === "number" ? `, partial accepts ${status.partialAccepts}` : "";
  return `accepted suggestions ${status.acceptedSuggestions ?? 0}${partial}`;
}

/** e.g. `low confidence: 4 cut short, 1 hidden`; "" when the server does not count them. */
export function confidenceText(status: ServerStatus): string {
  if (typeof status.confidenceCut !== "number" && typeof status.confidenceHidden !== "number") {
    return "";
  }
  return `low confidence: ${status.confidenceCut ?? 0} cut short, ${status.confidenceHidden ?? 0} hidden`;
}

/** `status` is undefined while the server is starting (or cannot be asked). */
export function formatStatus(status: ServerStatus | undefined, enabled: boolean, starting = false): StatusView {
  if (!status) {
    return starting
      ? { text: "$(loading~spin) spectab", tooltip: "spectab: starting the server", severity: "ok" }
      : { text: "$(error) spectab", tooltip: "spectab: the server is not running (click for the menu)", severity: "error" };
  }
  const off = enabled ? "" : " (suggestions off)";
  if (status.state === "error") {
    return {
      text: "$(error) spectab",
      tooltip: `spectab: no model loaded: ${status.error ?? "unknown error"}${off}`,
      severity: "error",
    };
  }
  if (status.state === "loading") {
    return { text: "$(loading~spin) spectab", tooltip: `spectab: loading the model${off}`, severity: "ok" };
  }
  const icon = enabled ? "$(sparkle)" : "$(circle-slash)";
  const latency = typeof status.lastLatencyMs === "number" ? `${Math.round(status.lastLatencyMs)} ms` : "";
  const model = [status.target ?? status.profile, status.draft ? `draft ${status.draft}` : "", status.device ? `on ${status.device}` : ""]
    .filter(Boolean).join(", ");
  const lines = [
    `spectab: ready${off}`,
    `model ${model || "unknown"}`,
    engineText(status),
    `last latency ${latency || "n/a"}${status.lastStopReason ? ` (${status.lastStopReason})` : ""}`,
    `draft acceptance ${percent(status.acceptanceRate)}`,
    acceptedText(status),
    confidenceText(status),
  ].filter(Boolean);
  return {
    text: `${icon} spectab${latency ? ` ${latency}` : ""}`,
    tooltip: lines.join("\n"),
    severity: enabled ? "ok" : "warning",
  };
}

/** The server's stderr has no levels (Python logging as "name: message", and tracebacks); pick one
 * for the log channel, which would otherwise mark every line an error. */
export function stderrLevel(line: string): "info" | "warn" | "error" {
  if (/\b(error|exception|traceback|failed|fatal)\b/i.test(line) || /^\s+File "/.test(line) || /^[A-Za-z_.]*Error\b/.test(line)) {
    return "error";
  }
  return /\bwarn(ing)?\b/i.test(line) ? "warn" : "info";
}
