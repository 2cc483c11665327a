/**
 * Who may steer and answer runs, and the shapes the API hands to the workflows' Updates. The workflow's
 * validator checks every field again (workflows/support/approvals.ts): the API's word is not the run's.
 */

export const Roles = ['viewer', 'developer', 'operator', 'approver', 'admin'] as const;
export type Role = (typeof Roles)[number];
/** Who may answer an approval (a rollout gate, a pipeline gate, an agent's risky tool call). */
export const APPROVER_ROLES: readonly string[] = ['approver', 'admin'];

/** An approver's answer to a gate; the API fills in the caller's subject, tenant and roles. */
export interface ApprovalRequest {
  by: string;
  tenantId: string;
  roles: string[];
  decision: 'approve' | 'deny';
  reason?: string;
}

/** An operator's steering of a run (pause, resume, promote, abort, open a gate). */
export interface SteeringRequest {
  /** Who asked (the API puts the caller's subject here), for the status and the audit trail. */
  by: string;
  /** The caller's tenant: a run only takes steering from its own tenant, whatever workflow id reached it. */
  tenantId: string;
  reason?: string;
}

/**
 * Failure types of an Update's validator: the API answers 403 for who asks, 409 for what is asked
 * (wrong phase, stale or repeated answer).
 */
export const ApprovalFailures = {
  forbidden: 'ApprovalForbidden',
  rejected: 'ApprovalRejected',
} as const;
