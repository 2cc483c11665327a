import { ApplicationFailure } from '@temporalio/workflow';
import {
  ApprovalFailures,
  APPROVER_ROLES,
  type ApprovalRequest,
  type SteeringRequest,
} from '../../contracts/approvals';

/**
 * Update validators' refusals. Validators run before anything reaches history (and not on replay), so these checks can
 * change without a patch. Their failure type tells the API who was refused (403) from what was refused (409).
 */
export const forbidden = (message: string): never => {
  throw ApplicationFailure.nonRetryable(message, ApprovalFailures.forbidden);
};
export const rejected = (message: string): never => {
  throw ApplicationFailure.nonRetryable(message, ApprovalFailures.rejected);
};

/** A steering request names who asks and comes from the run's own tenant, whatever workflow id reached it. */
export function checkSteeringCaller(r: SteeringRequest | undefined, tenantId: string, what: string): void {
  if (!r || typeof r.by !== 'string' || r.by.length === 0) rejected('a request names who asks (by)');
  if (r!.tenantId !== tenantId) forbidden(`the ${what} belongs to another tenant`);
}

/** An approval answer: from the run's tenant, by an approver, approving or denying. */
export function checkApprover(r: ApprovalRequest | undefined, tenantId: string, what: string): void {
  if (!r || typeof r.by !== 'string' || r.by.length === 0) rejected('an approval names who answers (by)');
  if (r!.tenantId !== tenantId) forbidden(`the ${what} belongs to another tenant`);
  if (!r!.roles?.some((role) => APPROVER_ROLES.includes(role))) {
    forbidden(
      `answering an approval needs the 'approver' role; the caller has ${(r!.roles ?? []).join(', ') || 'none'}`,
    );
  }
  if (r!.decision !== 'approve' && r!.decision !== 'deny') rejected("decision must be 'approve' or 'deny'");
}
