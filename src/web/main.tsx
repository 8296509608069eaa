// The dashboard page: the cluster's picture from the controller's event stream (never polled), three views
// (overview with process trees, history, rebalance and drain), the migration dialog and the activity list.
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { DashboardEvent, ProcessList } from '../api/dashboard.ts';
import type { ClusterSummary, ContainerStat, MigrationRecord } from '../api/types.ts';
import { get, post, subscribe } from './api.ts';
import { History } from './history.tsx';
import { MigrateDialog, type MoveAsk } from './migrate-dialog.tsx';
import { containerMatches, foldProgress, type Progress } from './model.ts';
import { Activity, Operations } from './operations.tsx';
import { Overview, type ProcessState } from './overview.tsx';
import './style.css';

type Tab = 'overview' | 'history' | 'operations';
const TABS: { id: Tab; label: string }[] = [
  { id: 'overview', label: 'Overview' },
  { id: 'history', label: 'History' },
  { id: 'operations', label: 'Rebalance & drain' },
];

function App() {
  const [cluster, setCluster] = useState<ClusterSummary | undefined>();
  const [connected, setConnected] = useState(false);
  const [history, setHistory] = useState<MigrationRecord[]>([]);
  const [progress, setProgress] = useState(new Map<string, Progress>());
  const [processes, setProcesses] = useState(new Map<string, ProcessState>());
  const [expanded, setExpanded] = useState(new Set<string>());
  const [filter, setFilter] = useState('');
  const [tab, setTab] = useState<Tab>('overview');
  const [dialog, setDialog] = useState<{ ask: MoveAsk; id?: string } | undefined>();
  const [now, setNow] = useState(Date.now());

  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    const stop = subscribe(onEvent, setConnected);
    return () => {
      clearInterval(t);
      stop();
    };
  }, []);

  function onEvent(e: DashboardEvent) {
    if (e.type === 'cluster') setCluster(e.cluster);
    // the stream opens with every record (again after a reconnect): it replaces what the page had
    else if (e.type === 'history') setHistory(e.migrations);
    else if (e.type === 'migration')
      setHistory((h) => {
        const i = h.findIndex((m) => m.id === e.migration.id);
        return i < 0 ? [...h, e.migration] : h.map((m, j) => (j === i ? e.migration : m));
      });
    else if (e.type === 'progress') setProgress((m) => new Map(m).set(e.id, foldProgress(m.get(e.id), e)));
  }

  const loadProcesses = (host: string, name: string) => {
    const key = `${host}/${name}`;
    setProcesses((m) => new Map(m).set(key, m.get(key) ?? 'loading'));
    get<ProcessList>(`/api/processes/${encodeURIComponent(host)}/${encodeURIComponent(name)}`).then(
      (r) => setProcesses((m) => new Map(m).set(key, r)),
      (err: Error) => setProcesses((m) => new Map(m).set(key, { error: err.message })),
    );
  };

  // typing a filter reads every running container's processes once, so that a PID or a command can be found
  useEffect(() => {
    if (!filter.trim() || !cluster) return;
    for (const h of cluster.hosts)
      for (const c of h.containers)
        if (h.up && c.status === 'running' && !processes.has(`${h.name}/${c.name}`))
          loadProcesses(h.name, c.name);
  }, [filter, cluster]);

  const onToggle = (host: string, name: string) => {
    const key = `${host}/${name}`;
    const open = !expanded.has(key);
    setExpanded((s) => {
      const n = new Set(s);
      if (open) n.add(key);
      else n.delete(key);
      return n;
    });
    if (open) loadProcesses(host, name);
  };

  const moving = useMemo(() => {
    const m = new Map<string, Progress & { to: string }>();
    for (const r of history)
      if (r.status === 'running' || r.status === 'planned') {
        const p = progress.get(r.id) ?? { id: r.id, container: r.container, bytes: 0, done: [] };
        m.set(r.container, { ...p, to: r.to });
      }
    return m;
  }, [history, progress]);

  const shown = (host: string, c: ContainerStat) => {
    const p = processes.get(`${host}/${c.name}`);
    return containerMatches(
      c.name,
      p && p !== 'loading' && 'processes' in p ? p.processes : undefined,
      filter,
    );
  };

  const record = dialog?.id ? history.find((m) => m.id === dialog.id) : undefined;
  const whereHost = dialog
    ? cluster?.hosts.find((h) => h.containers.some((c) => c.name === dialog.ask.container))
    : undefined;
  const where = whereHost
    ? {
        host: whereHost.name,
        status: whereHost.containers.find((c) => c.name === dialog?.ask.container)?.status ?? '?',
      }
    : undefined;
  return (
    <>
      <header class="top">
        <h1>ferry</h1>
        <div role="tablist" aria-label="views" class="tabs">
          {TABS.map((t) => (
            <button
              key={t.id}
              type="button"
              role="tab"
              id={`tab-${t.id}`}
              aria-selected={tab === t.id}
              aria-controls={`panel-${t.id}`}
              tabIndex={tab === t.id ? 0 : -1}
              onClick={() => setTab(t.id)}
              onKeyDown={(e) => {
                const i = TABS.findIndex((x) => x.id === tab);
                const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
                if (!d) return;
                const next = TABS[(i + d + TABS.length) % TABS.length]!;
                setTab(next.id);
                document.getElementById(`tab-${next.id}`)?.focus();
              }}
            >
              {t.label}
            </button>
          ))}
        </div>
        <output class={connected ? 'badge up' : 'badge down'}>{connected ? 'live' : 'reconnecting…'}</output>
        <button
          type="button"
          class="logout"
          onClick={() => void post('/api/logout', {}).finally(() => window.location.reload())}
        >
          Log out
        </button>
      </header>
      <div class="layout">
        <main>
          {tab === 'overview' && (
            <section role="tabpanel" id="panel-overview" aria-labelledby="tab-overview">
              <label class="filter">
                Filter by name, PID or command
                <input
                  type="search"
                  value={filter}
                  onInput={(e) => setFilter(e.currentTarget.value)}
                  placeholder="e.g. redis, 1, sleep"
                />
              </label>
              {cluster ? (
                <Overview
                  cluster={cluster}
                  now={now}
                  filter={filter}
                  processes={processes}
                  expanded={expanded}
                  onToggle={onToggle}
                  moving={moving}
                  onMove={(container, from, to) => setDialog({ ask: { container, from, to } })}
                  shown={shown}
                />
              ) : (
                <p>Loading the cluster…</p>
              )}
            </section>
          )}
          {tab === 'history' && (
            <section role="tabpanel" id="panel-history" aria-labelledby="tab-history">
              <History history={history} />
            </section>
          )}
          {tab === 'operations' && cluster && (
            <section role="tabpanel" id="panel-operations" aria-labelledby="tab-operations">
              <Operations cluster={cluster} />
            </section>
          )}
        </main>
        <Activity
          history={history}
          progress={progress}
          onOpen={(m) => setDialog({ ask: { container: m.container, from: m.from, to: m.to }, id: m.id })}
        />
      </div>
      {dialog && (
        <MigrateDialog
          ask={dialog.ask}
          id={dialog.id}
          onStarted={(id) => setDialog({ ...dialog, id })}
          progress={dialog.id ? progress.get(dialog.id) : undefined}
          record={record}
          where={where}
          onClose={() => setDialog(undefined)}
        />
      )}
    </>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
