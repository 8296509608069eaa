// docs/evaluation.md: each suite owns the text between its two markers and rewrites only that; everything
// outside the markers is written by hand and kept.
import { readFile, writeFile } from 'node:fs/promises';

export const begin = (suite: string) => `<!-- ferry bench ${suite}: begin -->`;
export const end = (suite: string) => `<!-- ferry bench ${suite}: end -->`;

/** `page` with the suite's section replaced by `body` (appended at the end when the page has no markers for it). */
export function replaceSection(page: string, suite: string, body: string): string {
  const b = begin(suite);
  const e = end(suite);
  const i = page.indexOf(b);
  const j = page.indexOf(e);
  const section = `${b}\n${body}\n${e}`;
  if (i < 0 || j < i) return `${page.trimEnd()}\n\n${section}\n`;
  return page.slice(0, i) + section + page.slice(j + e.length);
}

export async function writeSection(file: string, suite: string, body: string): Promise<void> {
  const page = await readFile(file, 'utf8').catch(() => '# Evaluation\n');
  await writeFile(file, replaceSection(page, suite, body));
}
