// The overview: one card per host (state, last heartbeat, CPU and memory against capacity) holding its containers,
// each a tree item that expands into its process tree. A container is dragged onto another host, or moved with
// its "Move to…" menu from the keyboard; either opens the migration dialog.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { ProcessInfo, ProcessList } from '../api/dashboard.ts';
import type { ClusterSummary, ContainerStat } from '../api/types.ts';
import {
  buildTree,
  formatAgo,
  formatBytes,
  memoryPercent,
  type ProcessNode,
  type Progress,
  stateText,
  visiblePids,
} from './model.ts';

type Host = ClusterSummary['hosts'][number];

export type ProcessState = ProcessList | { error: string } | 'loading';

export interface OverviewProps {
  cluster: ClusterSummary;
  now: number;
  filter: string;
  processes: Map<string, ProcessState>;
  expanded: Set<string>;
  onToggle(host: string, container: string): void;
  /** Containers on their way, by name. */
  moving: Map<string, Progress & { to: string }>;
  onMove(container: string, from: string, to: string): void;
  /** Whether a container is shown under the filter. */
  shown(host: string, c: ContainerStat): boolean;
}

const DRAG_TYPE = 'application/x-ferry-container';

export function Overview(props: OverviewProps) {
  const [dropOn, setDropOn] = useState<string | undefined>();
  const hosts = props.cluster.hosts;
  return (
    <div class="hosts">
      {hosts.length === 0 && <p>No host has reported to the controller yet.</p>}
      {hosts.map((h) => (
        <section
          key={h.name}
          class={`host${h.up ? '' : ' host-down'}${dropOn === h.name ? ' drop-target' : ''}`}
          aria-label={`host ${h.name}`}
          data-host={h.name}
          onDragOver={(e) => {
            if (!e.dataTransfer?.types.includes(DRAG_TYPE)) return;
            e.preventDefault();
            if (e.dataTransfer) e.dataTransfer.dropEffect = 'move';
            setDropOn(h.name);
          }}
          onDragLeave={() => setDropOn(undefined)}
          onDrop={(e) => {
            setDropOn(undefined);
            const raw = e.dataTransfer?.getData(DRAG_TYPE);
            if (!raw) return;
            e.preventDefault();
            const d = JSON.parse(raw) as { container: string; from: string };
            if (d.from !== h.name) props.onMove(d.container, d.from, h.name);
          }}
        >
          <HostHeader h={h} now={props.now} />
          <div role="tree" aria-label={`containers on ${h.name}`} class="tree" onKeyDown={moveFocusInTree}>
            {h.containers
              .filter((c) => props.shown(h.name, c))
              .map((c) => (
                <ContainerItem
                  key={c.name}
                  host={h}
                  c={c}
                  others={hosts.filter((o) => o.name !== h.name && o.up).map((o) => o.name)}
                  {...props}
                />
              ))}
            {h.containers.length === 0 && <p class="empty">no containers</p>}
          </div>
        </section>
      ))}
    </div>
  );
}

function HostHeader({ h, now }: { h: Host; now: number }) {
  const mem = h.containers.reduce((s, c) => s + c.memoryBytes, 0);
  return (
    <header>
      <h2>{h.name}</h2>
      <span class={h.up ? 'badge up' : 'badge down'}>{h.up ? 'up' : 'down'}</span>
      <span class="muted" title={new Date(h.lastSeen).toISOString()}>
        heartbeat {formatAgo(now - h.lastSeen)}
      </span>
      <Bar
        label={`CPU load of ${h.name}`}
        short="CPU"
        percent={h.loadPercent}
        text={`${h.loadPercent.toFixed(0)}% of ${h.capacity.cores} cores`}
      />
      <Bar
        label={`memory of ${h.name}`}
        short="Memory"
        percent={memoryPercent(mem, h.capacity.memoryBytes)}
        text={`${formatBytes(mem)} of ${formatBytes(h.capacity.memoryBytes)}`}
      />
    </header>
  );
}

