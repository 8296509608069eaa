// The dashboard's dry run of one move: the controller's checks, then the engine's own planner on both hosts'
// capabilities and the container's memory from its last heartbeat. The link and dirty rates are measured only
// by a real migration, so the prediction uses the planner's defaults for them and says so.
import type { MovePlan, MoveRequest, ProcessList } from '../../api/dashboard.ts';
import type { CapabilitiesReport, HostRecord } from '../../api/types.ts';
import { FerryError } from '../../core/errors.ts';
import { planStrategy } from '../../migration/plan.ts';
import type { Controller } from '../controller.ts';

/** What the dashboard asks of agents beyond what the controller does (HttpAgentPool answers both). */
export interface DashboardAgents {
  capabilities(h: HostRecord): Promise<CapabilitiesReport>;
  processes(h: HostRecord, container: string): Promise<ProcessList>;
}

export async function hostRecord(controller: Controller, name: string): Promise<HostRecord> {
  const h = (await controller.summary()).hosts.find((x) => x.name === name);
  if (!h) throw new FerryError('FERRY_E_HOST_UNKNOWN', `unknown host ${name}`, { phase: 'input' });
  return h;
}

export async function planMove(
  controller: Controller,
  agents: DashboardAgents,
  req: MoveRequest,
): Promise<MovePlan> {
  const move = await controller.checkMove(req.container, req.to);
  const [from, to] = await Promise.all([hostRecord(controller, move.from), hostRecord(controller, move.to)]);
  const [a, b] = await Promise.all([agents.capabilities(from), agents.capabilities(to)]);
  const plan = planStrategy({
    requested: req.strategy,
    memoryBytes: move.memoryBytes,
    ...(req.maxDowntimeMs !== undefined ? { maxDowntimeMs: req.maxDowntimeMs } : {}),
    source: a.strategies,
    destination: b.strategies,
    sourceHost: from.name,
    destinationHost: to.name,
  });
  return {
    container: move.container,
    from: move.from,
    to: move.to,
    strategy: plan.strategy,
    reason:
      req.strategy === 'auto'
        ? `${plan.reason} (link and dirty rate not measured in a dry run)`
        : 'asked for',
    memoryBytes: move.memoryBytes,
    predictedFreezeMs: plan.predictedFreezeMs,
  };
}
