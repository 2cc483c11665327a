// The layering of issue 16 as lint: which folder may import what, and that Temporal message and failure-type names
// live only in contracts/. Path rules are regexes over the import string as written; the tree uses relative imports
// only (no path aliases), and contracts/ and workflows/ are flat, so `../x` from there always leaves the folder.
// The checks are syntactic (no type information), so `eslint .` stays fast on 2 cores.
// test/unit/lint-boundaries.test.ts proves each rule with a fixture from test/lint-fixtures/.
import { builtinModules } from 'node:module';
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

const TS = ['**/*.ts', '**/*.mts', '**/*.cts'];
const JS = ['**/*.js', '**/*.mjs', '**/*.cjs'];

// ---- imports ---------------------------------------------------------------------------------------------------

// Relative import of a top-level folder, from any depth: `../common/x`, `../../../activities`.
const up = (folders) => `^(\\.\\./)+(${folders})(/|$)`;
const builtins = builtinModules.filter((m) => !m.startsWith('node:') && !m.includes('/')).join('|');
const nodeBuiltin = `node:|(${builtins})(/|$)`;

// Production code never reaches into the dev stack or the tests, not even for a type: the build would then need them.
const notDevOrTest = [
  { regex: up('deploy/dev'), message: 'production code must not import deploy/dev/ (the local dev/test stack).' },
  { regex: up('test'), message: 'production code must not import test/.' },
];

// workflows/ at `depth` folders below the root: `(../){depth}` leaves workflows/.
function workflowImports(depth) {
  const out = `^(\\.\\./){${depth}}`;
  return [
    ...notDevOrTest,
    {
      regex: `^(${nodeBuiltin})`,
      allowTypeImports: true,
      message: 'workflows/ must stay deterministic: no Node built-ins (use an activity).',
    },
    {
      regex: `^(?!\\.|@temporalio/(workflow|common)(/|$)|${nodeBuiltin})`,
      allowTypeImports: true,
      message:
        'workflows/ may import only @temporalio/workflow and @temporalio/common among packages (others only with `import type`).',
    },
    {
      regex: `${out}common(/|$)`,
      allowTypeImports: true,
      message: 'workflows/ may import common/ only with `import type`: take workflow values from contracts/.',
    },
    {
      regex: `${out}(?!contracts(/|$)|common(/|$)|deploy/dev(/|$)|test(/|$))`,
      allowTypeImports: true,
      message:
        'workflows/ may import activities/, api/, workers/ and the rest only with `import type`; values come from contracts/ or workflows/.',
    },
  ];
}

// The patterns of one folder never overlap: typescript-eslint lets a type-only import through as soon as any matching
// pattern has allowTypeImports, which would otherwise open a hole in the patterns that forbid types too.
const importRules = {
  contracts: [
    ...notDevOrTest,
    {
      // @temporalio/common is what @temporalio/workflow is built on and is safe in the sandbox (search attribute keys).
      regex: `^(?!\\.|@temporalio/(workflow|common)(/|$))`,
      message:
        'contracts/ is loaded into the workflow sandbox: it may import only @temporalio/workflow, @temporalio/common and other contracts/ modules.',
    },
    {
      regex: '^\\.\\./(?!deploy/dev(/|$)|test(/|$))',
      message: 'contracts/ may import only other contracts/ modules: move what it needs into contracts/.',
    },
  ],
  workflows: workflowImports(1),
  // workflows/support/ is one folder deeper, so leaving workflows/ takes one more `../`.
  workflowSupport: workflowImports(2),
  common: [
    ...notDevOrTest,
    {
      regex: up('activities|api|workers|workflows'),
      message:
        'common/ is the bottom layer: it must not import activities/, api/, workers/ or workflows/, not even types.',
    },
  ],
  api: [
    ...notDevOrTest,
    {
      regex: up('activities|workflows'),
      allowTypeImports: true,
      message:
        'api/ may import activities/ and workflows/ only with `import type`: take names and shapes from contracts/.',
    },
  ],
  production: notDevOrTest,
};

const restrictImports = (patterns) => ({ '@typescript-eslint/no-restricted-imports': ['error', { patterns }] });

// ---- Temporal names at call sites -------------------------------------------------------------------------------

// A query/update/signal name is one identifier-like word. SQL passed to pg's `query` always has a space, except the
// one-word statements below, which are the only SQL this tree sends that way (`c.query('BEGIN')`).
const messageName = `/^(?!(BEGIN|COMMIT|ROLLBACK|END|ABORT|CHECKPOINT|VACUUM|ANALYZE)$)\\w+$/i`;
// arg is the index of the argument that names the message: a string literal, or a template literal without `${}`.
const literalArg = (arg, re) => [
  `[arguments.${arg}.type='Literal'][arguments.${arg}.value=${re}]`,
  `[arguments.${arg}.type='TemplateLiteral'][arguments.${arg}.expressions.length=0][arguments.${arg}.quasis.0.value.cooked=${re}]`,
];
const messageCall = (methods, what) =>
  literalArg(0, messageName).map((arg) => ({
    selector: `CallExpression[callee.property.name=/^(${methods})$/]${arg}`,
    message: `The ${what} is named by a string literal: use the contract's ${what} constant from contracts/ instead.`,
  }));

