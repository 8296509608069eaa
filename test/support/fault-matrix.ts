// The fault matrix: every phase of a migration against every fault, as cells. The matrix test
// (test/integration/fault-matrix.test.ts) runs the cells that apply and writes docs/reliability.md from the same
// definitions with what each cell did.
import type { FaultPoint } from '../../src/core/faults.ts';

export const MATRIX_PHASES = [
  'plan',
  'prepare',
  'rounds',
  'checkpoint',
  'transfer',
  'restore',
  'confirm',
  'pages',
] as const;
export type MatrixPhase = (typeof MATRIX_PHASES)[number];

export const MATRIX_FAULTS = [
  'source-killed',
  'dest-killed',
  'link-cut',
  'criu-fail',
  'tmpfs-full',
  'cli-killed',
] as const;
export type MatrixFault = (typeof MATRIX_FAULTS)[number];

export const FAULT_TEXT: Record<MatrixFault, string> = {
  'source-killed':
    'source agent SIGKILLed (its runc and CRIU left running), restarted at once as a supervisor would',
  'dest-killed': 'destination agent SIGKILLed, restarted at once',
  'link-cut':
    'every packet between the two hosts dropped (iptables, both ways) until the migration has ended',
  'criu-fail':
    "CRIU fails (a dump's: its dump's CRIU exits at once, after runc's version check passed; a restore's: runc is handed a CRIU that exits at once; post-copy: the page server is killed)",
  'tmpfs-full': "the destination's images tmpfs has no space left",
  'cli-killed': '`ferry migrate` SIGKILLed',
};

/** Where the migration is held while the fault is done to it, and the strategy that has the phase. */
export const PHASE_SETUP: Record<
  MatrixPhase,
  { point: FaultPoint; strategy: 'cold' | 'precopy' | 'postcopy' }
> = {
  plan: { point: 'source:plan', strategy: 'cold' },
  prepare: { point: 'source:prepare', strategy: 'cold' },
  rounds: { point: 'source:rounds', strategy: 'precopy' },
  checkpoint: { point: 'source:checkpoint', strategy: 'cold' },
  transfer: { point: 'source:transfer', strategy: 'cold' },
  restore: { point: 'dest:restoring', strategy: 'cold' },
  confirm: { point: 'source:confirm', strategy: 'cold' },
  pages: { point: 'source:pages', strategy: 'postcopy' },
};

export interface Cell {
  phase: MatrixPhase;
  fault: MatrixFault;
  /** Why the fault cannot happen in this phase. */
  na?: string;
  /** Why the code does not pass this cell yet (it runs, and its outcome is reported, but it does not fail). */
  todo?: string;
  /** Where the container runs afterwards: the destination only once it was confirmed. */
  expect: 'source' | 'destination';
}

const NA: Partial<Record<`${MatrixFault} ${MatrixPhase}`, string>> = {
  'criu-fail plan': "the plan reads the hosts' CRIU facts gathered at agent start; no CRIU runs in it",
  'criu-fail prepare': 'no CRIU runs in prepare (the destination reserves the name and stages the bundle)',
  'criu-fail transfer': 'no CRIU runs in the transfer (the images are already written)',
  'criu-fail confirm': 'no CRIU runs in confirm (the commit: the restore answer said the container runs)',
  'tmpfs-full plan': 'nothing is written on the destination in the plan',
  'tmpfs-full prepare': "the bundle is staged in the destination's state directory, not its images tmpfs",
  'tmpfs-full confirm': 'nothing is written to the images tmpfs in confirm',
  'tmpfs-full pages': "post-copy's pages go into the restored tasks' memory, not into the images tmpfs",
};

const TODO: Partial<Record<`${MatrixFault} ${MatrixPhase}`, string>> = {
  'criu-fail pages':
    'post-copy after the commit: the memory is split between the hosts, and a page server that dies loses the container (the documented exception of post-copy)',
};

/** Where the container must run after the fault: the destination once the commit was sent (or nothing failed). */
function expected(phase: MatrixPhase, fault: MatrixFault): Cell['expect'] {
  if (phase === 'pages') return 'destination';
  // the restore needs no space in the images tmpfs (CRIU's log and statistics there are not essential)
  if (phase === 'restore' && fault === 'tmpfs-full') return 'destination';
  if (fault === 'cli-killed') return 'destination';
  return 'source';
}

export const CELLS: Cell[] = MATRIX_PHASES.flatMap((phase) =>
  MATRIX_FAULTS.map((fault): Cell => {
    const key = `${fault} ${phase}` as const;
    const na = NA[key];
    const todo = TODO[key];
    return { phase, fault, expect: expected(phase, fault), ...(na ? { na } : {}), ...(todo ? { todo } : {}) };
  }),
);

export interface CellResult {
  cell: Cell;
  outcome: 'pass' | 'fail' | 'todo' | 'n/a';
  /** What happened: the migration's error code or ok, where the container runs, the client's connection. */
  detail: string;
  ms?: number;
}

