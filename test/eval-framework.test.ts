// The evaluation suites' shared pieces, without a migration: rows and ratios across units, the sections of
// docs/evaluation.md the suites rewrite, the plots and the text.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { begin, end, replaceSection } from '../bench/eval/doc.ts';
import { convert, row } from '../bench/eval/model.ts';
import { renderMarkdown, renderText } from '../bench/eval/render.ts';
import { EVAL_SUITES } from '../bench/eval/suites.ts';
import { drawPlot } from '../bench/eval/svg.ts';

describe('evaluation framework', () => {
  it('converts published figures into the row unit before the ratio', () => {
    assert.equal(convert(0.58, 's', 'ms'), 580);
    assert.equal(convert(204, 'KB', 'B'), 204_000);
    assert.ok(Number.isNaN(convert(1, 's', 'MiB')));
    const r = row('dump', 'ms', [300, 290, undefined, 310, Number.NaN], {
      value: 0.58,
      unit: 's',
      work: 'runc-blog',
    });
    assert.equal(r.median, 300);
    assert.equal(r.min, 290);
    assert.equal(r.max, 310);
    assert.equal(r.failed, 2);
    assert.ok(Math.abs(r.ratio! - 300 / 580) < 1e-9);
    assert.equal(row('x', 'ms', [1], { value: 1, unit: 'MB', work: 'talk' }).ratio, undefined);
  });

  it('rewrites only its own section and appends one the page lacks', () => {
    const page = `intro\n${begin('a')}\nold a\n${end('a')}\nmiddle\n${begin('b')}\nold b\n${end('b')}\n`;
    const next = replaceSection(page, 'a', 'new a');
    assert.equal(next, page.replace('old a', 'new a'));
    assert.ok(replaceSection(page, 'c', 'c body').endsWith(`${begin('c')}\nc body\n${end('c')}\n`));
  });

  it('has markers in docs/evaluation.md for every suite', async () => {
    const page = await readFile(new URL('../docs/evaluation.md', import.meta.url), 'utf8');
    for (const s of EVAL_SUITES) {
      assert.ok(page.includes(begin(s.name)) && page.includes(end(s.name)), s.name);
    }
  });

  it('draws lines and bars, linear and logarithmic, skipping missing points', () => {
    for (const kind of ['line', 'bar'] as const) {
      for (const log of [false, true]) {
        const svg = drawPlot({
          id: 'p',
          title: 'a <title>',
          kind,
          log,
          xLabel: 'MiB',
          yLabel: 'ms',
          x: ['16', '256'],
          series: [
            { name: 'ferry', values: [12, 3400] },
            { name: 'published', values: [Number.NaN, 580] },
          ],
        });
        assert.match(svg, /^<svg[\s\S]*<\/svg>\n$/);
        assert.ok(svg.includes('a &lt;title&gt;'));
        assert.ok(!svg.includes('NaN'));
      }
    }
  });

  it('prints the table, machine and command; Markdown escapes cell bars', () => {
    const result = {
      suite: 's',
      work: 'w',
      date: '2026-01-01 00:00 UTC',
      command: 'ferry bench s',
      runs: 5,
      quick: false,
      machine: {
        hostname: 'h',
        kernel: 'k',
        cores: 2,
        cpu: 'c',
        memoryBytes: 2 ** 34,
        criu: '4.2',
        runc: '1.1',
        loadStart: [1, 2, 3],
      },
      tables: [{ id: 't', title: 'T', rows: [row('a|b', 'ms', [1, 2, 3])] }],
      plots: ['evaluation/s-p.svg'],
      notes: [],
      durationMs: 60_000,
    };
    const text = renderText(result);
    assert.match(text, /a\|b\s+-\s+2\.00 ms\s+1\.00–3\.00\s+3\s+-/);
    assert.match(text, /command: ferry bench s/);
    const md = renderMarkdown(result, new Map([['evaluation/s-p.svg', 'P']]));
    assert.ok(md.includes('| a\\|b |'));
    assert.ok(md.includes('![P](evaluation/s-p.svg)'));
    assert.ok(md.includes('16 GiB, CRIU 4.2'));
  });
});
