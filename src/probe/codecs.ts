// The probe's protocols: how a request is written and how replies are read, one codec per kind. The session
// (session.ts) owns the connection and matches replies to requests; a codec only knows the bytes.
//   tcp    sends "<seq>\n", expects "<counter> <seq>\n" in order; counter +1 per reply.
//   udp    sends datagram "<seq>", expects "<counter> <seq>".
//   redis  sends "INCR ferry:probe" (RESP), expects ":N\r\n" in order; N +1 per reply; "-ERR" is an error.
// Servers: src/workloads/servers.ts, or redis-server.

export type ProbeKind = 'tcp' | 'udp' | 'redis';
export const PROBE_KINDS: readonly ProbeKind[] = ['tcp', 'udp', 'redis'];

/** Where a stream codec reports what it read. */
export interface ReplySink {
  /** A reply that names its request (tcp). */
  seqReply(seq: number, counter: number): void;
  /**
   * The reply to the oldest request in flight (redis): `value` when it carries one, `problem` when it is an
   * error reply, `unsolicited` the error to report when no request was in flight.
   */
  inOrderReply(value: number | undefined, problem: string | undefined, unsolicited: string): void;
  /** A reply that is wrong but leaves the stream in sync. */
  error(message: string): void;
  /** The stream cannot be parsed any further. */
  fail(message: string): void;
}

/** A protocol over one TCP connection. */
export interface StreamCodec {
  request(seq: number): string;
  /** Reads every complete reply in `rx` into `sink`; returns what is left (an incomplete reply). */
  parse(rx: string, sink: ReplySink): string;
}

const SEQ_REPLY = /^(\d+) (\d+)$/;

/** "<counter> <seq>" lines. */
export const lineCodec: StreamCodec = {
  request: (seq) => `${seq}\n`,
  parse(rx, sink) {
    let pos = 0;
    for (;;) {
      const nl = rx.indexOf('\n', pos);
      if (nl < 0) break;
      const line = rx.slice(pos, nl).trim();
      pos = nl + 1;
      const m = SEQ_REPLY.exec(line);
      if (!m) {
        sink.error(`malformed reply ${JSON.stringify(line.slice(0, 40))}`);
        continue;
      }
      sink.seqReply(Number(m[2]), Number(m[1]));
    }
    return rx.slice(pos);
  },
};

const INCR = '*2\r\n$4\r\nINCR\r\n$11\r\nferry:probe\r\n';

/** RESP replies to INCR. */
export const redisCodec: StreamCodec = {
  request: () => INCR,
  parse(rx, sink) {
    let pos = 0;
    for (;;) {
      const nl = rx.indexOf('\r\n', pos);
      if (nl < 0) break;
      const type = rx[pos];
      const body = rx.slice(pos + 1, nl);
      if (type === ':' || type === '-' || type === '+') {
        pos = nl + 2;
        const unsolicited = `unsolicited reply ${JSON.stringify(`${type}${body}`.slice(0, 60))}`;
        if (type === ':' && /^-?\d+$/.test(body)) sink.inOrderReply(Number(body), undefined, unsolicited);
        else
          sink.inOrderReply(
            undefined,
            `redis replied ${JSON.stringify(`${type}${body}`.slice(0, 80))} to INCR`,
            unsolicited,
          );
        continue;
      }
      if (type === '$' && /^-?\d+$/.test(body)) {
        const len = Number(body);
        const end = len < 0 ? nl + 2 : nl + 2 + len + 2;
        if (end > rx.length) break;
        pos = end;
        sink.inOrderReply(
          undefined,
          'redis replied a bulk string to INCR',
          'redis replied a bulk string to INCR (unsolicited)',
        );
        continue;
      }
      sink.fail(`redis reply does not parse: ${JSON.stringify(`${type ?? ''}${body}`.slice(0, 60))}`);
      return '';
    }
    return rx.slice(pos);
  },
};

export const STREAM_CODECS: Record<'tcp' | 'redis', StreamCodec> = { tcp: lineCodec, redis: redisCodec };

/** The datagram protocol: one request, one "<counter> <seq>" reply, each in its own datagram. */
export const udpCodec = {
  request: (seq: number): string => String(seq),
  /** Null when the datagram is not a reply. */
  parse(text: string): { seq: number; counter: number } | null {
    const m = SEQ_REPLY.exec(text.trim());
    return m ? { counter: Number(m[1]), seq: Number(m[2]) } : null;
  },
};
