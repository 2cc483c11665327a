import type { Pool } from 'pg';
import { BadRequestError } from '../errors';
import { cursorTime, KeyPart, keysetPage, PAGE_LIMIT_DEFAULT, type Keyset } from './pages';

export interface AuditEntry {
  requestId: string;
  /** Epoch ms the call was received; the database's clock when left out. */
  at?: number;
  tenantId?: string;
  principal?: string;
  role?: string;
  method: string;
  route: string;
  url: string;
  statusCode: number;
  workflowId?: string;
  ip?: string;
  /** Until the reply was handed over (control routes) or ended (streams and inference). */
  durationMs?: number;
  bytesSent?: number;
  /** The client went away before the reply ended. */
  disconnected?: boolean;
  model?: string;
  modelVersion?: string;
  promptTokens?: number;
  completionTokens?: number;
  /** Why an answer that had started failed (a model server's stream that broke off). */
  errorClass?: string;
}

/** A row as the audit API answers it. */
export interface AuditRow {
  id: string;
  at: string;
  requestId: string;
  tenantId: string | null;
  principal: string | null;
  role: string | null;
  method: string;
  route: string;
  url: string;
  statusCode: number;
  workflowId: string | null;
  ip: string | null;
  durationMs: number | null;
  bytesSent: number | null;
  disconnected: boolean;
  model: string | null;
  modelVersion: string | null;
  promptTokens: number | null;
  completionTokens: number | null;
  errorClass: string | null;
}

export interface AuditFilter {
  /** Unset: every tenant's rows and those of no tenant (operators only). */
  tenantId?: string;
  from?: string;
  to?: string;
  principal?: string;
  route?: string;
  statusCode?: number;
  workflowId?: string;
  requestId?: string;
}

/** Refused calls without valid credentials from one address in one minute. */
export interface UnauthenticatedCount {
  ip: string;
  /** Epoch ms of the minute. */
  minute: number;
  count: number;
}

/** The columns of a row, in the order `encodeAuditEntry` writes them after `at`, and their types. */
const FIELDS = [
  ['request_id', 'text'],
  ['tenant_id', 'text'],
  ['principal', 'text'],
  ['role', 'text'],
  ['method', 'text'],
  ['route', 'text'],
  ['url', 'text'],
  ['status_code', 'int'],
  ['workflow_id', 'text'],
  ['ip', 'text'],
  ['duration_ms', 'float8'],
  ['bytes_sent', 'bigint'],
  ['disconnected', 'bool'],
  ['model', 'text'],
  ['model_version', 'text'],
  ['prompt_tokens', 'bigint'],
  ['completion_tokens', 'bigint'],
  ['error_class', 'text'],
] as const;
type Column = (typeof FIELDS)[number][0];
const COLUMNS = FIELDS.map(([c]) => c).join(', ');

/**
 * A row as a JSON array: `at`, then FIELDS' columns in their order. The rows of an INSERT go as one JSON parameter:
 * JSON.stringify is native, where node-postgres built each array parameter of an unnest in JavaScript, element by
 * element, a tenth of what the gateway allocated per request. An array, not the entry: half the time and text.
 */
export const encodeAuditEntry = (e: AuditEntry): string =>
  JSON.stringify([
    e.at ?? null,
    e.requestId,
    e.tenantId ?? null,
    e.principal ?? null,
    e.role ?? null,
    e.method,
    e.route,
    e.url,
    e.statusCode,
    e.workflowId ?? null,
    e.ip ?? null,
    e.durationMs ?? null,
    e.bytesSent ?? null,
    e.disconnected ?? false,
    e.model ?? null,
    e.modelVersion ?? null,
    e.promptTokens ?? null,
    e.completionTokens ?? null,
    e.errorClass ?? null,
  ]);

