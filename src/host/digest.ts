// A pass-through that hashes what goes through it: the SHA-256 and length of an archive as it was sent or written,
// taken in the stream (never in a second pass).
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';

/** A pass-through that hashes what goes through it; `done` settles when it ends or fails. */
export function digestOf(onEnd: () => void): {
  transform: Transform;
  done: Promise<{ sha256: string; bytes: number }>;
} {
  const hash = createHash('sha256');
  let bytes = 0;
  let settle!: (v: { sha256: string; bytes: number }) => void;
  let fail!: (e: Error) => void;
  const done = new Promise<{ sha256: string; bytes: number }>((res, rej) => {
    settle = res;
    fail = rej;
  });
  done.catch(() => {});
  const transform = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      cb(null, chunk);
    },
    flush(cb) {
      settle({ sha256: hash.digest('hex'), bytes });
      onEnd();
      cb();
    },
  });
  transform.on('error', fail);
  transform.on('close', () => fail(new Error('closed before the end')));
  return { transform, done };
}
