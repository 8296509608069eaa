// Minimal protobuf wire-format reader: enough for CRIU's small entries (varints and nested messages).

export type Field = { no: number; wire: number; value: bigint | Uint8Array };

export function readVarint(buf: Uint8Array, pos: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated varint');
    const b = buf[pos++]!;
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [result, pos];
    shift += 7n;
    if (shift > 63n) throw new Error('varint too long');
  }
}

export function readFields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [key, p1] = readVarint(buf, pos);
    pos = p1;
    const no = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      const [v, p2] = readVarint(buf, pos);
      pos = p2;
      out.push({ no, wire, value: v });
    } else if (wire === 2) {
      const [len, p2] = readVarint(buf, pos);
      const end = p2 + Number(len);
      if (end > buf.length) throw new Error('truncated field');
      out.push({ no, wire, value: buf.subarray(p2, end) });
      pos = end;
    } else if (wire === 1) {
      if (pos + 8 > buf.length) throw new Error('truncated fixed64');
      out.push({ no, wire, value: Buffer.from(buf.subarray(pos, pos + 8)).readBigUInt64LE() });
      pos += 8;
    } else if (wire === 5) {
      if (pos + 4 > buf.length) throw new Error('truncated fixed32');
      out.push({ no, wire, value: BigInt(Buffer.from(buf.subarray(pos, pos + 4)).readUInt32LE()) });
      pos += 4;
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
  }
  return out;
}

/** Maps numeric fields of one message to names; unknown fields are ignored. */
export function decodeNumbers<K extends string>(
  buf: Uint8Array,
  names: Record<number, K>,
): Partial<Record<K, number>> {
  const out: Partial<Record<K, number>> = {};
  for (const f of readFields(buf)) {
    const name = names[f.no];
    if (name && typeof f.value === 'bigint') out[name] = Number(f.value);
  }
  return out;
}