/** As jsonb, whose `->>` of an array index is direct (json's walks the row's text to it, once per column). */
const INSERT = `INSERT INTO audit_log (at, ${COLUMNS})
  SELECT coalesce(to_timestamp((r->>0)::float8 / 1000.0), now()), ${FIELDS.map(([, t], i) => `(r->>${i + 1})::${t}`).join(', ')}
  FROM jsonb_array_elements($1::json::jsonb) AS e(r)`;

/**
 * A NUL fails the whole multi-row INSERT, and the buffer that retries it then wrote no row of its replica again.
 * Callers refuse such text first (a model name on the inference routes); this is the last guard, so one request can
 * never stop the audit. In JSON.stringify's output (well-formed: only an unpaired surrogate is escaped as one) both
 * are `\u` escapes, which PostgreSQL refuses in text; each becomes U+FFFD. An escaped backslash is matched whole, so
 * the `u` after it is never read as an escape.
 */
const UNSTORABLE = /\\u(?:0000|d[89a-f])/i;
const UNSTORABLE_OR_BACKSLASH = /\\(?:\\|u0000|ud[89a-f][0-9a-f]{2})/gi;
const storableJson = (json: string): string =>
  UNSTORABLE.test(json) ? json.replace(UNSTORABLE_OR_BACKSLASH, (m) => (m === '\\\\' ? m : '\\ufffd')) : json;

/** The position of a row: its time to the microsecond and its id; newest first. */
export const AUDIT_KEYS: Keyset<DbRow> = {
  list: 'audit',
  parts: [KeyPart.time, KeyPart.bigint],
  keyOf: (r) => [r.at_text, r.id],
};

type DbRow = Record<Column, unknown> & { id: string; at_text: string };
const toRow = (r: DbRow): AuditRow => ({
  id: r.id,
  at: `${r.at_text.slice(0, 23)}Z`,
  requestId: r.request_id as string,
  tenantId: r.tenant_id as string | null,
  principal: r.principal as string | null,
  role: r.role as string | null,
  method: r.method as string,
  route: r.route as string,
  url: r.url as string,
  statusCode: r.status_code as number,
  workflowId: r.workflow_id as string | null,
  ip: r.ip as string | null,
  durationMs: r.duration_ms as number | null,
  bytesSent: r.bytes_sent === null ? null : Number(r.bytes_sent),
  disconnected: r.disconnected as boolean,
  model: r.model as string | null,
  modelVersion: r.model_version as string | null,
  promptTokens: r.prompt_tokens === null ? null : Number(r.prompt_tokens),
  completionTokens: r.completion_tokens === null ? null : Number(r.completion_tokens),
  errorClass: r.error_class as string | null,
});

export class AuditStore {
  constructor(private readonly db: Pool) {}

  async record(e: AuditEntry): Promise<void> {
    await this.insert([e]);
  }

  /** Many rows in one statement. */
  async insert(entries: AuditEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.insertJson(Buffer.from(`[${entries.map(encodeAuditEntry).join(',')}]`));
  }

  /** Many rows in one statement: the UTF-8 text of a JSON array of what `encodeAuditEntry` made of each. */
  async insertJson(rows: Buffer): Promise<void> {
    // A Buffer goes as a binary parameter, which for json is its text. Any NUL or lone surrogate is a `\u` escape.
    await this.db.query(INSERT, [rows.includes('\\u') ? storableJson(rows.toString('utf8')) : rows]);
  }

  /** Adds to the counts of (address, minute); rows must be unique by key (callers aggregate first). */
  async countUnauthenticated(counts: UnauthenticatedCount[]): Promise<void> {
    if (counts.length === 0) return;
    await this.db.query(
      `INSERT INTO audit_unauthenticated (ip, minute, count)
       SELECT ip, to_timestamp(mi / 1000.0), n FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(ip, mi, n)
       ON CONFLICT (ip, minute) DO UPDATE SET count = audit_unauthenticated.count + EXCLUDED.count`,
      [counts.map((c) => c.ip), counts.map((c) => c.minute), counts.map((c) => c.count)],
    );
  }

