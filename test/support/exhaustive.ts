// A list that names every member of a union of strings, checked by tsc: leaving one out (or naming one the union
// lacks) does not compile. Tests use it to hold a runtime list to a type the code declares.

/** `every<'a' | 'b'>()('a', 'b')`; for an object's keys: `every<keyof O & string>()(...)`. */
export function every<T extends string>() {
  return <const K extends readonly T[]>(
    ...members: K & (Exclude<T, K[number]> extends never ? unknown : { missing: Exclude<T, K[number]> })
  ): readonly string[] => members;
}
