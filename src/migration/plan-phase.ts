// The plan phase: checks what must hold before anything is touched (another host, a running container whose
// processes CRIU can move, a free name there), gathers what `auto` weighs (both hosts' capabilities, memory, link and dirty rates) and plans.
import { FerryError } from '../core/errors.ts';
import type { ContainerHost } from '../host/containers.ts';
import { describeUnmovable } from '../runtime/proc-scan.ts';
import { AUTO_MEASURE_MIN_BYTES, DEFAULT_MAX_DOWNTIME_MS, LINK_PROBE_BYTES } from './defaults.ts';
import type { FreezeModel } from './freeze-model.ts';
import { linkRateMatters, planStrategy } from './plan.ts';
import type {
  CapabilitiesReport,
  DestinationPeer,
  MigrationReport,
  MigrationRequest,
  StrategyName,
  StrategySupport,
} from './types.ts';

export interface Planned {
  strategy: StrategyName;
  /** This host's own assessment (the strategy object is built from it). */
  local: Record<StrategyName, StrategySupport>;
}

export async function planMigration(
  deps: { host: ContainerHost; capabilities: () => Promise<CapabilitiesReport> },
  req: MigrationRequest,
  peer: DestinationPeer,
  report: MigrationReport,
  /** The transfer rate an earlier migration to this destination measured (bytes/s). */
  knownRate: number | undefined,
  /** The freezes earlier migrations to this destination measured, for the predicted freeze. */
  freezeModel?: FreezeModel,
): Promise<Planned> {
  const { host } = deps;
  const name = req.name;
  // the one same-host check: the agent and the CLI leave it to this phase
  if (req.to === host.hostName) {
    throw new FerryError('FERRY_E_HOST_SAME', `${name} is already on ${req.to}`, { phase: 'plan' });
  }
  await host.info(name);
  const st = await host.runc.state(name);
  if (st?.status !== 'running') {
    throw new FerryError(
      'FERRY_E_CONTAINER_NOT_RUNNING',
      `container ${name} is ${st?.status ?? 'stopped'}, not running`,
      {
        phase: 'plan',
      },
    );
  }
  // what CRIU cannot dump or restore, refused while nothing is touched rather than found inside the freeze
  // (--skip-in-flight: CRIU drops the TCP connections not yet accepted, which it would refuse otherwise)
  const unmovable = (await host.unmovable(name)).filter(
    (u) => !(req.skipInFlight && u.rule === 'tcp-in-flight'),
  );
  if (unmovable.length) {
    throw new FerryError(
      'FERRY_E_CONTAINER_UNMOVABLE',
      `container ${name} cannot be migrated: ${unmovable.map(describeUnmovable).join('; ')}`,
      {
        phase: 'plan',
        hint: 'the container keeps running here, untouched; migrate it once that process has changed or exited',
        details: { processes: unmovable },
      },
    );
  }
  const [local, remote] = await Promise.all([deps.capabilities(), peer.capabilities()]);
  const memoryBytes = await host.memoryBytes(name);
  report.memoryBytes = memoryBytes;
  let rate = knownRate;
  let dirtyRate: number | undefined;
  let dirtyHotBytes: number | undefined;
  if (req.strategy === 'auto' && memoryBytes >= AUTO_MEASURE_MIN_BYTES) {
    // before anything is frozen: what the link to this destination carries now, and how fast the container
    // touches its memory. The link is measured only when its rate can change the plan: sending megabytes queues
    // behind them every other packet on the link, the container's clients' included, and their retransmission
    // timers remember it (docs/benchmarks.md).
    const measure =
      rate === undefined &&
      linkRateMatters({
        memoryBytes,
        maxDowntimeMs: req.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
        source: local.strategies,
        destination: remote.strategies,
      });
    const [measured, touch] = await Promise.all([
      measure ? peer.measureRate(LINK_PROBE_BYTES).catch(() => undefined) : Promise.resolve(rate),
      host.touchRate(name).catch(() => undefined),
    ]);
    rate = measured;
    if (rate) report.linkRate = Math.round(rate);
    if (touch) {
      dirtyRate = report.dirtyRate = touch.bytesPerSec;
      dirtyHotBytes = report.dirtyHotBytes = touch.hotBytes;
    }
  }
  const plan = planStrategy({
    requested: req.strategy,
    memoryBytes,
    ...(req.maxDowntimeMs !== undefined ? { maxDowntimeMs: req.maxDowntimeMs } : {}),
    ...(rate ? { transferRate: rate } : {}),
    ...(dirtyRate !== undefined ? { dirtyRate } : {}),
    ...(dirtyHotBytes !== undefined ? { dirtyHotBytes } : {}),
    source: local.strategies,
    destination: remote.strategies,
    sourceHost: host.hostName,
    destinationHost: peer.name,
    ...(freezeModel ? { freezeModel } : {}),
  });
  if (await peer.hasContainer(name)) {
    throw new FerryError(
      'FERRY_E_CONTAINER_EXISTS',
      `host ${peer.name} already has a container named ${name}`,
      {
        phase: 'plan',
      },
    );
  }
  report.strategyReason = plan.reason;
  report.predictedFreezeMs = plan.predictedFreezeMs;
  return { strategy: plan.strategy, local: local.strategies };
}
