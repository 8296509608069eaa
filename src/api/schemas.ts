// Request schemas of the agent and controller APIs: every body and parameter is validated against them, once, by
// the server before a handler runs. The wire types in types.ts are derived from them.
import { Type } from '@sinclair/typebox';
import { NAME_PATTERN } from '../core/names.ts';

export const Name = Type.String({ pattern: NAME_PATTERN, maxLength: 64 });
export const Id = Type.String({ pattern: '^m[0-9a-f]{12}$' });
export const NameParams = Type.Object({ name: Name }, { additionalProperties: false });
export const IdParams = Type.Object({ id: Id }, { additionalProperties: false });
export const PartParams = Type.Object(
  { id: Id, part: Type.Union([Type.Literal('bundle'), Type.Literal('images')]) },
  { additionalProperties: false },
);

/** update=1: the bundle part updates the tree sent at prepare (removal records, then what changed). */
export const PartQuery = Type.Object(
  { update: Type.Optional(Type.Literal('1')) },
  { additionalProperties: false },
);

export const RangeQuery = Type.Object(
  {
    file: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' }),
    offset: Type.String({ pattern: '^[0-9]{1,15}$' }),
    length: Type.String({ pattern: '^[0-9]{1,15}$' }),
    total: Type.String({ pattern: '^[0-9]{1,15}$' }),
    /** '1': the body is pieces (zero pages skipped, transport/pieces.ts) */
    sparse: Type.Optional(Type.Literal('1')),
  },
  { additionalProperties: false },
);

export const NetMode = Type.Union([Type.Literal('none'), Type.Literal('own'), Type.Literal('host')]);

export const CreateBody = Type.Object(
  {
    name: Name,
    command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 256 })),
    upload: Type.Optional(Type.Boolean()),
    net: Type.Optional(NetMode),
    ip: Type.Optional(Type.String({ format: 'ipv4' })),
  },
  { additionalProperties: false },
);

/** A claim on a name (and an address) while a container is created somewhere in the cluster (core/claims.ts). */
export const ClaimToken = Type.String({ pattern: '^r[0-9a-f]{16}$' });
export const ClaimBody = Type.Object(
  { token: ClaimToken, name: Name, ip: Type.Optional(Type.String({ format: 'ipv4' })), host: Name },
  { additionalProperties: false },
);
export const ClaimParams = Type.Object({ token: ClaimToken }, { additionalProperties: false });

export const Endpoint = Type.Object(
  {
    name: Name,
    address: Type.String({ format: 'ipv4' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
  },
  { additionalProperties: false },
);

/** The strategies a migration can be asked for (auto: the planner picks). */
export const StrategyChoice = Type.Union([
  Type.Literal('auto'),
  Type.Literal('cold'),
  Type.Literal('precopy'),
  Type.Literal('postcopy'),
  Type.Literal('hybrid'),
]);

export const MigrateBody = Type.Object(
  {
    to: Endpoint,
    strategy: StrategyChoice,
    maxDowntimeMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000 })),
    // 1 TiB: more than any container's memory here; a larger figure is a typo, not a budget
    thresholdBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 40 })),
    maxRounds: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
    compress: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('on'), Type.Literal('off')])),
    streams: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })),
    skipInFlight: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

/** A container as its host records it (and as it travels to the destination of a migration). */
export const ContainerRecord = Type.Object(
  {
    name: Name,
    createdAt: Type.String({ maxLength: 64 }),
    net: NetMode,
    ip: Type.Optional(Type.String({ format: 'ipv4' })),
    mac: Type.Optional(Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' })),
    command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256 })),
    /** How it got here: started on this host, or arrived by migration (with the source host). */
    origin: Type.Union([
      Type.Object({ kind: Type.Literal('run') }),
      Type.Object({ kind: Type.Literal('migration'), from: Type.String(), id: Type.String() }),
      /** restored from a checkpoint archive taken on `from` at `checkpointedAt` */
      Type.Object({
        kind: Type.Literal('archive'),
        from: Type.String({ maxLength: 64 }),
        checkpointedAt: Type.String({ maxLength: 64 }),
      }),
    ]),
  },
  { additionalProperties: false },
);

const Neighbours = Type.Array(
  Type.Object(
    {
      address: Type.String({ format: 'ipv4' }),
      mac: Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' }),
    },
    { additionalProperties: false },
  ),
  { maxItems: 1024 },
);

/** Post-copy: where the source's page server will listen. */
const Lazy = Type.Object(
  { address: Type.String({ format: 'ipv4' }), port: Type.Integer({ minimum: 1024, maximum: 65535 }) },
  { additionalProperties: false },
);

/**
 * The ports CRIU's page servers listen on, [base, base + span): post-copy's on the source, cold's on the
 * destination. Part of the contract: a destination starts a page server only on one of these.
 */
export const PAGE_SERVER_PORTS = { base: 27000, span: 1000 } as const;

/** Cold: the port of the page server the destination starts for the source's dump (fenced to the source). */
const Pages = Type.Object(
  {
    port: Type.Integer({
      minimum: PAGE_SERVER_PORTS.base,
      maximum: PAGE_SERVER_PORTS.base + PAGE_SERVER_PORTS.span - 1,
    }),
  },
  { additionalProperties: false },
);