const messageNames = [
  ...messageCall('query', 'query'),
  ...messageCall('executeUpdate|startUpdate|executeUpdateWithStart|startUpdateWithStart', 'update'),
  ...messageCall('signal', 'signal'),
  {
    // client.workflow.signalWithStart(wf, { signal: 'x', ... })
    selector: `CallExpression[callee.property.name='signalWithStart'] > ObjectExpression > Property[key.name='signal'] > :matches(Literal, TemplateLiteral)`,
    message: "The signal is named by a string literal: use the contract's signal constant from contracts/ instead.",
  },
  {
    selector:
      'CallExpression:matches([callee.name=/^define(Query|Update|Signal)$/], [callee.property.name=/^define(Query|Update|Signal)$/])',
    message: 'defineQuery/defineUpdate/defineSignal belong in contracts/: import the constant from there.',
  },
];

const failureMessage =
  'The failure type is named by a string literal: use the failure-type constant from contracts/ instead.';
const anyString = '/./s';
const failureTypes = [
  // ApplicationFailure.nonRetryable(message, 'Type'), .retryable(...), new ApplicationFailure(message, 'Type')
  ...literalArg(1, anyString).flatMap((arg) => [
    {
      selector: `CallExpression[callee.object.name='ApplicationFailure'][callee.property.name=/^(nonRetryable|retryable)$/]${arg}`,
      message: failureMessage,
    },
    { selector: `NewExpression[callee.name='ApplicationFailure']${arg}`, message: failureMessage },
  ]),
  {
    // ApplicationFailure.create({ type: 'Type' }), ApplicationFailure.fromError(err, { type: 'Type' })
    selector: `CallExpression[callee.object.name='ApplicationFailure'][callee.property.name=/^(create|fromError)$/] > ObjectExpression > Property[key.name='type'] > :matches(Literal, TemplateLiteral)`,
    message: failureMessage,
  },
  {
    // retry: { nonRetryableErrorTypes: ['Type', ...] }
    selector: `Property[key.name='nonRetryableErrorTypes'] > ArrayExpression > :matches(Literal, TemplateLiteral)`,
    message: failureMessage,
  },
];

// ---- the config -------------------------------------------------------------------------------------------------

const folder = (name, rules) => ({ name: `llmhub/${name}`, files: [`${name}/**/*.{ts,mts,cts,js,mjs,cjs}`], rules });

export default defineConfig(
  {
    ignores: [
      'dist/',
      '.data/',
      'coverage/',
      'test/lint-fixtures/',
      'test/replay/histories/',
      'sdk/src/generated/',
      'sdk/dist/',
      'deploy/convert/',
      'deploy/trainers/**/*.py',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    name: 'llmhub/base',
    rules: {
      // `catch {}` with a comment, and `() => undefined` for a promise whose failure is handled elsewhere, are deliberate;
      // an empty catch without even a comment is still reported.
      'no-empty': ['error', { allowEmptyCatch: true }],
      // `_` marks parameters a callback signature forces on us (Fastify hooks, Temporal handlers).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
    },
  },
  {
    name: 'llmhub/js-globals',
    files: JS,
    // These scripts run on Node: its real globals, read from the Node that runs ESLint, not a copied list.
    languageOptions: {
      globals: Object.fromEntries(Object.getOwnPropertyNames(globalThis).map((g) => [g, 'readonly'])),
    },
  },
  {
    name: 'llmhub/commonjs',
    // package.json has no "type": "module", so .js is CommonJS (jest.config.js, jest's test environment): require is
    // how these files load anything.
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    name: 'llmhub/temporal-names',
    files: TS,
    rules: { 'no-restricted-syntax': ['error', ...messageNames, ...failureTypes] },
  },
  // Later objects replace a rule's options instead of merging them, so each folder states its whole import policy.
  folder('contracts', { ...restrictImports(importRules.contracts), 'no-restricted-syntax': 'off' }),
  folder('workflows', restrictImports(importRules.workflows)),
  folder('workflows/support', restrictImports(importRules.workflowSupport)),
  folder('common', restrictImports(importRules.common)),
  folder('api', restrictImports(importRules.api)),
  folder('activities', restrictImports(importRules.production)),
  folder('workers', restrictImports(importRules.production)),
  folder('roles', restrictImports(importRules.production)),
);
