// Request schemas of the agent API: every body and parameter is validated before a handler runs.
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

export const Endpoint = Type.Object(
  {
    name: Name,
    address: Type.String({ format: 'ipv4' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
  },
  { additionalProperties: false },
);

export const MigrateBody = Type.Object(
  {
    to: Endpoint,
    strategy: Type.Union([
      Type.Literal('auto'),
      Type.Literal('cold'),
      Type.Literal('precopy'),
      Type.Literal('postcopy'),
      Type.Literal('hybrid'),
    ]),
    maxDowntimeMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000 })),
    thresholdBytes: Type.Optional(Type.Integer({ minimum: 0 })),
    maxRounds: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
    compress: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('on'), Type.Literal('off')])),
    streams: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })),
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

export const IncomingBody = Type.Object(
  {
    id: Id,
    name: Name,
    from: Name,
    neighbours: Type.Optional(Neighbours),
    lazy: Type.Optional(
      Type.Object(
        { address: Type.String({ format: 'ipv4' }), port: Type.Integer({ minimum: 1024, maximum: 65535 }) },
        { additionalProperties: false },
      ),
    ),
    record: Type.Object(
      {
        name: Name,
        createdAt: Type.String({ maxLength: 64 }),
        net: NetMode,
        ip: Type.Optional(Type.String({ format: 'ipv4' })),
        mac: Type.Optional(Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' })),
        command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256 })),
        origin: Type.Object({}, { additionalProperties: true }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export const RestoreBody = Type.Object(
  {
    neighbours: Type.Array(
      Type.Object(
        {
          address: Type.String({ format: 'ipv4' }),
          mac: Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' }),
        },
        { additionalProperties: false },
      ),
      { maxItems: 1024 },
    ),
    lazy: Type.Optional(
      Type.Object(
        { address: Type.String({ format: 'ipv4' }), port: Type.Integer({ minimum: 1024, maximum: 65535 }) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
