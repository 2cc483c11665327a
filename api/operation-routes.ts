import { Type, type Static, type TObject, type TProperties, type TSchema, type TString } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ApplicationFailure, type UpdateDefinition } from '@temporalio/common';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApprovalFailures, type ApprovalRequest, type Role } from '../contracts/approvals';
import { workflowId, type OperationContract } from '../contracts/operations';
import { ConflictError, ForbiddenError } from '../common/errors';
import type { Principal } from '../common/types';
import { requireRole } from './plugins/auth';
import { idempotencyKeyOf, operationRun, startOperation, type StartOperation } from './operations';
import type { linkTo } from './openapi-links';
import { errorResponses, IdempotencyHeaders } from './schemas';

/** A run's key in a URL: the Idempotency-Key it was started with. */
export const IdParams = Type.Object({ id: Type.String({ maxLength: 128 }) });

/** Who may do what to a started run, the same for every operation. */
export const OPERATION_ROLES = {
  start: 'developer',
  read: 'viewer',
  /** The role that starts an operation may stop it. */
  cancel: 'developer',
  /** Checked here and again by the workflow's Update validator. */
  approve: 'approver',
} as const satisfies Record<string, Role>;

const idOf = (contract: OperationContract<unknown>) => contract.idField ?? 'id';

/** The 202 answer of a start: the same five fields for every operation, the id under the contract's key. */
const acceptedSchema = (contract: OperationContract<unknown>) =>
  Type.Object({
    [idOf(contract)]: Type.String(),
    workflowId: Type.String(),
    status: Type.String({ description: "the workflow's Temporal status, lower-case (running)" }),
    startedAt: Type.String({ format: 'date-time' }),
    statusUrl: Type.String(),
  });

/** OpenAPI links by name (api/openapi-links.ts). */
export type Links = Record<string, ReturnType<typeof linkTo>>;

/**
 * Runs a steering or approval Update and maps the workflow's refusal: its validator's `forbidden` (who asks) to 403,
 * any other refusal or an ended run (what is asked) to 409 with the reason, prefixed by `refused`.
 */
export async function executeRunUpdate<R, A>(
  handle: WorkflowHandle,
  update: UpdateDefinition<R, [A]>,
  arg: A,
  refused: string,
  field?: string,
): Promise<R> {
  try {
    return await handle.executeUpdate(update, { args: [arg] });
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      const cause = err.cause;
      const message = cause instanceof Error ? cause.message : err.message;
      if (cause instanceof ApplicationFailure && cause.type === ApprovalFailures.forbidden)
        throw new ForbiddenError(message);
      throw new ConflictError(`${refused}: ${message}`, field ? { field } : undefined);
    }
    if (err instanceof WorkflowNotFoundError) throw new ConflictError(`${refused}: the run has ended`);
    throw err;
  }
}

/** What a start route works out from the request; who starts it and under which key the builder adds. */
export type PlannedStart = Pick<StartOperation, 'options' | 'prepare' | 'undo'> & {
  /** What makes two requests the same request (default: the body). */
  request?: unknown;
};

export interface OperationRoutes<S, A extends ApprovalRequest, B extends TSchema> {
  contract: OperationContract<S, A>;
  /** The start route: `202` with the run's id, exactly once per Idempotency-Key. */
  start?: {
    path: string;
    summary: string;
    body: B;
    /** The 4xx it may answer beyond 400, 401, 403, 422 and 503. */
    errors: number[];
    statusUrl: (key: string) => string;
    /** From the 202 answer to the run's reads and steering calls. */
    links: Links;
    /** Checks the request beyond its schema and plans the run; throws the 4xx that names the field. */
    plan: (body: Static<B>, run: { tenantId: string; key: string; workflowId: string }) => Promise<PlannedStart>;
  };
  /** The run's URL under the plugin's prefix, e.g. `/fine-tunes/:id`. */
  path: string;
  /** Where the path has more parameters than the run's `id`. */
  params?: TObject<{ id: TString } & TProperties>;
  tag: string;
  read: {
    summary: string;
    /** What GET answers; by default the run's status query with the workflow id and Temporal status. */
    answer?: (r: RunContext<S>) => Promise<unknown>;
    /** The schema of that answer (api/operation-schemas.ts). */
    response: TSchema;
  };
  cancel?: { summary: string };
  approvals?: {
    summary: string;
    /** The answer's fields; the Update gets them with the caller (subject, tenant, roles), whom the workflow checks again. */
    body: TSchema;
    /** The body field a refused answer is about (a stale action hash, say). */
    conflictField?: string;
    /** The run's status as the approval Update answers it. */
    response: TSchema;
  };
}

export interface RunContext<S> {
  tenantId: string;
  key: string;
  handle: WorkflowHandle;
  workflowStatus: string;
  status: () => Promise<S>;
}

