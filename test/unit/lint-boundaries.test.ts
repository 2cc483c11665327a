import { describe, expect, it } from '@jest/globals';
import { ESLint } from 'eslint';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

// The boundary rules of eslint.config.mjs depend on where a file lives, so each fixture is linted as if it were at the
// path its first line names (`// lint-as: workflows/example.ts`), with the repository's own config.
const repoRoot = path.resolve(__dirname, '../..');
const fixtures = path.join(repoRoot, 'test/lint-fixtures');

const IMPORTS = '@typescript-eslint/no-restricted-imports';
const SYNTAX = 'no-restricted-syntax';

// Each violating fixture against the one report it must produce: rule id and the part of the message that tells
// that rule's cases apart.
const violations: Record<string, { ruleId: string; message: string }> = {
  'workflow-node-builtin.ts': { ruleId: IMPORTS, message: 'no Node built-ins' },
  'workflow-node-builtin-bare.ts': { ruleId: IMPORTS, message: 'no Node built-ins' },
  'workflow-package.ts': {
    ruleId: IMPORTS,
    message: 'workflows/ may import only @temporalio/workflow and @temporalio/common',
  },
  'workflow-common-value.ts': { ruleId: IMPORTS, message: 'workflows/ may import common/ only with `import type`' },
  'workflow-activities-value.ts': { ruleId: IMPORTS, message: 'workflows/ may import activities/, api/, workers/' },
  'production-deploy-dev.ts': { ruleId: IMPORTS, message: 'production code must not import deploy/dev/' },
  'production-test.ts': { ruleId: IMPORTS, message: 'production code must not import test/' },
  'common-activities.ts': { ruleId: IMPORTS, message: 'common/ is the bottom layer' },
  'api-activities-value.ts': {
    ruleId: IMPORTS,
    message: 'api/ may import activities/ and workflows/ only with `import type`',
  },
  'contracts-imports-common.ts': { ruleId: IMPORTS, message: 'contracts/ may import only other contracts/ modules' },
  'define-query-outside-contracts.ts': {
    ruleId: SYNTAX,
    message: 'defineQuery/defineUpdate/defineSignal belong in contracts/',
  },
  'query-literal.ts': { ruleId: SYNTAX, message: "use the contract's query constant" },
  'query-template-literal.ts': { ruleId: SYNTAX, message: "use the contract's query constant" },
  'update-literal.ts': { ruleId: SYNTAX, message: "use the contract's update constant" },
  'signal-literal.ts': { ruleId: SYNTAX, message: "use the contract's signal constant" },
  'signal-with-start-literal.ts': { ruleId: SYNTAX, message: "use the contract's signal constant" },
  'failure-type-literal.ts': { ruleId: SYNTAX, message: 'use the failure-type constant from contracts/' },
  'failure-type-create.ts': { ruleId: SYNTAX, message: 'use the failure-type constant from contracts/' },
  'failure-type-retry-policy.ts': { ruleId: SYNTAX, message: 'use the failure-type constant from contracts/' },
};
// What the rules must leave alone: type imports across boundaries, contracts/ defining names, pg's one-word SQL.
const clean = ['clean-workflow.ts', 'clean-contracts.ts', 'clean-api.ts', 'clean-sql.ts'];

const eslint = new ESLint({ cwd: repoRoot });

async function lintFixture(file: string): Promise<{ ruleId: string | null; message: string }[]> {
  const source = readFileSync(path.join(fixtures, file), 'utf8');
  const lintAs = /^\/\/ lint-as: (\S+)/.exec(source)?.[1];
  if (!lintAs) throw new Error(`${file} does not start with "// lint-as: <path>"`);
  const [result] = await eslint.lintText(source, { filePath: path.join(repoRoot, lintAs) });
  return (result?.messages ?? []).map(({ ruleId, message }) => ({ ruleId, message }));
}

describe('lint boundaries', () => {
  it('has an expectation for every fixture', () => {
    expect(readdirSync(fixtures).sort()).toEqual([...Object.keys(violations), ...clean].sort());
  });

  it.each(Object.entries(violations))('%s is reported by exactly its rule', async (file, expected) => {
    const messages = await lintFixture(file);
    expect(messages).toEqual([{ ruleId: expected.ruleId, message: expect.stringContaining(expected.message) }]);
  });

  it.each(clean)('%s is not reported', async (file) => {
    expect(await lintFixture(file)).toEqual([]);
  });
});
