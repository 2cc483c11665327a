// lint-as: workers/example.ts
// Even a type: the production build must not need test/.
import type { TestPlatform } from '../test/support/platform';

export type Platform = TestPlatform;
