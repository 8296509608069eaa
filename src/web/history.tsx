// History: every migration the controller recorded, newest first, each with its phase timeline and figures; and
// a chart of freeze time against memory size, one series per strategy (uPlot, bundled).
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { MigrationRecord } from '../api/types.ts';
import { formatBytes, formatMs, freezeSeries, outcomeOf } from './model.ts';

const COLOURS: Record<string, string> = {
  cold: '#2563eb',
  precopy: '#16a34a',
  postcopy: '#d97706',
  hybrid: '#9333ea',
};

export function History({ history }: { history: MigrationRecord[] }) {
  const [open, setOpen] = useState<string | undefined>();
  const rows = [...history].sort((a, b) => (b.startedAt ?? b.createdAt) - (a.startedAt ?? a.createdAt));
  return (
    <div class="history">
      <FreezeChart history={history} />
      <table>
        <caption>Migrations ({history.length})</caption>
        <thead>
          <tr>
            <th scope="col">Container</th>
            <th scope="col">From → to</th>
            <th scope="col">Status</th>
            <th scope="col">Strategy</th>
            <th scope="col">Freeze</th>
            <th scope="col">Total</th>
            <th scope="col">Memory</th>
            <th scope="col">Why</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((m) => {
            const o = outcomeOf(m);
            const isOpen = open === m.id;
            return [
              <tr key={m.id} class={`status-${m.status}`}>
                <td>
                  <button
                    type="button"
                    class="link"
                    aria-expanded={isOpen}
                    aria-controls={`tl-${m.id}`}
                    onClick={() => setOpen(isOpen ? undefined : m.id)}
                  >
                    {m.container}
                  </button>
                </td>
                <td>
                  {m.from} → {m.to}
                </td>
                <td>{m.status}</td>
                <td>{o.strategy ?? '–'}</td>
                <td>{formatMs(o.freezeMs)}</td>
                <td>{formatMs(o.totalMs)}</td>
                <td>{formatBytes(o.memoryBytes)}</td>
                <td class="muted">{o.error ? `${o.error.code} (${o.error.phase})` : m.reason}</td>
              </tr>,
              isOpen && (
                <tr key={`${m.id}-tl`} id={`tl-${m.id}`}>
                  <td colSpan={8}>
                    <Timeline phases={o.phases} />
                    {o.error && <p class="error">{o.error.message}</p>}
                  </td>
                </tr>
              ),
            ];
          })}
        </tbody>
      </table>
    </div>
  );
}

/** The phases side by side, each as wide as it took. */
function Timeline({ phases }: { phases: { name: string; ms: number }[] }) {
  const total = phases.reduce((s, p) => s + p.ms, 0) || 1;
  if (!phases.length) return <p class="muted">no phase ran (refused before the plan)</p>;
  return (
    <ol class="timeline" aria-label="phase timeline">
      {phases.map((p, i) => (
        <li
          key={`${p.name}${i}`}
          class={`ph ph-${p.name}`}
          style={{ flexGrow: Math.max(p.ms / total, 0.02) }}
        >
          <span>
            {p.name} {formatMs(p.ms)}
          </span>
        </li>
      ))}
    </ol>
  );
}

function FreezeChart({ history }: { history: MigrationRecord[] }) {
  const box = useRef<HTMLDivElement>(null);
  const { strategies, xs, ys } = freezeSeries(history);
  const key = JSON.stringify([xs, ys]);
  useEffect(() => {
    const el = box.current;
    if (!el || xs.length === 0) return;
    const width = Math.max(280, Math.min(el.clientWidth || 600, 900));
    const plot = new uPlot(
      {
        width,
        height: 260,
        title: 'Freeze time against memory size',
        scales: { x: { time: false } },
        axes: [{ label: 'memory (MiB)' }, { label: 'freeze (ms)' }],
        series: [
          { label: 'memory MiB' },
          ...strategies.map((s) => ({
            label: s,
            stroke: COLOURS[s] ?? '#555',
            fill: COLOURS[s] ?? '#555',
            paths: () => null,
            points: { show: true, size: 8, fill: COLOURS[s] ?? '#555' },
          })),
        ],
      },
      [xs, ...ys] as uPlot.AlignedData,
      el,
    );
    return () => plot.destroy();
  }, [key]);
  return (
    <figure class="chart">
      <div
        ref={box}
        role="img"
        aria-label={`freeze time against memory size for ${strategies.join(', ') || 'no strategy yet'}`}
      />
      {xs.length === 0 && (
        <figcaption class="muted">No finished migration with its memory size yet.</figcaption>
      )}
    </figure>
  );
}
