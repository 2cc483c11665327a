export { createClient, ok, type ClientOptions, type LLMHubClient } from './client';
export { LLMHubError, type ErrorBody } from './errors';
export { MockPlatform, type MockOptions } from './mock/platform';
export type { RetryOptions } from './retry';
export type { components, paths } from './generated/openapi';