/** docs/reliability.md, from the cells and their results. */
export function renderReliability(results: CellResult[], meta: { date: string; totalS: number }): string {
  const by = new Map(results.map((r) => [`${r.cell.fault} ${r.cell.phase}`, r]));
  const mark = (r: CellResult | undefined) =>
    !r
      ? '—'
      : r.outcome === 'pass'
        ? 'pass'
        : r.outcome === 'n/a'
          ? 'n/a'
          : r.outcome === 'todo'
            ? 'todo'
            : 'FAIL';
  const applied = results.filter((r) => r.outcome !== 'n/a');
  const passed = applied.filter((r) => r.outcome === 'pass').length;
  const lines = [
    '# Reliability: the fault matrix',
    '',
    '<!-- generated by test/integration/fault-matrix.test.ts (the command below); do not edit -->',
    '',
    "ferry's promise: a migration never loses a container and never runs it twice. The fault matrix checks it",
    'phase by phase against the faults a real cluster sees. Each cell migrates a small TCP server with a client',
    'holding one connection to it from host `a` to host `b` of one testbed, stops the migration at the start of the',
    'phase (a test-only `hold-at:` fault point, `src/core/faults.ts`), does the fault, lets the migration go on,',
    'restarts a killed agent at once (as a supervisor would), mends the link, and then checks the invariant:',
    '',
    '- the container runs **exactly once** (no second process, frozen or running, anywhere), on the source unless the',
    '  destination was confirmed (the commit was sent);',
    '- its client connection survives wherever it runs: no reset, and the server answers it with its own counter,',
    '  unbroken (the same process, its state intact);',
    '- nothing is left behind: no journal entry on the source, no incoming migration, images or reservation on the',
    '  destination, no image file on either (the testbed itself checks for processes, namespaces, links, cgroups and',
    '  mounts when it comes down).',
    '',
    'The agents run with short deadlines for the test (`deadlines`: commit 3 s, stall 1.5 s), so a source that cannot',
    'reach its destination after asking for the restore waits out 3 s before it thaws (decision 9).',
    '',
    `Last run: ${meta.date}, ${passed} of ${applied.length} cells that apply pass, in ${meta.totalS} s.`,
    '',
    `| phase | ${MATRIX_FAULTS.join(' | ')} |`,
    `|---|${MATRIX_FAULTS.map(() => '---').join('|')}|`,
    ...MATRIX_PHASES.map(
      (p) => `| ${p} | ${MATRIX_FAULTS.map((f) => mark(by.get(`${f} ${p}`))).join(' | ')} |`,
    ),
    '',
    '## The faults',
    '',
    ...MATRIX_FAULTS.map((f) => `- **${f}**: ${FAULT_TEXT[f]}`),
    '',
    '## Each cell',
    '',
    '| phase | fault | expected | outcome | what happened |',
    '|---|---|---|---|---|',
    ...results.map(
      (r) =>
        `| ${r.cell.phase} | ${r.cell.fault} | ${r.cell.na ? '—' : `runs on the ${r.cell.expect}`} | ${mark(r)} | ${(
          r.cell.na ?? (r.cell.todo ? `${r.detail} (todo: ${r.cell.todo})` : r.detail)
        ).replaceAll('|', '\\|')} |`,
    ),
    '',
    '## How to run it',
    '',
    '```',
    'FERRY_UPDATE_DOCS=1 node --no-warnings --test --test-concurrency=1 --test-timeout=600000 test/integration/fault-matrix.test.ts',
    '```',
    '',
    'as root on a host `make setup` prepared. `make test` runs it too but leaves this page as it is (it is written only',
    'with `FERRY_UPDATE_DOCS=1`). `FERRY_MATRIX=restore,link-cut` runs the',
    'cells whose phase or fault is named, `FERRY_MATRIX=pages/link-cut` one cell (this page is then left as it is).',
    '',
    '## A stuck dump',
    '',
    'Beside the matrix, the same file checks checkpoint × criu-hang: a dump that never ends. The container holds a',
    'task in a signal stop, and the test-only fault `criu-hang:dump` makes its dump go without the ptrace-only seize',
    'such a task needs (decision 0016), so CRIU waits in its seize on the frozen cgroup. At the freeze ceiling',
    '(`deadlines.freezeMs`: 5 s for this case, its source agent restarted with it; the cells keep 15 s, as their holds',
    'and agent restarts happen inside the freeze) runc and the CRIU under it are killed together (runc checkpoint runs',
    'in a process group of its own) and are gone before the rollback resumes the container: killing runc alone left',
    'CRIU seizing, the resume let the seize finish, and CRIU then put the freezer back as it had found it, frozen, so',
    'the container stayed paused. The migration fails with `FERRY_E_CHECKPOINT_FAILED` in phase `checkpoint`, its',
    'message naming the deadline; the container runs once on the source, not paused, no CRIU holds its tasks, and its',
    'client keeps its connection. `FERRY_MATRIX=criu-hang` runs it alone.',
    '',
  ];
  return lines.join('\n');
}
