/**
 * The platform's error body: `{"error":{"type","message","details"}}`, a bad field named in `details.field`. The
 * inference routes answer OpenAI's shape (`type`, `message`, `param`, `code`), which fits the same reading.
 */
export interface ErrorBody {
  error: {
    type: string;
    message: string;
    details?: { field?: string } & Record<string, unknown>;
    param?: string | null;
    code?: string | null;
  };
}

/** A call the platform (or the mock) refused: its HTTP status and the platform's error, typed. */
export class LLMHubError extends Error {
  override readonly name = 'LLMHubError';

  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** The request id (`x-trace-id`), what the platform's logs and audit rows are searched by. */
    readonly requestId: string | null = null,
  ) {
    super(message);
  }

  /** The field a bad request named (`body.artifactUri`), if any. */
  get field(): string | undefined {
    return typeof this.details.field === 'string' ? this.details.field : undefined;
  }

  static async from(response: Response): Promise<LLMHubError> {
    const text = await response.clone().text();
    let body: Partial<ErrorBody> = {};
    try {
      body = JSON.parse(text) as Partial<ErrorBody>;
    } catch {
      // A proxy's HTML page or an empty body: the status says what happened.
    }
    const e = body.error;
    return new LLMHubError(
      response.status,
      e?.type ?? `http_${response.status}`,
      e?.message ?? (text.slice(0, 200) || response.statusText),
      e?.details ?? (e?.param ? { field: e.param } : {}),
      response.headers.get('x-trace-id'),
    );
  }
}
