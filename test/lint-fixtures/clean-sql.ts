// lint-as: common/store/example.ts
// pg's query takes SQL, never a message name, even when it is one word.
import type { Pool } from 'pg';

export async function example(db: Pool, channel: string, sql: string): Promise<void> {
  const c = await db.connect();
  try {
    await c.query('BEGIN');
    await c.query('SELECT 1');
    await c.query(`LISTEN ${channel}`);
    await c.query(sql);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK');
    throw err;
  } finally {
    c.release();
  }
}
