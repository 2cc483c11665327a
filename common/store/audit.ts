import type { Pool } from 'pg';

export interface AuditEntry {
  requestId: string;
  tenantId?: string;
  principal?: string;
  role?: string;
  method: string;
  route: string;
  url: string;
  statusCode: number;
  workflowId?: string;
  ip?: string;
}

export class AuditStore {
  constructor(private readonly db: Pool) {}

  async record(e: AuditEntry): Promise<void> {
    await this.db.query(
      `INSERT INTO audit_log (request_id, tenant_id, principal, role, method, route, url, status_code, workflow_id, ip)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [
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
      ],
    );
  }

  async byRequestId(requestId: string): Promise<AuditEntry | undefined> {
    const { rows } = await this.db.query(
      `SELECT request_id, tenant_id, principal, role, method, route, url, status_code, workflow_id, ip
       FROM audit_log WHERE request_id = $1`,
      [requestId],
    );
    const r = rows[0];
    return r
      ? {
          requestId: r.request_id,
          tenantId: r.tenant_id ?? undefined,
          principal: r.principal ?? undefined,
          role: r.role ?? undefined,
          method: r.method,
          route: r.route,
          url: r.url,
          statusCode: r.status_code,
          workflowId: r.workflow_id ?? undefined,
          ip: r.ip ?? undefined,
        }
      : undefined;
  }
}
