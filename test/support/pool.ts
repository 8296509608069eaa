// A few at a time: for tests that start many short child processes (a CLI each) which do not interact. One after
// the other, most of such a test is Node starting up; all at once, they would crowd the machine's cores.
import { availableParallelism } from 'node:os';

/** Enough children at once to keep every core busy while some of them wait on their pipes. */
export const CHILDREN_AT_ONCE = availableParallelism() + 1;

/**
 * `fn` over `items`, at most `n` at once, started in the order of the items. Each item has its own promise, so a
 * caller can wait for the one it needs while the others run.
 */
export function eachLimited<T, R>(items: readonly T[], n: number, fn: (t: T) => Promise<R>): Promise<R>[] {
  const settle: { resolve: (r: R) => void; reject: (e: unknown) => void }[] = [];
  const out = items.map(
    () =>
      new Promise<R>((resolve, reject) => {
        settle.push({ resolve, reject });
      }),
  );
  // a result nobody awaits (a test skipped) must not end the process as an unhandled rejection
  for (const p of out) p.catch(() => {});
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        settle[i]!.resolve(await fn(items[i]!));
      } catch (err) {
        settle[i]!.reject(err);
      }
    }
  };
  for (let w = 0; w < Math.min(n, items.length); w++) void worker();
  return out;
}

/** `fn` over `items`, at most `n` at once; the results in the order of the items. */
export function pool<T, R>(items: readonly T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  return Promise.all(eachLimited(items, n, fn));
}