/**
 * The routes every operation has once started: read its status, cancel it, answer its approval gate. One role policy
 * (OPERATION_ROLES), one way to find the run (the id rebuilt from the caller's tenant, of the contract's workflow type,
 * else 404) and one mapping of the workflow's answers to 4xx.
 */
export function operationRoutes<S, A extends ApprovalRequest = ApprovalRequest, B extends TSchema = TSchema>(
  o: OperationRoutes<S, A, B>,
): FastifyPluginAsyncTypebox {
  const { contract } = o;
  // Extra path parameters (an ingestion's namespace) are validated by their schema; the handlers need only the id.
  const params = (o.params ?? IdParams) as typeof IdParams;
  return async (app) => {
    const { temporal } = app.platform;

    const start = o.start;
    if (start) {
      app.post(
        start.path,
        {
          preHandler: requireRole(OPERATION_ROLES.start),
          links: { 202: start.links },
          schema: {
            tags: [o.tag],
            summary: start.summary,
            headers: IdempotencyHeaders,
            body: start.body,
            response: { 202: acceptedSchema(contract), ...errorResponses(400, 422, 503, ...start.errors) },
          },
        },
        async (request, reply) => {
          const tenantId = request.principal!.tenantId;
          const key = idempotencyKeyOf(request.headers['idempotency-key']);
          const id = workflowId(contract.kind, tenantId, key);
          const body = request.body as Static<B>;
          const { request: same = body, ...plan } = await start.plan(body, { tenantId, key, workflowId: id });
          await startOperation(app.platform, { contract, tenantId, key, request: same, ...plan });
          request.auditWorkflowId = id;
          // From the run itself, so a repeated start answers with the run it landed on.
          const desc = await temporal.workflow.getHandle(id).describe();
          return reply.status(202).send({
            [idOf(contract)]: key,
            workflowId: id,
            status: desc.status.name.toLowerCase(),
            startedAt: desc.startTime.toISOString(),
            statusUrl: start.statusUrl(key),
          });
        },
      );
    }
    const runOf = (request: { principal?: Principal; params: { id: string } }) =>
      operationRun(temporal, contract, request.principal!.tenantId, request.params.id);

    app.get(
      o.path,
      {
        preHandler: requireRole(OPERATION_ROLES.read),
        schema: {
          tags: [o.tag],
          summary: o.read.summary,
          params,
          response: { 200: o.read.response, ...errorResponses(400, 404) },
        },
      },
      async (request) => {
        const { handle, desc } = await runOf(request);
        const context: RunContext<S> = {
          tenantId: request.principal!.tenantId,
          key: request.params.id,
          handle,
          workflowStatus: desc.status.name,
          status: () => handle.query(contract.statusQuery),
        };
        if (o.read.answer) return o.read.answer(context);
        return { workflowId: handle.workflowId, workflowStatus: context.workflowStatus, ...(await context.status()) };
      },
    );

    if (o.cancel) {
      const Cancelling = Type.Object({
        [idOf(contract)]: Type.String(),
        workflowId: Type.String(),
        status: Type.Literal('cancelling'),
      });
      app.post(
        `${o.path}/cancel`,
        {
          preHandler: requireRole(OPERATION_ROLES.cancel),
          schema: {
            tags: [o.tag],
            summary: o.cancel.summary,
            params,
            response: { 202: Cancelling, ...errorResponses(400, 404, 409) },
          },
        },
        async (request, reply) => {
          const { handle, desc } = await runOf(request);
          request.auditWorkflowId = handle.workflowId;
          // Temporal's own status, not the run's phase: a run whose worker is down still answers, and an ended one is ended.
          if (desc.status.name !== 'RUNNING')
            throw new ConflictError(
              `${contract.resource} '${request.params.id}' has already ended (${desc.status.name.toLowerCase()})`,
            );
          await handle.cancel();
          const answer: Record<string, string> = {
            [idOf(contract)]: request.params.id,
            workflowId: handle.workflowId,
            status: 'cancelling',
          };
          return reply.status(202).send(answer);
        },
      );
    }

    const approvals = o.approvals;
    const update = contract.approvalUpdate;
    if (approvals && update) {
      app.post(
        `${o.path}/approvals`,
        {
          preHandler: requireRole(OPERATION_ROLES.approve),
          schema: {
            tags: [o.tag],
            summary: approvals.summary,
            params,
            body: approvals.body,
            response: { 200: approvals.response, ...errorResponses(400, 404, 409) },
          },
        },
        async (request) => {
          const { handle } = await runOf(request);
          request.auditWorkflowId = handle.workflowId;
          const p = request.principal!;
          const answer = {
            ...(request.body as Omit<A, 'by' | 'tenantId' | 'roles'>),
            by: p.subject,
            tenantId: p.tenantId,
            roles: p.roles,
          } as A;
          return executeRunUpdate(
            handle,
            update,
            answer,
            `cannot answer the approval of ${contract.resource} '${request.params.id}'`,
            approvals.conflictField,
          );
        },
      );
    }
  };
}
