// The run's live view: on a TTY a few redrawn lines (log-update) with the
// running check, elapsed and remaining time and the live IOPS/latency of
// the load; without a TTY (CI) plain lines, at most one sample line every
// few seconds so logs stay readable.

import logUpdate from "log-update";
import pc from "picocolors";
import { formatValue } from "../checks/judge.js";
import type { LiveSample, Progress } from "./progress.js";

/** Seconds between live sample lines in plain (non-TTY) output. */
const PLAIN_SAMPLE_EVERY_S = 5;
/** Redraws of the TTY view at most this often. */
const REDRAW_MS = 250;

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** "123 us mean, " or nothing when the load does not measure latency (the ledger writer). */
function latency(sample: LiveSample): string {
  return sample.latencyUs > 0 ? `${formatValue(sample.latencyUs)} us mean, ` : "";
}

const VERDICT_COLOR: Record<string, (s: string) => string> = {
  pass: pc.green,
  fail: pc.red,
  error: pc.magenta,
  "not-applicable": pc.dim,
};

/** Progress for a terminal; `tty` false prints plain lines to `out`. */
export class TerminalProgress implements Progress {
  readonly #tty: boolean;
  readonly #out: NodeJS.WritableStream;
  readonly #startedAt = Date.now();
  #check = "";
  #index = 0;
  #total = 0;
  #checkStartedAt = Date.now();
  #step = "";
  #sample: LiveSample | null = null;
  #lastPlainSampleAt = 0;
  #lastDraw = 0;
  /** Durations of finished checks, to estimate what is left. */
  readonly #doneMs: number[] = [];

  constructor(options: { tty: boolean; out?: NodeJS.WritableStream }) {
    this.#tty = options.tty;
    this.#out = options.out ?? process.stdout;
  }

  #line(text: string): void {
    if (this.#tty) logUpdate.clear();
    this.#out.write(`${text}\n`);
    if (this.#tty) this.#draw(true);
  }

  #remainingS(): number | null {
    if (this.#doneMs.length === 0) return null;
    const mean = this.#doneMs.reduce((a, b) => a + b, 0) / this.#doneMs.length;
    return ((this.#total - this.#index) * mean - (Date.now() - this.#checkStartedAt)) / 1000;
  }

  #draw(force = false): void {
    if (!this.#tty || (!force && Date.now() - this.#lastDraw < REDRAW_MS)) return;
    this.#lastDraw = Date.now();
    const elapsed = (Date.now() - this.#startedAt) / 1000;
    const remaining = this.#remainingS();
    const head = `${pc.bold(`[${this.#index + 1}/${this.#total}]`)} ${pc.cyan(this.#check)}  ${pc.dim(
      `elapsed ${clock(elapsed)}${remaining === null ? "" : `, ~${clock(remaining)} left`}`,
    )}`;
    const lines = [head];
    if (this.#step) lines.push(`  ${this.#step}`);
    const s = this.#sample;
    if (s) {
      const left = s.remainingS === undefined ? "" : `, ${clock(s.remainingS)} left`;
      lines.push(
        `  ${pc.yellow(s.phase)}: ${pc.bold(`${formatValue(Math.round(s.iops))} IOPS`)}  ${latency(s)}${pc.dim(`${clock(s.elapsedS)}${left}`)}`,
      );
    }
    logUpdate(lines.join("\n"));
  }

  checkStarted(id: string, title: string, index: number, total: number): void {
    this.#check = id;
    this.#index = index;
    this.#total = total;
    this.#checkStartedAt = Date.now();
    this.#step = "";
    this.#sample = null;
    if (!this.#tty) this.#line(`[${index + 1}/${total}] ${id}: ${title}`);
    this.#draw(true);
  }

  step(text: string): void {
    this.#step = text;
    this.#sample = null;
    if (!this.#tty) this.#line(`  ${this.#check}: ${text}`);
    this.#draw(true);
  }

  sample(sample: LiveSample): void {
    this.#sample = sample;
    if (this.#tty) return this.#draw();
    if (Date.now() - this.#lastPlainSampleAt < PLAIN_SAMPLE_EVERY_S * 1000) return;
    this.#lastPlainSampleAt = Date.now();
    this.#line(
      `  ${this.#check}: ${sample.phase} ${Math.round(sample.iops)} IOPS, ${latency(sample)}${clock(sample.elapsedS)} elapsed`,
    );
  }

  checkEnded(id: string, verdict: string, summary: string): void {
    this.#doneMs.push(Date.now() - this.#checkStartedAt);
    const color = VERDICT_COLOR[verdict] ?? ((s: string) => s);
    const text = `${this.#tty ? color(verdict.toUpperCase().padEnd(14)) : verdict.toUpperCase().padEnd(14)} ${id}${summary ? `  ${summary.slice(0, 300)}` : ""}`;
    this.#step = "";
    this.#sample = null;
    this.#line(text);
  }

  /** Clears the live lines (before the summary table or on exit). */
  done(): void {
    if (this.#tty) logUpdate.clear();
  }
}