export function Bar(p: { label: string; short: string; percent: number; text: string }) {
  const v = Math.max(0, Math.min(100, p.percent));
  return (
    <div class="bar-row">
      <span class="bar-label">{p.short}</span>
      <meter
        class="bar"
        aria-label={p.label}
        aria-valuetext={p.text}
        min={0}
        max={100}
        high={80}
        optimum={0}
        value={v}
      />
      <span class="bar-text">{p.text}</span>
    </div>
  );
}

function ContainerItem(props: OverviewProps & { host: Host; c: ContainerStat; others: string[] }) {
  const { host, c } = props;
  const key = `${host.name}/${c.name}`;
  const open = props.expanded.has(key) || (props.filter.trim() !== '' && props.processes.has(key));
  const procs = props.processes.get(key);
  const moving = props.moving.get(c.name);
  return (
    <div
      role="treeitem"
      aria-expanded={open}
      aria-label={`container ${c.name}`}
      tabIndex={0}
      draggable={host.up && c.status === 'running'}
      data-container={c.name}
      class="container"
      onDragStart={(e) => {
        e.dataTransfer?.setData(DRAG_TYPE, JSON.stringify({ container: c.name, from: host.name }));
        if (e.dataTransfer) e.dataTransfer.effectAllowed = 'move';
      }}
      onKeyDown={(e) => {
        if (e.target !== e.currentTarget) return;
        if ((e.key === 'ArrowRight' && !open) || (e.key === 'ArrowLeft' && open) || e.key === 'Enter') {
          e.preventDefault();
          props.onToggle(host.name, c.name);
        }
      }}
    >
      <div class="row">
        <button
          type="button"
          class="twisty"
          tabIndex={-1}
          aria-label={`${open ? 'collapse' : 'expand'} ${c.name}`}
          onClick={() => props.onToggle(host.name, c.name)}
        >
          {open ? '▾' : '▸'}
        </button>
        <span class="name">{c.name}</span>
        <span class={`status status-${c.status}`}>{c.status}</span>
        <span class="muted">{c.cpuPercent.toFixed(0)}% CPU</span>
        <span class="muted">{formatBytes(c.memoryBytes)}</span>
        {moving && (
          <output class="moving">
            moving to {moving.to}
            {moving.phase ? `: ${moving.phase}` : ''}
          </output>
        )}
        <MoveMenu container={c.name} from={host.name} hosts={props.others} onPick={props.onMove} />
      </div>
      {open && (
        // biome-ignore lint/a11y/useSemanticElements: a tree's group of items (WAI-ARIA tree pattern), not a form's fieldset
        <div role="group" class="procs">
          {procs === undefined || procs === 'loading' ? (
            <p class="muted">loading processes…</p>
          ) : 'error' in procs ? (
            <p class="error">{procs.error}</p>
          ) : (
            <ProcessForest list={procs.processes} filter={props.filter} />
          )}
        </div>
      )}
    </div>
  );
}

function ProcessForest({ list, filter }: { list: ProcessInfo[]; filter: string }) {
  const show = filter.trim() ? visiblePids(list, filter) : undefined;
  const roots = buildTree(list);
  if (!list.length) return <p class="muted">no processes (not running)</p>;
  return (
    <>
      {roots.map((n) => (
        <ProcessItem key={n.p.pid} n={n} show={show} />
      ))}
    </>
  );
}

