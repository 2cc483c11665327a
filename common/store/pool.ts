import { Pool, type PoolClient } from 'pg';

export type Db = Pool;

/** The pool, or one client of it inside a transaction. */
export type Queryable = Pool | PoolClient;

/** PostgreSQL's SQLSTATE for a row whose foreign key names no row. */
export const FOREIGN_KEY_VIOLATION = '23503';

export function createPool(databaseUrl: string, max = 10): Pool {
  const pool = new Pool({ connectionString: databaseUrl, max });
  // An idle client's connection error must not crash the process; the pool replaces the client.
  pool.on('error', () => undefined);
  return pool;
}

/** Runs `fn` in a transaction; rolls back on any throw so no half-applied state is left. */
export async function inTransaction<T>(db: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const c = await db.connect();
  try {
    await c.query('BEGIN');
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}
