import { randomBytes } from 'node:crypto';
import type { Pool } from 'pg';
import type { BatchEndpoint, BatchError, BatchStatus, RequestCounts } from '../../contracts/batch';

/** Ids that sort by creation (ms time, then random), so `after` pages in OpenAI's newest-first order by id alone. */
export const newObjectId = (prefix: 'file-' | 'batch_'): string =>
  `${prefix}${Date.now().toString(16).padStart(12, '0')}${randomBytes(8).toString('hex')}`;

export type FilePurpose = 'batch' | 'batch_output';

export interface BatchFile {
  id: string;
  purpose: FilePurpose;
  filename: string;
  bytes: number;
  lineCount: number;
  pageOffsets: number[];
  /** The distinct urls of its lines. */
  urls: string[];
  objectKey: string;
  createdAt: number;
}

export interface BatchRecord {
  id: string;
  endpoint: BatchEndpoint;
  inputFileId: string;
  completionWindow: string;
  metadata: Record<string, string> | null;
  status: BatchStatus;
  createdBy: string;
  total: number;
  outputFileId: string | null;
  errorFileId: string | null;
  requestCounts: RequestCounts;
  /** Why a failed batch failed; null unless it did for its input. */
  errors: BatchError[] | null;
  /** Epoch seconds, as OpenAI's object has them; null until reached. */
  times: Record<BatchTime, number | null>;
}

export const BATCH_TIMES = [
  'created_at',
  'expires_at',
  'in_progress_at',
  'finalizing_at',
  'completed_at',
  'expired_at',
  'cancelling_at',
  'cancelled_at',
  'failed_at',
] as const;
export type BatchTime = (typeof BATCH_TIMES)[number];

/** The statuses after which a batch changes no more. */
export const ENDED: readonly BatchStatus[] = ['completed', 'failed', 'expired', 'cancelled'];

interface FileRow {
  id: string;
  purpose: FilePurpose;
  filename: string;
  bytes: string;
  line_count: number;
  page_offsets: string[];
  urls: string[];
  object_key: string;
  created_at: Date;
}
const toFile = (r: FileRow): BatchFile => ({
  id: r.id,
  purpose: r.purpose,
  filename: r.filename,
  bytes: Number(r.bytes),
  lineCount: r.line_count,
  pageOffsets: r.page_offsets.map(Number),
  urls: r.urls,
  objectKey: r.object_key,
  createdAt: Math.floor(r.created_at.getTime() / 1000),
});

const BATCH_COLUMNS = `b.id, b.endpoint, b.input_file_id, b.completion_window, b.metadata, b.status, b.created_by, b.total,
  b.output_file_id, b.error_file_id, b.errors, ${BATCH_TIMES.map((t) => `b.${t}`).join(', ')},
  COALESCE((SELECT sum(p.completed) FROM batch_pages p WHERE p.tenant_id = b.tenant_id AND p.batch_id = b.id), 0) AS completed,
  COALESCE((SELECT sum(p.failed) FROM batch_pages p WHERE p.tenant_id = b.tenant_id AND p.batch_id = b.id), 0) AS failed`;

type BatchRow = Record<BatchTime, Date | null> & {
  id: string;
  endpoint: BatchEndpoint;
  input_file_id: string;
  completion_window: string;
  metadata: Record<string, string> | null;
  status: BatchStatus;
  created_by: string;
  total: number;
  output_file_id: string | null;
  error_file_id: string | null;
  errors: BatchError[] | null;
  completed: string;
  failed: string;
};
const toBatch = (r: BatchRow): BatchRecord => ({
  id: r.id,
  endpoint: r.endpoint,
  inputFileId: r.input_file_id,
  completionWindow: r.completion_window,
  metadata: r.metadata,
  status: r.status,
  createdBy: r.created_by,
  total: r.total,
  outputFileId: r.output_file_id,
  errorFileId: r.error_file_id,
  requestCounts: { total: r.total, completed: Number(r.completed), failed: Number(r.failed) },
  errors: r.errors,
  times: Object.fromEntries(
    BATCH_TIMES.map((t) => [t, r[t] ? Math.floor(r[t].getTime() / 1000) : null]),
  ) as BatchRecord['times'],
});

