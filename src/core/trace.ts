// FERRY_TRACE=FILE: one JSON line per finished step (start time, duration, what), appended to FILE. Child processes
// are traced where they are spawned (runtime/exec.ts); a step that is no child (a stream, a hash, a rename) is
// traced with `traceStep`: where a checkpoint's seconds go, without a profiler.
import { appendFileSync } from 'node:fs';

/** Appends one line if FERRY_TRACE names a file; `started` is a `performance.now()` reading. Best effort. */
export function traceLine(fields: Record<string, unknown>, started: number, ms: number): void {
  const file = process.env.FERRY_TRACE;
  if (!file) return;
  const t = Math.round(performance.timeOrigin + started);
  try {
    appendFileSync(file, `${JSON.stringify({ t, ms, pid: process.pid, ...fields })}\n`);
  } catch {
    // tracing is best effort
  }
}

/** Traces the step `step` that began at `started` (a `performance.now()` reading) and ends now. */
export function traceStep(step: string, started: number, extra: Record<string, unknown> = {}): void {
  if (!process.env.FERRY_TRACE) return;
  traceLine({ step, ...extra }, started, Math.round(performance.now() - started));
}
