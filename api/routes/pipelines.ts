import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { clustersOf } from '../../common/config';
import { conversionOptionsOf } from '../../common/conversion-plan';
import { ConflictError, NotFoundError } from '../../common/errors';
import { workflowId } from '../../common/ids';
import { pipelineChildKey, TERMINAL_PIPELINE_STAGES, type ApprovalRequest, type PipelineInput, type PipelineStatus } from '../../common/pipeline';
import { ModelIdKey } from '../../common/search-attributes';
import { ConversionStore } from '../../common/store/conversions';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import { LineageStore, type LineageEntry } from '../../common/store/lineage';
import type { runPipeline } from '../../workflows';
import { requireRole } from '../plugins/auth';
import { idempotencyKeyOf, operationRun, startOperation } from '../operations';
import { errorResponses, IdempotencyHeaders, ResourceId } from '../schemas';
import { checkConversionBody, Convert } from './conversions';
import { checkDeployBody, Deploy, rolloutInputOf } from './deployments';
import { FineTuneBody, validateFineTune } from './fine-tunes';

const WEEK_S = 7 * 86_400;
const PipelineBody = Type.Object(
  {
    fineTune: FineTuneBody,
    /** The conversion of the fine-tuned version: POST /v1/conversions without model and version. */
    conversion: Type.Omit(Convert, ['modelId', 'version']),
    /** The rollout of the fine-tuned version: POST /v1/deploy without model and version. */
    rollout: Type.Omit(Deploy, ['modelId', 'version']),
    approvalBeforeRollout: Type.Boolean({ default: false, description: 'wait for an approver (POST /v1/pipelines/{id}/approvals) before the rollout' }),
    approvalTimeoutSeconds: Type.Integer({ minimum: 60, maximum: 30 * 86_400, default: WEEK_S, description: 'an unanswered approval is a denial after this long' }),
  },
  { additionalProperties: false },
);
const Accepted = Type.Object({ pipelineId: Type.String(), workflowId: Type.String(), status: Type.String(), startedAt: Type.String(), statusUrl: Type.String() });
const IdParams = Type.Object({ id: Type.String({ maxLength: 128 }) });
const Approval = Type.Object({ decision: Type.Union([Type.Literal('approve'), Type.Literal('deny')]), reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: false });
const VersionParams = Type.Object({ modelId: ResourceId, version: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' }) });

interface FineTuneDetails {
  base?: { artifactUri?: string; checksum?: string };
  dataset?: { uri: string; sha256: string };
  method?: string;
  hyperparameters?: Record<string, unknown>;
  artifact?: { uri: string; sha256: string };
}

export const pipelineRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, temporal, taskQueue, objects } = app.platform;
  const clusters = clustersOf(process.env.LLMHUB_CLUSTERS);
  const clusterNames = new Set(Object.keys(clusters));
  const quotas = new GpuQuotaStore(db);
  const lineage = new LineageStore(db);
  const conversions = new ConversionStore(db);

  app.post(
    '/pipelines',
    {
      preHandler: requireRole('developer'),
      schema: {
        tags: ['pipelines'],
        summary: 'Fine-tune → conversion → (approval) → rollout as one workflow with a child workflow per step; stops at the first failure',
        headers: IdempotencyHeaders,
        body: PipelineBody,
        response: { 202: Accepted, ...errorResponses(400, 404, 409, 422, 503) },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const body = request.body;
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const childKey = pipelineChildKey(key);
      // Everything is checked before the start: a refused pipeline leaves no workflow or claim behind.
      checkConversionBody(body.conversion, clusters, 'body.conversion');
      checkDeployBody(body.rollout, clusterNames, 'body.rollout');
      const fineTune = await validateFineTune({ registry, objects, quotas, clusters: clusterNames }, tenantId, body.fineTune, workflowId('fine-tune', tenantId, childKey), 'body.fineTune');
      const { modelId, version } = fineTune.output;
      // The workflow fills model and version in: the version exists only once the fine-tune has run.
      const { modelId: _model, version: _version, ...rollout } = rolloutInputOf(tenantId, childKey, version, { ...body.rollout, modelId });
      const input: PipelineInput = {
        tenantId,
        pipelineId: key,
        fineTune: { ...fineTune, fineTuneId: childKey },
        conversion: { cluster: body.conversion.cluster, options: conversionOptionsOf(body.conversion) },
        rollout,
        approvalBeforeRollout: body.approvalBeforeRollout,
        approvalTimeoutSeconds: body.approvalTimeoutSeconds,
      };
      const id = workflowId('pipeline', tenantId, key);
      const fineTuneBound = fineTune.jobDeadlineSeconds * (fineTune.maxResumptions + 1) + WEEK_S;
      await startOperation<typeof runPipeline>(
        { db, temporal, taskQueue },
        {
          kind: 'pipeline',
          tenantId,
          key,
          request: body,
          workflow: 'runPipeline',
          options: {
            args: [input],
            typedSearchAttributes: [{ key: ModelIdKey, value: modelId }],
            staticSummary: `Pipeline: fine-tune ${fineTune.base.modelId}@${fineTune.base.version} into ${modelId}@${version}, convert, ${body.approvalBeforeRollout ? 'approve, ' : ''}roll out`,
            // Each child's own bound, the approval wait and the rollout's week, added up.
            workflowExecutionTimeout: `${Math.min(fineTuneBound + 86_400 + body.approvalTimeoutSeconds + WEEK_S, 90 * 86_400)}s`,
          },
        },
      );
      request.auditWorkflowId = id;
      const desc = await temporal.workflow.getHandle(id).describe();
      return reply.status(202).send({ pipelineId: key, workflowId: id, status: desc.status.name.toLowerCase(), startedAt: desc.startTime.toISOString(), statusUrl: `/v1/pipelines/${key}` });
    },
  );

  const pipelineOf = (tenantId: string, key: string) => operationRun<typeof runPipeline>(temporal, 'pipeline', 'runPipeline', tenantId, key, 'pipeline');

  app.get(
    '/pipelines/:id',
    {
      preHandler: requireRole('viewer'),
      schema: { tags: ['pipelines'], summary: "Where a pipeline stands: stage, each child's workflow id and outcome, failure reason, approval", params: IdParams, response: errorResponses(400, 404) },
    },
    async (request) => {
      const { handle, desc } = await pipelineOf(request.principal!.tenantId, request.params.id);
      const status = await handle.query<PipelineStatus>('status');
      return { workflowId: handle.workflowId, workflowStatus: desc.status.name, ...status };
    },
  );

  app.post(
    '/pipelines/:id/approvals',
    {
      preHandler: requireRole('approver'),
      schema: { tags: ['pipelines'], summary: 'Approve or deny the rollout of a pipeline waiting at its approval gate', params: IdParams, body: Approval, response: errorResponses(400, 404, 409) },
    },
    async (request) => {
      const p = request.principal!;
      const { handle } = await pipelineOf(p.tenantId, request.params.id);
      request.auditWorkflowId = handle.workflowId;
      try {
        return await handle.executeUpdate<PipelineStatus, [ApprovalRequest]>('approval', {
          args: [{ by: p.subject, roles: p.roles, tenantId: p.tenantId, decision: request.body.decision, reason: request.body.reason }],
        });
      } catch (err) {
        // The workflow's validator refused (not waiting, already answered), or the run has ended.
        if (err instanceof WorkflowUpdateFailedError || err instanceof WorkflowNotFoundError) {
          throw new ConflictError(`cannot answer the approval of pipeline '${request.params.id}': ${(err.cause as Error | undefined)?.message ?? err.message}`);
        }
        throw err;
      }
    },
  );

  app.post(
    '/pipelines/:id/cancel',
    {
      preHandler: requireRole('operator'),
      schema: { tags: ['pipelines'], summary: 'Cancel a pipeline: the running child workflow is cancelled with it', params: IdParams, response: errorResponses(400, 404, 409) },
    },
    async (request, reply) => {
      const { handle } = await pipelineOf(request.principal!.tenantId, request.params.id);
      request.auditWorkflowId = handle.workflowId;
      const status = await handle.query<PipelineStatus>('status');
      if (TERMINAL_PIPELINE_STAGES.includes(status.stage)) throw new ConflictError(`pipeline '${request.params.id}' has already ended (${status.stage})`);
      await handle.cancel();
      return reply.status(202).send({ pipelineId: request.params.id, workflowId: handle.workflowId, status: 'cancelling' });
    },
  );

  app.get(
    '/models/:modelId/versions/:version/lineage',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['pipelines'],
        summary: "A version's lineage: dataset → base → fine-tuned → converted → deployed, each with the workflow that made it",
        params: VersionParams,
        response: errorResponses(400, 404),
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { modelId, version } = request.params;
      if (!(await registry.getVersion(tenantId, modelId, version))) throw new NotFoundError('version', `${modelId}@${version}`);
      const chain = await lineage.chainOf(tenantId, modelId, version);
      // chainOf answers nearest first; the lineage reads from the root.
      const fineTunes = chain.filter((e) => e.kind === 'fine_tune').reverse();
      const steps: Record<string, unknown>[] = [];
      if (fineTunes.length === 0) steps.push({ stage: 'base', modelId, version });
      fineTunes.forEach((e: LineageEntry, i) => {
        const d = e.details as FineTuneDetails;
        if (d.dataset) steps.push({ stage: 'dataset', uri: d.dataset.uri, sha256: d.dataset.sha256 });
        // A fine-tune of a fine-tuned version: its base is the previous fine-tuned step.
        if (i === 0 && e.parent) steps.push({ stage: 'base', ...e.parent, artifactUri: d.base?.artifactUri ?? null, checksum: d.base?.checksum ?? null });
        steps.push({ stage: 'fine_tuned', modelId: e.modelId, version: e.version, workflowId: e.workflowId, method: d.method ?? null, hyperparameters: d.hyperparameters ?? null, artifact: d.artifact ?? null, at: e.createdAt });
      });
      for (const a of await conversions.artifactsOf(tenantId, modelId, version)) {
        steps.push({ stage: 'converted', modelId, version, kind: a.kind, uri: a.uri, sha256: a.sha256, tritonRepositoryUri: a.tritonRepositoryUri, workflowId: a.conversionWorkflowId, at: a.createdAt });
      }
      for (const e of chain.filter((x) => x.kind === 'rollout' && x.modelId === modelId && x.version === version)) {
        steps.push({ stage: 'deployed', modelId, version, workflowId: e.workflowId, ...e.details, at: e.createdAt });
      }
      return { modelId, version, lineage: steps };
    },
  );
};
