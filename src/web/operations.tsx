// Rebalance and drain: a dry run shows the migration map with every host's load before and after; "Apply" runs
// it, and its migrations show their progress like single ones (the activity list).
import { useState } from 'preact/hooks';
import type { BatchReply } from '../api/dashboard.ts';
import type { ClusterSummary, MigrationRecord } from '../api/types.ts';
import { post } from './api.ts';
import { formatMs, outcomeOf, type Progress } from './model.ts';
import { Bar } from './overview.tsx';

type Op = { kind: 'rebalance'; target: string } | { kind: 'drain'; host: string };

export function Operations(p: { cluster: ClusterSummary }) {
  const [target, setTarget] = useState('');
  const [host, setHost] = useState(p.cluster.hosts[0]?.name ?? '');
  const [preview, setPreview] = useState<{ op: Op; reply: BatchReply } | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [applied, setApplied] = useState<string | undefined>();

  const run = async (op: Op, dryRun: boolean) => {
    setError(undefined);
    try {
      const reply =
        op.kind === 'rebalance'
          ? await post<BatchReply>('/api/rebalance', {
              dryRun,
              ...(/^\d+$/.test(op.target) ? { targetPercent: Number(op.target) } : {}),
            })
          : await post<BatchReply>('/api/drain', { host: op.host, dryRun });
      if (dryRun) setPreview({ op, reply });
      else {
        setPreview(undefined);
        setApplied(
          reply.batch ? `started ${reply.batch}: ${reply.plan.moves.length} moves` : 'nothing to move',
        );
      }
    } catch (err) {
      setError((err as Error).message);
    }
  };

  return (
    <div class="ops">
      <form
        aria-label="rebalance"
        onSubmit={(e) => {
          e.preventDefault();
          void run({ kind: 'rebalance', target }, true);
        }}
      >
        <h2>Rebalance</h2>
        <label>
          Target load (%)
          <input
            type="number"
            min={1}
            max={100}
            placeholder="controller's"
            value={target}
            onInput={(e) => setTarget(e.currentTarget.value)}
          />
        </label>
        <button type="submit">Preview rebalance</button>
      </form>
      <form
        aria-label="drain"
        onSubmit={(e) => {
          e.preventDefault();
          void run({ kind: 'drain', host }, true);
        }}
      >
        <h2>Drain a host</h2>
        <label>
          Host
          <select value={host} onChange={(e) => setHost(e.currentTarget.value)}>
            {p.cluster.hosts.map((h) => (
              <option key={h.name} value={h.name}>
                {h.name}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Preview drain</button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {applied && <output>{applied}</output>}
      {preview && (
        <section aria-label="migration map" class="preview">
          <h3>
            {preview.op.kind === 'drain' ? `Drain ${preview.op.host}` : 'Rebalance'}: migration map (dry run)
          </h3>
          {preview.reply.plan.moves.length === 0 ? (
            <p>Nothing to move.</p>
          ) : (
            <ul>
              {preview.reply.plan.moves.map((m) => (
                <li key={m.container}>
                  {m.container}: {m.from} → {m.to} ({m.cpuPercent.toFixed(0)}% CPU; {m.reason})
                </li>
              ))}
            </ul>
          )}
          <table>
            <thead>
              <tr>
                <th scope="col">Host</th>
                <th scope="col">Load before</th>
                <th scope="col">Load after</th>
              </tr>
            </thead>
            <tbody>
              {Object.keys(preview.reply.plan.before)
                .sort()
                .map((h) => (
                  <tr key={h}>
                    <th scope="row">{h}</th>
                    <td>
                      <Bar
                        label={`${h} load before`}
                        short=""
                        percent={preview.reply.plan.before[h] ?? 0}
                        text={`${(preview.reply.plan.before[h] ?? 0).toFixed(0)}%`}
                      />
                    </td>
                    <td>
                      <Bar
                        label={`${h} load after`}
                        short=""
                        percent={preview.reply.plan.after[h] ?? 0}
                        text={`${(preview.reply.plan.after[h] ?? 0).toFixed(0)}%`}
                      />
                    </td>
                  </tr>
                ))}
            </tbody>
          </table>
          {preview.reply.plan.notes.map((n) => (
            <p key={n} class="muted">
              note: {n}
            </p>
          ))}
          {preview.reply.plan.moves.length > 0 && (
            <button type="button" onClick={() => void run(preview.op, false)}>
              Apply
            </button>
          )}
        </section>
      )}
    </div>
  );
}

/**
 * Migrations planned or running, and the last finished ones, whatever started them (a drag, a rebalance, a drain);
 * each opens the same progress and result view as a single move.
 */
export function Activity(p: {
  history: MigrationRecord[];
  progress: Map<string, Progress>;
  onOpen(m: MigrationRecord): void;
}) {
  const now = p.history.filter((m) => m.status === 'planned' || m.status === 'running');
  const recent = p.history
    .filter((m) => m.status === 'done' || m.status === 'failed')
    .sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0))
    .slice(0, 5);
  return (
    <aside class="activity" aria-label="activity">
      <h2>Activity</h2>
      <ul aria-live="polite">
        {now.map((m) => {
          const pr = p.progress.get(m.id);
          return (
            <li key={m.id} class="running">
              <button type="button" class="link" onClick={() => p.onOpen(m)}>
                {m.container}: {m.from} → {m.to} — {m.status}
                {pr?.phase ? `, ${pr.phase}` : ''}
                {pr?.phase === 'pages' && pr.pagesRemaining !== undefined
                  ? ` ${pr.pagesRemaining.toLocaleString('en')} pages to go`
                  : pr?.total
                    ? ` ${Math.round((pr.bytes / pr.total) * 100)}%`
                    : ''}
              </button>
            </li>
          );
        })}
        {recent.map((m) => {
          const o = outcomeOf(m);
          return (
            <li key={m.id} class={m.status}>
              <button type="button" class="link" onClick={() => p.onOpen(m)}>
                {m.container}: {m.from} → {m.to} —{' '}
                {o.ok
                  ? `done, freeze ${formatMs(o.freezeMs)}`
                  : `failed: ${o.error?.code} (${o.error?.phase})`}
              </button>
            </li>
          );
        })}
        {now.length + recent.length === 0 && <li class="muted">no migration yet</li>}
      </ul>
    </aside>
  );
}
