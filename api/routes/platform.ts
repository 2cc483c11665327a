import { TENANT_KEYS } from '../../common/store/tenants';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { WorkflowNotFoundError } from '@temporalio/client';
import { Ceiling, type LimitCeiling } from '../../common/config';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../../common/errors';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import { CEILING_SUBJECT, LimitStore } from '../../common/store/limits';
import type { TenantInfo } from '../../common/store/tenants';
import { TENANT_ID_PATTERN, workflowId } from '../../contracts/operations';
import { OperationKindKey, TenantIdKey } from '../../contracts/search-attributes';
import {
  TENANT_DELETION_KEY,
  tenantDeletionContract,
  type TenantDeletionInput,
  type TenantDeletionStatus,
} from '../../contracts/tenant-deletion';
import { linkTo } from '../openapi-links';
import { BucketName, NoContent, StringEnum } from '../resource-schemas';
import { errorResponses, NextCursor, pageQuerystring } from '../schemas';

const TenantId = Type.String({ pattern: TENANT_ID_PATTERN, description: 'lower-case letters, digits, -' });
const Gpus = Type.Integer({ minimum: 0, maximum: 100_000 });
const CeilingOut = Type.Object({
  windowSeconds: Type.Integer(),
  maxRequests: Type.Union([Type.Integer(), Type.Null()]),
  maxTokens: Type.Union([Type.Integer(), Type.Null()]),
});
const Tenant = Type.Object({
  id: Type.String(),
  name: Type.String(),
  createdAt: Type.String(),
  suspendedAt: Type.Union([Type.String(), Type.Null()]),
  gpuQuota: Type.Integer(),
  limitCeiling: Type.Union([CeilingOut, Type.Null()]),
  storage: Type.Object({
    bucket: Type.String({ description: "The tenant's own bucket: read and write, owned by its own S3 user" }),
    grants: Type.Array(Type.String(), { description: 'Buckets granted to it besides: read only' }),
  }),
});
/** The ceiling as a body: a ceiling without either limit limits nothing. */
const CeilingBody = Type.Object(Ceiling.properties, {
  additionalProperties: false,
  anyOf: [{ required: ['maxRequests'] }, { required: ['maxTokens'] }],
  description: 'windowSeconds with maxRequests and/or maxTokens',
});
const CreateTenant = Type.Object(
  {
    id: TenantId,
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    gpuQuota: Type.Optional(Gpus),
    limitCeiling: Type.Optional(CeilingBody),
  },
  { additionalProperties: false },
);
const CreatedTenant = Type.Object({
  tenant: Tenant,
  adminKey: Type.Object({
    id: Type.String(),
    key: Type.String({ description: "The tenant's first admin key; shown only in this answer" }),
  }),
});
/** Marks a route for operators only: the auth plugin admits no tenant member to it. */
const OPERATORS_ONLY = { platform: true };
const DELETION_PHASES = [
  'not_requested',
  'removing-workloads',
  'removing-data',
  'deleted',
  'failed',
] as const satisfies readonly (TenantDeletionStatus['phase'] | 'not_requested')[];
const DeletionAccepted = Type.Object({ workflowId: Type.String(), statusUrl: Type.String() });
const DeletionStatus = Type.Object({
  phase: StringEnum(DELETION_PHASES, { description: "'not_requested' while the tenant has no deletion" }),
  clustersDone: Type.Array(Type.String()),
  failureReason: Type.Optional(Type.String()),
});
const deletionId = (tenantId: string) => workflowId(tenantDeletionContract.kind, tenantId, TENANT_DELETION_KEY);
const TenantParams = Type.Object({ id: TenantId });
/** From an answer naming a tenant to the operators' reads and steering calls of it. */
const tenantLinks = (id: string) => {
  const parameters = { id };
  return {
    get: linkTo('GET /v1/platform/tenants/{id}', { parameters }),
    suspend: linkTo('POST /v1/platform/tenants/{id}/suspend', { parameters }),
    resume: linkTo('POST /v1/platform/tenants/{id}/resume', { parameters }),
    delete: linkTo('DELETE /v1/platform/tenants/{id}', { parameters }),
    setGpuQuota: linkTo('PUT /v1/platform/tenants/{id}/gpu-quota', { parameters }),
    setLimitCeiling: linkTo('PUT /v1/platform/tenants/{id}/limit-ceiling', { parameters }),
    removeLimitCeiling: linkTo('DELETE /v1/platform/tenants/{id}/limit-ceiling', { parameters }),
    setStorage: linkTo('PUT /v1/platform/tenants/{id}/storage', { parameters }),
  };
};

