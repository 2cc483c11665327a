import createFetchClient, { type Client } from 'openapi-fetch';
import { LLMHubError } from './errors';
import type { paths } from './generated/openapi';
import { MockPlatform } from './mock/platform';
import { retrying, type RetryOptions } from './retry';

export type LLMHubClient = Client<paths>;

/** Where the mock's requests say they go; nothing listens there. */
const MOCK_BASE_URL = 'http://llmhub.mock';

export interface ClientOptions {
  /** The platform's API, e.g. `http://127.0.0.1:8080`; not used with `mock`. */
  baseUrl?: string;
  /** A tenant API key (`llmhub_...`), a platform operator's key, or a JWT. */
  apiKey?: string;
  /** `true`: the platform in process (see MockPlatform); or a MockPlatform of your own, to share or inspect. */
  mock?: boolean | MockPlatform;
  /** Retries of calls that cannot take effect twice; `false` sends each call once. */
  retry?: RetryOptions | false;
  /** The transport; default the global fetch. */
  fetch?: (request: Request) => Promise<Response>;
}

/**
 * A typed client of every control route of the document the SDK was generated from (openapi-fetch over the
 * generated `paths`): `client.POST('/v1/deploy', { body, params: { header: { 'idempotency-key': 'k' } } })`. A refused
 * call throws LLMHubError; `ok()` gives a call's typed body.
 */
export function createClient(options: ClientOptions): LLMHubClient {
  const mock = options.mock === true ? new MockPlatform() : options.mock || undefined;
  const baseUrl = mock ? MOCK_BASE_URL : options.baseUrl;
  if (!baseUrl) throw new Error('createClient: baseUrl is required unless mock is set');
  const apiKey = options.apiKey ?? (mock ? 'mock' : undefined);
  const transport = mock ? mock.fetch : (options.fetch ?? ((r: Request) => fetch(r)));
  const client = createFetchClient<paths>({
    baseUrl,
    fetch: options.retry === false ? transport : retrying(transport, baseUrl, options.retry),
    headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
  });
  client.use({
    async onResponse({ response }) {
      if (!response.ok) throw await LLMHubError.from(response);
      return undefined;
    },
  });
  return client;
}

/** A call's body, typed by its success answer (calls that fail throw LLMHubError before this). */
export async function ok<R extends { data?: unknown }>(call: Promise<R>): Promise<NonNullable<R['data']>> {
  return (await call).data as NonNullable<R['data']>;
}