/** Files and batches of the OpenAI-compatible Files and Batch API; every read and write names the tenant. */
export class BatchStore {
  constructor(private readonly db: Pool) {}

  /** Inserts the file, or leaves an existing one of that id (outputs are written again by a retried activity). */
  async putFile(tenantId: string, f: Omit<BatchFile, 'createdAt'>): Promise<void> {
    await this.db.query(
      `INSERT INTO batch_files (tenant_id, id, purpose, filename, bytes, line_count, page_offsets, urls, object_key)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
      [tenantId, f.id, f.purpose, f.filename, f.bytes, f.lineCount, f.pageOffsets, f.urls, f.objectKey],
    );
  }

  async getFile(tenantId: string, id: string): Promise<BatchFile | undefined> {
    const { rows } = await this.db.query<FileRow>('SELECT * FROM batch_files WHERE tenant_id = $1 AND id = $2', [
      tenantId,
      id,
    ]);
    return rows[0] && toFile(rows[0]);
  }

  /** Newest first (`order` desc, the default) or oldest first (asc); `after` is the last id of the previous page. */
  async listFiles(
    tenantId: string,
    q: { after?: string; limit: number; purpose?: string; order?: 'asc' | 'desc' },
  ): Promise<{ items: BatchFile[]; hasMore: boolean }> {
    const [past, direction] = q.order === 'asc' ? ['>', 'ASC'] : ['<', 'DESC'];
    const { rows } = await this.db.query<FileRow>(
      `SELECT * FROM batch_files WHERE tenant_id = $1 AND ($2::text IS NULL OR id ${past} $2) AND ($3::text IS NULL OR purpose = $3)
       ORDER BY id ${direction} LIMIT $4`,
      [tenantId, q.after ?? null, q.purpose ?? null, q.limit + 1],
    );
    return { items: rows.slice(0, q.limit).map(toFile), hasMore: rows.length > q.limit };
  }

  /** Whether a batch that has not ended reads the file. */
  async fileInUse(tenantId: string, id: string): Promise<boolean> {
    const { rowCount } = await this.db.query(
      'SELECT 1 FROM batches WHERE tenant_id = $1 AND input_file_id = $2 AND status <> ALL($3) LIMIT 1',
      [tenantId, id, ENDED],
    );
    return rowCount === 1;
  }

  async deleteFile(tenantId: string, id: string): Promise<BatchFile | undefined> {
    const { rows } = await this.db.query<FileRow>(
      'DELETE FROM batch_files WHERE tenant_id = $1 AND id = $2 RETURNING *',
      [tenantId, id],
    );
    return rows[0] && toFile(rows[0]);
  }

  async createBatch(
    tenantId: string,
    b: Pick<
      BatchRecord,
      'id' | 'endpoint' | 'inputFileId' | 'completionWindow' | 'metadata' | 'createdBy' | 'total'
    > & {
      expiresAt: number;
    },
  ): Promise<void> {
    await this.db.query(
      `INSERT INTO batches (tenant_id, id, endpoint, input_file_id, completion_window, metadata, status, created_by, total, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, 'validating', $7, $8, to_timestamp($9 / 1000.0))`,
      [tenantId, b.id, b.endpoint, b.inputFileId, b.completionWindow, b.metadata, b.createdBy, b.total, b.expiresAt],
    );
  }

  async getBatch(tenantId: string, id: string): Promise<BatchRecord | undefined> {
    const { rows } = await this.db.query<BatchRow>(
      `SELECT ${BATCH_COLUMNS} FROM batches b WHERE b.tenant_id = $1 AND b.id = $2`,
      [tenantId, id],
    );
    return rows[0] && toBatch(rows[0]);
  }

  async listBatches(
    tenantId: string,
    q: { after?: string; limit: number },
  ): Promise<{ items: BatchRecord[]; hasMore: boolean }> {
    const { rows } = await this.db.query<BatchRow>(
      `SELECT ${BATCH_COLUMNS} FROM batches b WHERE b.tenant_id = $1 AND ($2::text IS NULL OR b.id < $2)
       ORDER BY b.id DESC LIMIT $3`,
      [tenantId, q.after ?? null, q.limit + 1],
    );
    return { items: rows.slice(0, q.limit).map(toBatch), hasMore: rows.length > q.limit };
  }

  /**
   * Moves the batch to `status` and stamps its time, unless it has ended; a repeated move keeps the first stamp, and
   * `cancelling` never follows `finalizing`'s end. False when the batch was not moved.
   */
  async moveBatch(
    tenantId: string,
    id: string,
    status: BatchStatus,
    files: { outputFileId?: string | null; errorFileId?: string | null } = {},
    errors?: BatchError[],
  ): Promise<boolean> {
    const stamp = `${status}_at`;
    if (!(BATCH_TIMES as readonly string[]).includes(stamp)) throw new Error(`no time for batch status ${status}`);
    const { rowCount } = await this.db.query(
      `UPDATE batches SET status = $3, ${stamp} = COALESCE(${stamp}, now()),
         output_file_id = COALESCE($4, output_file_id), error_file_id = COALESCE($5, error_file_id),
         errors = COALESCE($7, errors)
       WHERE tenant_id = $1 AND id = $2 AND status <> ALL($6)`,
      [
        tenantId,
        id,
        status,
        files.outputFileId ?? null,
        files.errorFileId ?? null,
        ENDED,
        errors ? JSON.stringify(errors) : null,
      ],
    );
    return rowCount === 1;
  }

  /** The results a page's lines have so far, as written (JSON text) by custom_id. */
  async resultsOf(tenantId: string, batchId: string, page: number): Promise<Map<string, string>> {
    const { rows } = await this.db.query<{ custom_id: string; result: string }>(
      'SELECT custom_id, result FROM batch_results WHERE tenant_id = $1 AND batch_id = $2 AND page = $3',
      [tenantId, batchId, page],
    );
    return new Map(rows.map((r) => [r.custom_id, r.result]));
  }

  /** Writes results in one statement; a custom_id that already has one keeps it. */
  async putResults(
    tenantId: string,
    batchId: string,
    page: number,
    results: { customId: string; result: string }[],
  ): Promise<void> {
    await this.db.query(
      `INSERT INTO batch_results (tenant_id, batch_id, page, custom_id, result)
       SELECT $1, $2, $3, c, r FROM unnest($4::text[], $5::text[]) AS t(c, r) ON CONFLICT DO NOTHING`,
      [tenantId, batchId, page, results.map((r) => r.customId), results.map((r) => r.result)],
    );
  }

  /** Drops the rows of one page (once its object is written) or, without a page, of the whole batch. */
  async dropResults(tenantId: string, batchId: string, page?: number): Promise<void> {
    await this.db.query(
      'DELETE FROM batch_results WHERE tenant_id = $1 AND batch_id = $2 AND ($3::integer IS NULL OR page = $3)',
      [tenantId, batchId, page ?? null],
    );
  }

  async recordPage(tenantId: string, batchId: string, o: { page: number; completed: number; failed: number }) {
    await this.db.query(
      `INSERT INTO batch_pages (tenant_id, batch_id, page, completed, failed) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (tenant_id, batch_id, page) DO UPDATE SET completed = EXCLUDED.completed, failed = EXCLUDED.failed`,
      [tenantId, batchId, o.page, o.completed, o.failed],
    );
  }
}
