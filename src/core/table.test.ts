import assert from 'node:assert/strict';
import { test } from 'node:test';
import { table } from './table.ts';

test('columns are padded to their widest cell, the last one is not', () => {
  assert.equal(
    table([
      ['A', 'BB', 'C'],
      ['long', 'x', 'y'],
    ]),
    'A     BB  C\nlong  x   y',
  );
  assert.equal(table([]), '');
});