function checkCeiling(c: LimitCeiling, field: string): void {
  if (c.maxRequests === undefined && c.maxTokens === undefined)
    throw new BadRequestError('give maxRequests and/or maxTokens: a ceiling without either limits nothing', field);
}

/**
 * Platform operators' routes: tenants (create, suspend, resume, delete), their GPU quotas and gateway ceilings.
 * A tenant is suspended before it is deleted, so nothing of it can start while its deletion runs.
 * Every route is `platform: true`, so the auth plugin lets only operators in and every tenant member gets 403 (a
 * route without it and without requireRole stops the API at start).
 */
export const platformRoutes: FastifyPluginAsyncTypebox<{ defaults: { gpus: number; ceiling: LimitCeiling } }> = async (
  app,
  { defaults },
) => {
  const {
    db,
    tenants,
    temporal,
    taskQueue,
    clusters,
    tenantResources,
    storageScopes,
    storageAdmin,
    platformBucket,
    objects,
  } = app.platform;
  const quotas = new GpuQuotaStore(db);
  const limits = new LimitStore(db);

  /** The tenants with their quotas, ceilings and storage: one query for each, however many tenants. */
  async function describeAll(infos: TenantInfo[]) {
    const ids = infos.map((t) => t.id);
    const [gpus, ceilings, scopes] = await Promise.all([
      quotas.quotasOf(ids),
      limits.ceilingsOf(ids),
      storageScopes.scopesOf(ids),
    ]);
    return infos.map((tenant) => {
      const ceiling = ceilings.get(tenant.id);
      return {
        ...tenant,
        gpuQuota: gpus.get(tenant.id)!,
        limitCeiling: ceiling
          ? { windowSeconds: ceiling.windowSeconds, maxRequests: ceiling.maxRequests, maxTokens: ceiling.maxTokens }
          : null,
        storage: scopes.get(tenant.id)!,
      };
    });
  }

  async function describe(id: string) {
    const tenant = await tenants.getTenant(id);
    if (!tenant) throw new NotFoundError('tenant', id);
    return (await describeAll([tenant]))[0]!;
  }

  const setCeiling = (tenantId: string, c: LimitCeiling) =>
    limits.setLimit({
      tenantId,
      subject: CEILING_SUBJECT,
      windowSeconds: c.windowSeconds,
      maxRequests: c.maxRequests ?? null,
      maxTokens: c.maxTokens ?? null,
    });

  app.post(
    '/tenants',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary:
          'Create a tenant with its storage scope, namespace, GPU quota, gateway ceiling and first admin key, in one call',
        body: CreateTenant,
        response: { 201: CreatedTenant, ...errorResponses(400, 409) },
      },
      links: { 201: tenantLinks('$response.body#/tenant/id') },
    },
    async (request, reply) => {
      const { id, name = id, gpuQuota = defaults.gpus, limitCeiling = defaults.ceiling } = request.body;
      // The body's ceiling is checked by its schema; this catches a configured default that limits nothing.
      checkCeiling(limitCeiling, 'body.limitCeiling');
      if (await tenants.tenantExists(id))
        throw new ConflictError(`tenant '${id}' already exists`, { field: 'body.id' });
      // Outside resources first: a failure leaves no tenant row, and a retry of the same call finishes the job.
      for (const r of tenantResources) await r.create(id);
      await tenants.createTenant(id, name);
      await quotas.setQuota(id, gpuQuota);
      await setCeiling(id, limitCeiling);
      const key = await tenants.createApiKey(id, 'first-admin', 'admin');
      return reply.status(201).send({ tenant: await describe(id), adminKey: key });
    },
  );

  app.get(
    '/tenants',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: 'List the tenants by id',
        querystring: pageQuerystring(TENANT_KEYS),
        response: { 200: Type.Object({ tenants: Type.Array(Tenant), nextCursor: NextCursor }), ...errorResponses(400) },
      },
      links: { 200: tenantLinks('$response.body#/tenants/0/id') },
    },
    async (request) => {
      const page = await tenants.listTenants(request.query);
      return { tenants: await describeAll(page.items), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/tenants/:id',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: 'One tenant, with its quota and ceiling',
        params: TenantParams,
        response: { 200: Tenant, ...errorResponses(400, 404) },
      },
    },
    async (request) => describe(request.params.id),
  );

  for (const [action, suspended] of [
    ['suspend', true],
    ['resume', false],
  ] as const) {
    app.post(
      `/tenants/:id/${action}`,
      {
        config: OPERATORS_ONLY,
        schema: {
          tags: ['platform'],
          summary: suspended
            ? 'Suspend a tenant: every key and token of it is refused (401) at once on every replica; its data and running operations are left as they are'
            : 'Resume a suspended tenant: its keys and tokens work again',
          params: TenantParams,
          response: { 200: Tenant, ...errorResponses(400, 404) },
        },
      },
      async (request) => {
        if (!(await tenants.setSuspended(request.params.id, suspended)))
          throw new NotFoundError('tenant', request.params.id);
        return describe(request.params.id);
      },
    );
  }

  app.delete(
    '/tenants/:id',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary:
          'Delete a suspended tenant with no running operation: a run removes its workloads in every cluster, then its storage and rows (the audit log stays)',
        params: TenantParams,
        response: { 202: DeletionAccepted, ...errorResponses(400, 404, 409) },
      },
      links: {
        202: { deletion: linkTo('GET /v1/platform/tenants/{id}/deletion', { parameters: { id: '$request.path.id' } }) },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const tenant = await tenants.getTenant(id);
      if (!tenant) throw new NotFoundError('tenant', id);
      if (tenant.suspendedAt === null)
        throw new ConflictError(`suspend tenant '${id}' before deleting it`, { field: 'params.id' });
      const { count } = await temporal.workflow.count(`${TenantIdKey.name} = '${id}' AND ExecutionStatus = 'Running'`);
      if (count > 0)
        throw new ConflictError(
          `tenant '${id}' has ${count} running operation(s); cancel them first (Temporal: TenantId = '${id}')`,
          { field: 'params.id', running: count },
        );
      const input: TenantDeletionInput = {
        tenantId: id,
        clusters: Object.entries(clusters)
          .filter(([, c]) => c.runtime !== 'process')
          .map(([name]) => name),
      };
      const handle = await temporal.workflow.start(tenantDeletionContract.workflowType, {
        args: [input],
        taskQueue,
        workflowId: deletionId(id),
        // A repeated DELETE finds the running deletion; a failed one may be run again.
        workflowIdConflictPolicy: 'USE_EXISTING',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
        // No TenantId attribute: the run must not count as one of the tenant's own operations.
        typedSearchAttributes: [{ key: OperationKindKey, value: tenantDeletionContract.kind }],
      });
      return reply
        .status(202)
        .send({ workflowId: handle.workflowId, statusUrl: `/v1/platform/tenants/${id}/deletion` });
    },
  );

  app.get(
    '/tenants/:id/deletion',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: "Where a tenant's deletion stands (the Temporal query `status` of its run)",
        params: TenantParams,
        response: { 200: DeletionStatus, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const { id } = request.params;
      try {
        return await temporal.workflow.getHandle(deletionId(id)).query(tenantDeletionContract.statusQuery);
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
        // A tenant that exists and was never deleted: nothing to report but that; a deleted one keeps its run.
        if (await tenants.tenantExists(id)) return { phase: 'not_requested' as const, clustersDone: [] };
        throw new NotFoundError('tenant', id);
      }
    },
  );

  app.put(
    '/tenants/:id/gpu-quota',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary:
          "Set a tenant's GPU quota (serving, fine-tunes and GPU conversions together); waiting work is served against it",
        params: TenantParams,
        body: Type.Object({ gpus: Gpus }, { additionalProperties: false }),
        response: { 200: Tenant, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const { id } = request.params;
      if (!(await tenants.tenantExists(id))) throw new NotFoundError('tenant', id);
      await quotas.setQuota(id, request.body.gpus);
      return describe(id);
    },
  );

  app.put(
    '/tenants/:id/limit-ceiling',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: "Set a tenant's gateway ceiling: a limit on all its traffic that its own admins cannot change",
        params: TenantParams,
        body: CeilingBody,
        response: { 200: Tenant, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const { id } = request.params;
      if (!(await tenants.tenantExists(id))) throw new NotFoundError('tenant', id);
      await setCeiling(id, request.body);
      return describe(id);
    },
  );

  app.put(
    '/tenants/:id/storage',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary:
          "Set the buckets a tenant may read besides its own (the whole list: a bucket left out is revoked); its S3 user gets read access through each bucket's policy",
        params: TenantParams,
        body: Type.Object(
          { grants: Type.Array(BucketName, { maxItems: 100, uniqueItems: true }) },
          { additionalProperties: false },
        ),
        response: { 200: Tenant, ...errorResponses(400, 404, 409) },
      },
    },
    async (request) => {
      const { id } = request.params;
      const wanted = request.body.grants;
      wanted.forEach((bucket, i) => {
        // The platform's bucket and tenants' own buckets are never shared: either would cross tenants.
        if (bucket === platformBucket || storageScopes.isTenantBucketName(bucket))
          throw new ForbiddenError(`bucket '${bucket}' is the platform's or a tenant's own and cannot be granted`, {
            field: `body.grants.${i}`,
          });
      });
      if (!(await tenants.tenantExists(id))) throw new NotFoundError('tenant', id);
      // Every bucket is checked before anything changes, so a refused call grants nothing.
      for (const [i, bucket] of wanted.entries())
        if (!(await objects.hasBucket(bucket)))
          // 409, not 404: the tenant this path names exists; the object store does not hold the bucket (yet).
          throw new ConflictError(`bucket '${bucket}' does not exist in the object store`, {
            field: `body.grants.${i}`,
          });
      const held = await storageScopes.grantsOf(id);
      // The bucket policy first: a revocation takes effect at the S3 server before the API stops listing it.
      for (const bucket of [...new Set([...held, ...wanted])])
        await storageScopes.setGrant(id, bucket, wanted.includes(bucket), async (grantees) => {
          // A bucket removed since it was granted has no policy left to change; its grant is still revoked.
          if (await objects.hasBucket(bucket)) await storageAdmin?.setReaders(bucket, grantees);
        });
      return describe(id);
    },
  );

  app.delete(
    '/tenants/:id/limit-ceiling',
    {
      config: OPERATORS_ONLY,
      schema: {
        tags: ['platform'],
        summary: "Remove a tenant's gateway ceiling",
        params: TenantParams,
        response: { 204: NoContent, ...errorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      if (!(await limits.removeLimit(request.params.id, CEILING_SUBJECT)))
        throw new NotFoundError('limitCeiling', request.params.id);
      return reply.status(204).send(null);
    },
  );
};
