// docs/conformance.md read back and merged: a run of a few tests replaces their rows and nothing else, the
// summary is counted again from the rows, and a row says which run it comes from.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ZDTM_STRATEGIES } from '../bench/zdtm.ts';
import {
  type Doc,
  mergeRun,
  parseConformance,
  renderConformance,
  rowsOf,
  type ZdtmTestReport,
} from '../bench/zdtm-doc.ts';

const S = ZDTM_STRATEGIES;
const committed = readFileSync(new URL('../docs/conformance.md', import.meta.url), 'utf8');

function doc(rows: Doc['rows'], skipped: Doc['skipped'] = []): Doc {
  return { criu: '4.2.1', kernel: '6.18.0', dropUid: false, fullRun: '2026-12-01', rows, skipped };
}

const pass = (test: string, run = '2026-12-01') => ({
  test,
  control: 'PASS',
  cells: Object.fromEntries(S.map((st) => [st, 'PASS'])),
  reason: '',
  run,
});

describe('conformance.md', () => {
  it('reads back the committed doc: its environment, every row and every skip', () => {
    const d = parseConformance(committed, S);
    assert.ok(d, 'the committed doc parses');
    assert.equal(d.criu, '4.2.1');
    assert.ok(d.rows.length > 200);
    assert.ok(d.rows.every((r) => r.test && r.control && S.every((st) => r.cells[st])));
    assert.ok(d.skipped.length > 50);
    // what the generator writes, it reads back as it was
    const again = parseConformance(renderConformance(d, S), S);
    assert.deepEqual(again, d);
  });

  it('a partial run replaces its own rows, moves a skipped test into the table and dates the rows', () => {
    const old = doc(
      [
        pass('env00'),
        { ...pass('sigtrap'), cells: { ...pass('sigtrap').cells, cold: 'FAIL' }, reason: 'cold: x' },
      ],
      [{ test: 'socket_aio', why: 'not reached' }],
    );
    const reports: ZdtmTestReport[] = [
      {
        test: 'sigtrap',
        control: { outcome: 'PASS', ms: 1 },
        migrations: Object.fromEntries(
          S.map((st) => [
            st,
            { outcome: 'REFUSED' as const, reason: 'FERRY_E_CONTAINER_UNMOVABLE (plan): SIGTRAP', ms: 1 },
          ]),
        ),
      },
      {
        test: 'socket_aio',
        control: { outcome: 'PASS', ms: 1 },
        migrations: Object.fromEntries(S.map((st) => [st, { outcome: 'PASS' as const, ms: 1 }])),
      },
    ];
    const merged = mergeRun(old, rowsOf(reports, S, '2026-12-06'), {
      criu: '4.2.1',
      kernel: '6.18.1',
      dropUid: false,
    });
    const byTest = new Map(merged.rows.map((r) => [r.test, r]));
    assert.deepEqual(byTest.get('env00'), pass('env00'), 'a row not re-run is kept as it was');
    assert.equal(byTest.get('sigtrap')!.cells['cold'], 'REFUSED');
    assert.equal(byTest.get('sigtrap')!.run, '2026-12-06');
    assert.equal(byTest.get('socket_aio')!.run, '2026-12-06');
    assert.deepEqual(merged.skipped, []);
    const md = renderConformance(merged, S);
    assert.match(md, /the run of every test on 2026-12-01, except those re-run since .* \(on 2026-12-06\)/);
    assert.match(md, /control PASS: 3\. .*cold PASS 2 \(66\.7 %\), REFUSED 1;/);
    assert.match(
      md,
      /\| sigtrap \| PASS \| REFUSED \| REFUSED \| REFUSED \| REFUSED \| .*SIGTRAP \| 2026-12-06 \|/,
    );
    assert.match(md, /## Notes[\s\S]*- \*\*sigtrap\*\*: crfail/);
    // the rows of the full run keep saying what they ran on
    assert.match(md, /kernel 6\.18\.1\.\nThe run of every test used CRIU 4\.2\.1, kernel 6\.18\.0\./);
    assert.deepEqual(parseConformance(md, S), merged);
  });

  it('counts the pass rate again without the crfail tests, and reads their names back', () => {
    const refused = (test: string) => ({
      ...pass(test),
      cells: Object.fromEntries(S.map((st) => [st, 'REFUSED'])),
      reason: 'cold: refused',
    });
    const d = {
      ...doc([pass('env00'), pass('maps00'), refused('ptrace_sig'), refused('sigtrap'), refused('stopped')]),
      crfail: ['ptrace_sig', 'sigtrap'],
    };
    const md = renderConformance(d, S);
    assert.match(md, /of the 5 whose control passed: cold PASS 2 \(40\.0 %\), REFUSED 3;/);
    assert.match(
      md,
      /Of the 3 whose control passed and that CRIU can migrate at all \(all but the 2 `crfail` ones: ptrace_sig, sigtrap\): cold PASS 2 \(66\.7 %\), REFUSED 1;/,
    );
    assert.deepEqual(parseConformance(md, S), d);
    // a crfail test whose control failed never reached a migration: it is in neither figure's exclusions
    const failed = { ...doc([pass('env00'), { ...pass('sigtrap'), control: 'FAIL' }]), crfail: ['sigtrap'] };
    assert.doesNotMatch(renderConformance(failed, S), /crfail` ones/);
  });

  it('a reason keeps its pipes through a round trip', () => {
    const d = doc([{ ...pass('x'), control: 'FAIL', reason: 'control: a \\| b' }]);
    assert.equal(parseConformance(renderConformance(d, S), S)!.rows[0]!.reason, 'control: a \\| b');
  });

  it('is not fooled by a file that is not one of its tables', () => {
    assert.equal(parseConformance('# something else\n', S), undefined);
  });
});
