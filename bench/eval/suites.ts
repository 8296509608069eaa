// The evaluation suites, in the order docs/evaluation.md presents the works. A suite is registered here and
// nowhere else: bench/index.ts makes each a `ferry bench` suite and the `evaluation` group of them all.
import { dockerPaperSuite } from './docker-paper.ts';
import type { EvalSuite } from './run.ts';
import { runcBlogSuite } from './runc-blog.ts';
import { talkSuite } from './talk.ts';
import { thesisSuite } from './thesis.ts';
import { ucsdSuite } from './ucsd.ts';
import { vmSuite } from './vm.ts';

export const EVAL_SUITES: EvalSuite[] = [
  thesisSuite,
  vmSuite,
  talkSuite,
  runcBlogSuite,
  dockerPaperSuite,
  ucsdSuite,
];
