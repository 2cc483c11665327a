import { randomUUID } from 'node:crypto';
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  type Client,
  type WorkflowHandle,
  type WorkflowStartOptions,
} from '@temporalio/client';
import type { Workflow } from '@temporalio/common';
import type { PoolClient, Pool } from 'pg';
import { canonicalHash } from '../common/canonical';
import { BadRequestError, NotFoundError, UnavailableError } from '../common/errors';
import { isValidKey, workflowId, type OperationContract } from '../contracts/operations';
import { OperationKindKey, TenantIdKey } from '../contracts/search-attributes';
import { inTransaction } from '../common/store/pool';
import { claimIdempotencyKey, releaseIdempotencyKey } from '../common/store/idempotency';

export function idempotencyKeyOf(header: string | string[] | undefined): string {
  if (header === undefined) return randomUUID();
  const key = Array.isArray(header) ? header[0]! : header;
  if (!isValidKey(key))
    throw new BadRequestError(
      'Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -, the first a letter or digit',
      'Idempotency-Key',
    );
  return key;
}

export interface StartOperation<W extends Workflow = Workflow> {
  contract: OperationContract<unknown>;
  tenantId: string;
  key: string;
  /** The workflow id's key when it is not the Idempotency-Key (a resource id of the platform's own making). */
  workflowKey?: string;
  /** Everything that makes two requests "the same request". */
  request: unknown;
  /** A function of the workflow id when the arguments name the resource the id names (a repeat's, not this request's). */
  options:
    | Omit<WorkflowStartOptions<W>, 'workflowId' | 'taskQueue'>
    | ((workflowId: string) => Omit<WorkflowStartOptions<W>, 'workflowId' | 'taskQueue'>);
  /** Platform-state writes that belong to the operation; they commit with the idempotency claim or not at all. */
  prepare?: (c: PoolClient, workflowId: string) => Promise<void>;
  /** Undoes `prepare` when Temporal refuses the start, so nothing is left half-applied. */
  undo?: (c: PoolClient) => Promise<void>;
}

/**
 * Starts an operation's workflow exactly once per (tenant, kind, Idempotency-Key):
 * the claim and the operation's own rows commit together; the start uses USE_EXISTING (running) and
 * REJECT_DUPLICATE (closed) so a repeat, concurrent or late, lands on the same workflow.
 */
export async function startOperation<W extends Workflow>(
  deps: { db: Pool; temporal: Client; taskQueue: string },
  op: StartOperation<W>,
): Promise<{ workflowId: string; fresh: boolean }> {
  const kind = op.contract.kind;
  const id = workflowId(kind, op.tenantId, op.workflowKey ?? op.key);
  const claimOn = (q: Pool | PoolClient) =>
    claimIdempotencyKey(q, {
      tenantId: op.tenantId,
      kind,
      key: op.key,
      bodyHash: canonicalHash(op.request),
      workflowId: id,
    });
  const prepare = op.prepare;
  // Without rows of its own the claim is one statement: no transaction (BEGIN and COMMIT are two round trips more).
  const claim = prepare
    ? await inTransaction(deps.db, async (c) => {
        const claimed = await claimOn(c);
        if (claimed.fresh) await prepare(c, id);
        return claimed;
      })
    : await claimOn(deps.db);
  const options = typeof op.options === 'function' ? op.options(claim.workflowId) : op.options;
  try {
    await deps.temporal.workflow.start<W>(op.contract.workflowType, {
      ...options,
      workflowId: claim.workflowId,
      taskQueue: deps.taskQueue,
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      typedSearchAttributes: [
        { key: TenantIdKey, value: op.tenantId },
        { key: OperationKindKey, value: kind },
        ...((options.typedSearchAttributes as unknown[] | undefined) ?? []),
      ],
    } as WorkflowStartOptions<W>);
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { workflowId: claim.workflowId, fresh: false };
    if (claim.fresh) {
      await inTransaction(deps.db, async (c) => {
        await op.undo?.(c);
        await releaseIdempotencyKey(c, { tenantId: op.tenantId, kind, key: op.key });
      });
    }
    throw new UnavailableError(
      `could not start the ${kind} workflow; nothing was recorded, retry later: ${(err as Error).message}`,
    );
  }
  return { workflowId: claim.workflowId, fresh: claim.fresh };
}

/**
 * The caller's run of one operation, or 404: the id is rebuilt from the caller's tenant and the run must be of the
 * expected workflow type, so no key reaches another tenant's run or another kind of operation.
 */
export async function operationRun(
  temporal: Client,
  contract: OperationContract<unknown>,
  tenantId: string,
  key: string,
) {
  const handle: WorkflowHandle = temporal.workflow.getHandle(workflowId(contract.kind, tenantId, key));
  try {
    const desc = await handle.describe();
    if (desc.type !== contract.workflowType) throw new NotFoundError(contract.resource, key);
    return { handle, desc };
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new NotFoundError(contract.resource, key);
    throw err;
  }
}
