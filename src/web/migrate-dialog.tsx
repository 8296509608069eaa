// The migration dialog: strategy and downtime budget with a dry run of the plan (what `auto` picks and why, the
// predicted freeze), then the live progress (phase, bytes, rate, post-copy pages), then the result: the freeze
// and total time, or the error with its code and phase and where the container still runs.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { MovePlan, MoveStarted } from '../api/dashboard.ts';
import type { MigrationRecord } from '../api/types.ts';
import { ApiError, post } from './api.ts';
import { formatBytes, formatMs, outcomeOf, type Progress } from './model.ts';

export interface MoveAsk {
  container: string;
  from: string;
  to: string;
}

const STRATEGIES = ['auto', 'cold', 'precopy', 'postcopy', 'hybrid'] as const;
type Strategy = (typeof STRATEGIES)[number];

export function MigrateDialog(p: {
  ask: MoveAsk;
  /** The migration this dialog started, once it did. */
  id: string | undefined;
  onStarted(id: string): void;
  progress: Progress | undefined;
  record: MigrationRecord | undefined;
  /** Where the cluster's picture shows the container now, and its status there. */
  where: { host: string; status: string } | undefined;
  onClose(): void;
}) {
  const [strategy, setStrategy] = useState<Strategy>('auto');
  const [budget, setBudget] = useState('');
  const [plan, setPlan] = useState<MovePlan | { error: string } | undefined>();
  const [startError, setStartError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const first = useRef<HTMLSelectElement>(null);
  const closeButton = useRef<HTMLButtonElement>(null);
  const dialog = useRef<HTMLDivElement>(null);
  const budgetMs = /^\d+$/.test(budget) ? Number(budget) : undefined;
  const body = {
    container: p.ask.container,
    to: p.ask.to,
    strategy,
    ...(budgetMs ? { maxDowntimeMs: budgetMs } : {}),
  };

  useEffect(() => first.current?.focus(), []);
  // Escape closes it wherever the focus is (the form it was in may be gone, replaced by the progress)
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === 'Escape' && p.onClose();
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [p.onClose]);
  useEffect(() => {
    if (p.id) return;
    let live = true;
    setPlan(undefined);
    post<MovePlan>('/api/moves/plan', body).then(
      (r) => live && setPlan(r),
      (err: Error) => live && setPlan({ error: err.message }),
    );
    return () => {
      live = false;
    };
  }, [strategy, budgetMs, p.id]);

  const start = async () => {
    setBusy(true);
    setStartError(undefined);
    try {
      const r = await post<MoveStarted>('/api/moves', body);
      p.onStarted(r.id);
    } catch (err) {
      setStartError(
        err instanceof ApiError ? `${err.error.code}: ${err.error.message}` : (err as Error).message,
      );
    } finally {
      setBusy(false);
    }
  };

  const finished = p.record && (p.record.status === 'done' || p.record.status === 'failed');
  // once the form is gone the focus goes to the one button left, so the keyboard stays in the dialog
  useEffect(() => {
    if (p.id) closeButton.current?.focus();
  }, [p.id, finished]);
  return (
    <div class="backdrop">
      <div
        ref={dialog}
        class="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby="migrate-title"
        onKeyDown={(e) => {
          if (e.key === 'Tab') trapFocus(e, dialog.current);
        }}
      >
        <h2 id="migrate-title">
          Migrate {p.ask.container}: {p.ask.from} → {p.ask.to}
        </h2>
        {!p.id && (
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void start();
            }}
          >
            <label>
              Strategy
              <select
                ref={first}
                value={strategy}
                onChange={(e) => setStrategy(e.currentTarget.value as Strategy)}
              >
                {STRATEGIES.map((s) => (
                  <option key={s} value={s}>
                    {s}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Downtime budget (ms)
              <input
                type="number"
                min={1}
                max={600000}
                placeholder="default"
                value={budget}
                onInput={(e) => setBudget(e.currentTarget.value)}
              />
            </label>
            <section aria-label="dry run" class="plan" aria-live="polite">
              <h3>Plan (dry run)</h3>
              {plan === undefined ? (
                <p class="muted">planning…</p>
              ) : 'error' in plan ? (
                <p class="error">
                  The dry run failed: {plan.error}. The migration can still be tried: it checks again and
                  leaves the container where it is if it cannot move.
                </p>
              ) : (
                <dl>
                  <dt>Strategy</dt>
                  <dd data-testid="plan-strategy">{plan.strategy}</dd>
                  <dt>Why</dt>
                  <dd>{plan.reason}</dd>
                  <dt>Memory</dt>
                  <dd>{formatBytes(plan.memoryBytes)}</dd>
                  <dt>Predicted freeze</dt>
                  <dd>{formatMs(plan.predictedFreezeMs)}</dd>
                </dl>
              )}
            </section>
            {startError && (
              <p class="error" role="alert">
                {startError}
              </p>
            )}
            <div class="buttons">
              <button type="submit" disabled={busy}>
                Migrate
              </button>
              <button type="button" onClick={p.onClose}>
                Cancel
              </button>
            </div>
          </form>
        )}
        {p.id && !finished && <Live progress={p.progress} />}
        {p.id && finished && p.record && <Result record={p.record} where={p.where} progress={p.progress} />}
        {p.id && (
          <div class="buttons">
            <button ref={closeButton} type="button" onClick={p.onClose}>
              {finished ? 'Close' : 'Hide (it goes on)'}
            </button>
          </div>
        )}
      </div>
    </div>
  );
}

/** How far the phase is, in percent, when it has a total (post-copy: the pages that have arrived). */
function progressPercent(p: Progress | undefined): number | undefined {
  if (p?.phase === 'pages' && p.pagesTotal !== undefined && p.pagesRemaining !== undefined)
    return p.pagesTotal === 0 ? 100 : (1 - p.pagesRemaining / p.pagesTotal) * 100;
  return p?.total ? Math.min(100, (p.bytes / p.total) * 100) : undefined;
}

export function Live({ progress }: { progress: Progress | undefined }) {
  const phase = progress?.phase ?? 'plan';
  const pct = progressPercent(progress);
  const pagesLeft = phase === 'pages' ? progress?.pagesRemaining : undefined;
  return (
    <section aria-label="progress" class="live" aria-live="polite">
      <p>
        Phase: <strong data-testid="phase">{phase}</strong>
      </p>
      <div
        class="bar"
        role="progressbar"
        aria-label={`${phase} progress`}
        aria-valuemin={0}
        aria-valuemax={100}
        {...(pct !== undefined ? { 'aria-valuenow': Math.round(pct) } : {})}
      >
        <div class="bar-fill" style={{ width: `${pct ?? 0}%` }} />
      </div>
      <p data-testid="figures">
        {phase === 'rounds' && progress?.round ? `round ${progress.round}: ` : ''}
        {formatBytes(progress?.bytes ?? 0)}
        {progress?.total ? ` of ${formatBytes(progress.total)}` : ''}
        {phase === 'checkpoint' ? ' written' : phase === 'pages' ? ' arrived' : ''}
        {progress?.rate ? `, ${formatBytes(progress.rate)}/s` : ''}
      </p>
      {pagesLeft !== undefined && (
        <p>
          Post-copy pages remaining:{' '}
          <strong data-testid="pages-remaining">{pagesLeft.toLocaleString('en')}</strong>
          {progress?.pagesTotal !== undefined ? ` of ${progress.pagesTotal.toLocaleString('en')}` : ''}
          {pagesLeft === 0 ? ' (the last page has arrived)' : ''}
        </p>
      )}
      {phase === 'pages' && pagesLeft === undefined && (
        <p>
          Post-copy: the container runs on the destination; its remaining memory pages are still arriving from
          the source.
        </p>
      )}
      {progress?.done.length ? (
        <p class="muted">done: {progress.done.map((d) => `${d.name} ${formatMs(d.ms)}`).join(', ')}</p>
      ) : null}
    </section>
  );
}

export function Result({
  record,
  where,
  progress,
}: {
  record: MigrationRecord;
  where: { host: string; status: string } | undefined;
  /** What the event stream showed of it while it ran. */
  progress?: Progress | undefined;
}) {
  const o = outcomeOf(record);
  // the rollback's own account where there is one; a refusal before the freeze (input, plan) touched nothing;
  // else what the hosts report now (a heartbeat behind, so it may say "migrating" for a moment)
  const untouched = o.error?.phase === 'input' || o.error?.phase === 'plan';
  const onSource =
    o.sourceRunning ?? (untouched || (where?.host === record.from && where.status === 'running'));
  if (o.ok)
    return (
      <section class="result ok" aria-live="polite" aria-label="result">
        <p>
          <strong>{record.container}</strong> now runs on <strong>{record.to}</strong>.
        </p>
        <p>
          Freeze <strong data-testid="freeze">{formatMs(o.freezeMs)}</strong>, total {formatMs(o.totalMs)}
          {o.strategy ? ` (${o.strategy})` : ''}.
        </p>
        {progress?.done.length ? (
          <p class="muted" data-testid="phases-seen">
            Phases as they ran: {progress.done.map((d) => `${d.name} ${formatMs(d.ms)}`).join(' · ')}
          </p>
        ) : null}
        {progress?.pagesTotal !== undefined ? (
          <p class="muted" data-testid="pages-seen">
            Post-copy: {progress.pagesTotal.toLocaleString('en')} pages fetched from {record.from} after the
            restore, {(progress.pagesRemaining ?? progress.pagesTotal).toLocaleString('en')} remaining.
          </p>
        ) : null}
      </section>
    );
  return (
    <section class="result failed" role="alert" aria-label="result">
      <p>
        Failed in phase <strong data-testid="error-phase">{o.error?.phase}</strong>:{' '}
        <code data-testid="error-code">{o.error?.code}</code>
      </p>
      <p>{o.error?.message}</p>
      <p>
        {onSource
          ? `${record.container} is still running on ${record.from}.`
          : `${record.container} may not be running on ${record.from}: ${where ? `the hosts report it on ${where.host} (${where.status})` : 'no host reports it'}.`}
      </p>
    </section>
  );
}

/** Keeps Tab inside the dialog. */
function trapFocus(e: KeyboardEvent, root: HTMLElement | null): void {
  if (!root) return;
  const items = [
    ...root.querySelectorAll<HTMLElement>('button:not([disabled]), select, input, [tabindex="0"]'),
  ];
  if (!items.length) return;
  const firstItem = items[0]!;
  const last = items[items.length - 1]!;
  if (e.shiftKey && document.activeElement === firstItem) {
    e.preventDefault();
    last.focus();
  } else if (!e.shiftKey && document.activeElement === last) {
    e.preventDefault();
    firstItem.focus();
  }
}