  /** The counts of refused unauthenticated calls, newest minute first. */
  async unauthenticated(
    filter: { from?: string; to?: string; ip?: string },
    limit = PAGE_LIMIT_DEFAULT,
  ): Promise<Array<{ ip: string; minute: string; count: number }>> {
    const { rows } = await this.db.query<{ ip: string; minute: Date; count: string }>(
      `SELECT ip, minute, count FROM audit_unauthenticated
       WHERE ($1::timestamptz IS NULL OR minute >= $1) AND ($2::timestamptz IS NULL OR minute < $2)
         AND ($3::text IS NULL OR ip = $3)
       ORDER BY minute DESC, ip LIMIT $4`,
      [filter.from ?? null, filter.to ?? null, filter.ip ?? null, limit],
    );
    return rows.map((r) => ({ ip: r.ip, minute: r.minute.toISOString(), count: Number(r.count) }));
  }

  /** One page, newest first; `nextCursor` is set when more rows may follow. */
  async page(
    filter: AuditFilter,
    limit = PAGE_LIMIT_DEFAULT,
    cursor?: string,
  ): Promise<{ data: AuditRow[]; nextCursor: string | null }> {
    const where: string[] = [];
    const params: unknown[] = [];
    const bind = (v: unknown) => `$${params.push(v)}`;
    if (filter.tenantId !== undefined) where.push(`tenant_id = ${bind(filter.tenantId)}`);
    if (filter.from !== undefined) where.push(`at >= ${bind(filter.from)}::timestamptz`);
    if (filter.to !== undefined) where.push(`at < ${bind(filter.to)}::timestamptz`);
    if (filter.principal !== undefined) where.push(`principal = ${bind(filter.principal)}`);
    if (filter.route !== undefined) where.push(`route = ${bind(filter.route)}`);
    if (filter.statusCode !== undefined) where.push(`status_code = ${bind(filter.statusCode)}`);
    if (filter.workflowId !== undefined) where.push(`workflow_id = ${bind(filter.workflowId)}`);
    if (filter.requestId !== undefined) where.push(`request_id = ${bind(filter.requestId)}`);
    const page = await keysetPage(AUDIT_KEYS, { limit, cursor }, (after, take) => {
      if (after) where.push(`(at, id) < (${bind(after[0])}::timestamptz, ${bind(after[1])}::bigint)`);
      return this.db
        .query<DbRow>(
          `SELECT id, ${cursorTime('at')} AS at_text, ${COLUMNS}
       FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY at DESC, id DESC LIMIT ${bind(take)}`,
          params,
        )
        .then((r) => r.rows)
        .catch((err: { code?: string }) => {
          // A time the schema's format admits but PostgreSQL cannot hold (year 0, year 300000).
          if (err.code === '22007' || err.code === '22008')
            throw new BadRequestError('from or to is not a time the audit log can compare', 'querystring.from');
          throw err;
        });
    });
    return { data: page.items.map(toRow), nextCursor: page.nextCursor };
  }

  /** Deletes rows and unauthenticated counts older than `before` (epoch ms). */
  async prune(before: number): Promise<void> {
    const at = new Date(before);
    await this.db.query('DELETE FROM audit_log WHERE at < $1', [at]);
    await this.db.query('DELETE FROM audit_unauthenticated WHERE minute < $1', [at]);
  }

  async byRequestId(requestId: string): Promise<AuditEntry | undefined> {
    const { data } = await this.page({ requestId }, 1);
    const r = data[0];
    return r
      ? {
          requestId: r.requestId,
          tenantId: r.tenantId ?? undefined,
          principal: r.principal ?? undefined,
          role: r.role ?? undefined,
          method: r.method,
          route: r.route,
          url: r.url,
          statusCode: r.statusCode,
          workflowId: r.workflowId ?? undefined,
          ip: r.ip ?? undefined,
        }
      : undefined;
  }
}
