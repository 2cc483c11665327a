import type { QueryDefinition, UpdateDefinition } from '@temporalio/common';
import type { ApprovalRequest } from './approvals';

/**
 * Workflow ids are `<kind>/<tenant>/<key>`: readable in the Temporal UI and rebuilt by the API from the
 * caller's own tenant, so a URL carrying only the key can never reach another tenant's run.
 */
export const OperationKinds = [
  'model-version',
  'rollout',
  'fine-tune',
  'conversion',
  'ingestion',
  'agent-run',
  'pipeline',
  'tenant-deletion',
  'batch',
] as const;
export type OperationKind = (typeof OperationKinds)[number];

/** Idempotency keys and resource ids share one conservative alphabet so they embed safely in ids and URLs. */
export const KEY_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$';
const keyRe = new RegExp(KEY_PATTERN);
export const isValidKey = (key: string): boolean => keyRe.test(key);

/** Tenant ids carry no `/`, so `<kind>/<tenant>/<key>` always splits one way. */
export const TENANT_ID_PATTERN = '^[a-z0-9][a-z0-9-]{0,62}$';
const tenantRe = new RegExp(TENANT_ID_PATTERN);
export const isValidTenantId = (id: string): boolean => tenantRe.test(id);

export function workflowId(kind: OperationKind, tenantId: string, key: string): string {
  return `${kind}/${tenantId}/${key}`;
}

export function parseWorkflowId(id: string): { kind: string; tenantId: string; key: string } | undefined {
  const [kind, tenantId, ...rest] = id.split('/');
  if (!kind || !tenantId || rest.length === 0) return undefined;
  return { kind, tenantId, key: rest.join('/') };
}

/**
 * What the API, the worker and the workflow agree on for one operation; each `contracts/<operation>.ts` exports one.
 * Names here are wire names recorded in histories and used by clients: never rename them.
 */
export interface OperationContract<Status, Approval extends ApprovalRequest = ApprovalRequest> {
  kind: OperationKind;
  /** The workflow function's name, which Temporal records as the workflow type. */
  workflowType: string;
  /** The noun in messages and 404s, e.g. `deployment`. */
  resource: string;
  /** The key that names a run's id in API answers, e.g. `deploymentId`; absent where the id is not an operation key. */
  idField?: string;
  statusQuery: QueryDefinition<Status>;
  /** The Update an approver's answer goes to, where the operation has an approval gate. */
  approvalUpdate?: UpdateDefinition<Status, [Approval]>;
  /** Phases (or stages) after which the run does nothing more. */
  terminalPhases: readonly string[];
}