function ProcessItem({ n, show }: { n: ProcessNode; show: Set<number> | undefined }) {
  const [card, setCard] = useState(false);
  if (show && !show.has(n.p.pid)) return null;
  const p = n.p;
  const id = `proc-${p.pid}`;
  const kids = n.children.filter((k) => !show || show.has(k.p.pid));
  return (
    <div
      role="treeitem"
      tabIndex={0}
      aria-label={`process ${p.nsPid ?? p.pid} ${p.comm}`}
      aria-describedby={card ? `${id}-card` : undefined}
      {...(n.children.length ? { 'aria-expanded': true } : {})}
      data-pid={p.pid}
      class={`proc${show?.has(p.pid) ? ' match' : ''}`}
      onFocus={(e) => e.target === e.currentTarget && setCard(true)}
      onBlur={() => setCard(false)}
    >
      {/* the row, not the item: hovering a child must not open its parent's card */}
      {/* biome-ignore lint/a11y/noStaticElementInteractions: the pointer's way to the card that keyboard focus on the tree item opens */}
      <div class="proc-row" onMouseEnter={() => setCard(true)} onMouseLeave={() => setCard(false)}>
        <span class="pid">{p.nsPid ?? p.pid}</span> <span class="cmd">{p.cmdline || `[${p.comm}]`}</span>
      </div>
      {card && (
        <div role="tooltip" id={`${id}-card`} class="card">
          <dl>
            <dt>PID</dt>
            <dd>
              {p.nsPid ?? p.pid} in the container, {p.pid} on the host
            </dd>
            <dt>Command</dt>
            <dd>{p.cmdline || p.comm}</dd>
            <dt>State</dt>
            <dd>{stateText(p.state)}</dd>
            <dt>RSS</dt>
            <dd>{formatBytes(p.rssBytes)}</dd>
            <dt>Threads</dt>
            <dd>{p.threads}</dd>
            <dt>Children</dt>
            <dd>{n.children.length}</dd>
          </dl>
        </div>
      )}
      {kids.length > 0 && (
        // biome-ignore lint/a11y/useSemanticElements: a tree's group of items (WAI-ARIA tree pattern), not a form's fieldset
        <div role="group">
          {kids.map((k) => (
            <ProcessItem key={k.p.pid} n={k} show={show} />
          ))}
        </div>
      )}
    </div>
  );
}

/** Up and Down move the focus through the tree's visible items (Tab moves on to the next control). */
function moveFocusInTree(e: KeyboardEvent): void {
  if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
  const tree = e.currentTarget as HTMLElement;
  const items = [...tree.querySelectorAll<HTMLElement>('[role="treeitem"]')];
  const i = items.indexOf(document.activeElement as HTMLElement);
  if (i < 0) return;
  e.preventDefault();
  items[e.key === 'ArrowDown' ? Math.min(items.length - 1, i + 1) : Math.max(0, i - 1)]?.focus();
}

/** "Move to…": the keyboard's way to drag (a menu button; arrows, Enter, Escape). */
function MoveMenu(p: {
  container: string;
  from: string;
  hosts: string[];
  onPick(c: string, f: string, t: string): void;
}) {
  const [open, setOpen] = useState(false);
  const list = useRef<HTMLDivElement>(null);
  const button = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (open) list.current?.querySelector<HTMLElement>('[role="menuitem"]')?.focus();
  }, [open]);
  const close = () => {
    setOpen(false);
    button.current?.focus();
  };
  return (
    <span class="menu-wrap">
      <button
        ref={button}
        type="button"
        aria-haspopup="menu"
        aria-expanded={open}
        aria-label={`Move ${p.container} to…`}
        disabled={p.hosts.length === 0}
        onClick={() => setOpen(!open)}
      >
        Move to…
      </button>
      {open && (
        <div
          ref={list}
          role="menu"
          aria-label={`hosts to move ${p.container} to`}
          class="menu"
          onKeyDown={(e) => {
            const items = [...(list.current?.querySelectorAll<HTMLElement>('[role="menuitem"]') ?? [])];
            const i = items.indexOf(document.activeElement as HTMLElement);
            if (e.key === 'Escape') close();
            else if (e.key === 'ArrowDown') items[(i + 1) % items.length]?.focus();
            else if (e.key === 'ArrowUp') items[(i - 1 + items.length) % items.length]?.focus();
            else return;
            e.preventDefault();
            e.stopPropagation();
          }}
        >
          {p.hosts.map((h) => (
            <div
              key={h}
              role="menuitem"
              tabIndex={-1}
              onClick={() => {
                setOpen(false);
                p.onPick(p.container, p.from, h);
              }}
              onKeyDown={(e) => {
                if (e.key === 'Enter' || e.key === ' ') {
                  e.preventDefault();
                  setOpen(false);
                  p.onPick(p.container, p.from, h);
                }
              }}
            >
              {h}
            </div>
          ))}
        </div>
      )}
    </span>
  );
}