export const IncomingBody = Type.Object(
  {
    id: Id,
    name: Name,
    from: Name,
    neighbours: Type.Optional(Neighbours),
    lazy: Type.Optional(Lazy),
    pages: Type.Optional(Pages),
    /**
     * The container's external descriptors as runc recorded them (`external_descriptors` in its state.json; its
     * dump writes them as descriptors.json): the destination stages its restore with them before the freeze.
     */
    descriptors: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 16 })),
    record: ContainerRecord,
  },
  { additionalProperties: false },
);

export const RestoreBody = Type.Object(
  { neighbours: Neighbours, lazy: Type.Optional(Lazy) },
  { additionalProperties: false },
);

// ---- checkpoints to a file and restores from one ----

/** A checkpoint taken into an archive (the response body is the archive); `finish` or abort follows. */
export const CheckpointBody = Type.Object(
  {
    /** Keep the container running after the checkpoint (else it stops once the caller has the archive). */
    leaveRunning: Type.Boolean(),
    compress: Type.Union([Type.Literal('zstd'), Type.Literal('none')]),
    /**
     * The caller's file, if the agent may see it too (same host): the agent writes the archive into it instead of
     * the response, if it finds there the token it issued (POST /v1/checkpoints/tokens); else it streams.
     */
    file: Type.Optional(
      Type.Object(
        {
          path: Type.String({ minLength: 2, maxLength: 4096, pattern: '^/' }),
          token: Type.String({ pattern: '^[0-9a-f]{64}$' }),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

/**
 * A restore from an archive a caller on the agent's host holds open (host/archive-target.ts): the process, the
 * archive's descriptor, and a descriptor of a file holding a token the agent issued.
 */
export const LocalArchiveBody = Type.Object(
  {
    pid: Type.Integer({ minimum: 1 }),
    fd: Type.Integer({ minimum: 0 }),
    tokenFd: Type.Integer({ minimum: 0 }),
    token: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  },
  { additionalProperties: false },
);

export const CheckpointId = Type.String({ pattern: '^k[0-9a-f]{12}$' });
export const CheckpointParams = Type.Object({ id: CheckpointId }, { additionalProperties: false });

/** The caller has the archive on disk, verified: stop the container now (unless it was left running). */
export const FinishBody = Type.Object({ stop: Type.Boolean() }, { additionalProperties: false });

/** A restore from an archive staged on the agent: under its own name and address, or others. */
export const ImportBody = Type.Object(
  { name: Type.Optional(Name), ip: Type.Optional(Type.String({ format: 'ipv4' })) },
  { additionalProperties: false },
);
export const StagedId = Type.String({ pattern: '^r[0-9a-f]{12}$' });
export const StagedParams = Type.Object({ id: StagedId }, { additionalProperties: false });

/** GET /v1/incoming/:id/status: where the destination stands on one migration (the source settles by it). */
export const IncomingStatus = Type.Object(
  { state: Type.Union([Type.Literal('committed'), Type.Literal('uncommitted'), Type.Literal('unknown')]) },
  { additionalProperties: false },
);

// ---- the controller's API ----

/** One container's load as its agent reports it. */
export const ContainerStat = Type.Object(
  {
    name: Name,
    cpuPercent: Type.Number({ minimum: 0 }),
    memoryBytes: Type.Integer({ minimum: 0 }),
    memoryLimit: Type.Optional(Type.Integer({ minimum: 0 })),
    status: Type.String({ maxLength: 32 }),
    ip: Type.Optional(Type.String({ format: 'ipv4' })),
  },
  { additionalProperties: false },
);

export const Capacity = Type.Object(
  { cores: Type.Number({ exclusiveMinimum: 0 }), memoryBytes: Type.Integer({ minimum: 1 }) },
  { additionalProperties: false },
);

/** An agent's heartbeat: a full report (`full`) or only what changed beyond the deltas since the last one. */
export const HeartbeatBody = Type.Object(
  {
    host: Name,
    address: Type.String({ format: 'ipv4' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    capacity: Capacity,
    seq: Type.Integer({ minimum: 0 }),
    full: Type.Boolean(),
    containers: Type.Array(ContainerStat, { maxItems: 10_000 }),
    removed: Type.Array(Name, { maxItems: 10_000 }),
  },
  { additionalProperties: false },
);

export const RebalanceBody = Type.Object(
  {
    dryRun: Type.Optional(Type.Boolean()),
    targetPercent: Type.Optional(Type.Number({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: false },
);

export const DrainBody = Type.Object({ host: Name }, { additionalProperties: false });

export const PlaceBody = Type.Object(
  {
    name: Name,
    cpuPercent: Type.Optional(Type.Number({ minimum: 0 })),
    memoryBytes: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

export const BatchParams = Type.Object(
  { batch: Type.String({ pattern: '^(rebalance|drain)-[0-9a-f]{8}$' }) },
  { additionalProperties: false },
);
