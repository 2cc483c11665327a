import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Client, type Pool } from 'pg';
import { migrate } from '../../common/store/migrate';
import { createPool } from '../../common/store/pool';
import { uniqueId } from '../support/platform';

/** Each test migrates its own empty database on the shared PostgreSQL server. */
const dbName = uniqueId('migrations').replace('-', '_');
let db: Pool;

const schemaSnapshot = async () =>
  (
    await db.query(
      `SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns
       WHERE table_schema = 'public' ORDER BY table_name, column_name`,
    )
  ).rows;

beforeAll(async () => {
  const admin = new Client({ connectionString: process.env.DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const url = new URL(process.env.DATABASE_URL!);
  url.pathname = `/${dbName}`;
  db = createPool(url.toString(), 4);
});
afterAll(async () => {
  await db?.end();
});

describe('migrations', () => {
  it('apply from scratch, and a second (even concurrent) run changes nothing', async () => {
    const first = await migrate(db);
    expect(first.applied).toContain('0001_platform.sql');
    expect(first.alreadyApplied).toEqual([]);
    const before = await schemaSnapshot();
    expect(before.map((r) => r.table_name)).toEqual(
      expect.arrayContaining(['tenants', 'api_keys', 'models', 'model_versions', 'audit_log']),
    );

    const [a, b] = await Promise.all([migrate(db), migrate(db)]);
    for (const again of [a, b]) {
      expect(again.applied).toEqual([]);
      expect(again.alreadyApplied).toEqual(first.applied);
    }
    expect(await schemaSnapshot()).toEqual(before);
    const recorded = await db.query('SELECT name FROM schema_migrations ORDER BY name');
    expect(recorded.rows.map((r) => r.name)).toEqual(first.applied);
  });
});
