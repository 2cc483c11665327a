import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ClusterSettings } from '../../common/config';
import { conversionOptionsOf } from '../../common/conversion-plan';
import { workflowId } from '../../contracts/operations';
import { pipelineChildKey, pipelineContract, type PipelineInput } from '../../contracts/pipeline';
import { ModelIdKey } from '../../contracts/search-attributes';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import { fineTuneContract } from '../../contracts/fine-tune';
import { operationRoutes } from '../operation-routes';
import { PipelineRead, PipelineStatusSchema } from '../operation-schemas';
import { linkTo } from '../openapi-links';
import { conversionClusters, convertBody } from './conversions';
import { deployBody, rolloutInputOf } from './deployments';
import { resolveResources } from '../../common/resources';
import { fineTuneBody, validateFineTune } from './fine-tunes';

const WEEK_S = 7 * 86_400;
/** Each step's body as its own route takes it, for the same clusters. */
const pipelineBody = (clusters: ClusterSettings, podMetadataKeys: readonly string[]) =>
  Type.Object(
    {
      fineTune: fineTuneBody(Object.keys(clusters)),
      /** The conversion of the fine-tuned version: POST /v1/conversions without model and version. */
      conversion: Type.Omit(convertBody(conversionClusters(clusters)), ['modelId', 'version']),
      /** The rollout of the fine-tuned version: POST /v1/deploy without model and version. */
      rollout: Type.Omit(deployBody(Object.keys(clusters), podMetadataKeys), ['modelId', 'version']),
      approvalBeforeRollout: Type.Boolean({
        default: false,
        description: 'wait for an approver (POST /v1/pipelines/{id}/approvals) before the rollout',
      }),
      approvalTimeoutSeconds: Type.Integer({
        minimum: 60,
        maximum: 30 * 86_400,
        default: WEEK_S,
        description: 'an unanswered approval is a denial after this long',
      }),
    },
    { additionalProperties: false },
  );
const Approval = Type.Object(
  {
    decision: Type.Union([Type.Literal('approve'), Type.Literal('deny')]),
    reason: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);

const byPipelineId = { parameters: { id: '$response.body#/pipelineId' } };

export const pipelineRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, objects, storageScopes } = app.platform;
  const clusters = app.platform.clusters;
  const quotas = new GpuQuotaStore(db);

  await app.register(
    operationRoutes({
      contract: pipelineContract,
      tag: 'pipelines',
      start: {
        path: '/pipelines',
        summary:
          'Fine-tune → conversion → (approval) → rollout as one workflow with a child workflow per step; stops at the first failure',
        body: pipelineBody(clusters, app.platform.podMetadataKeys),
        errors: [404, 409],
        statusUrl: (key) => `/v1/pipelines/${key}`,
        links: {
          status: linkTo('GET /v1/pipelines/{id}', byPipelineId),
          cancel: linkTo('POST /v1/pipelines/{id}/cancel', byPipelineId),
          approve: linkTo('POST /v1/pipelines/{id}/approvals', byPipelineId),
        },
        plan: async (body, run) => {
          const { tenantId, key } = run;
          const childKey = pipelineChildKey(key);
          // Everything is checked before the start: a refused pipeline leaves no workflow or claim behind.
          const fineTune = await validateFineTune(
            { registry, objects, quotas, storageScopes },
            tenantId,
            body.fineTune,
            workflowId(fineTuneContract.kind, tenantId, childKey),
            'body.fineTune',
          );
          const { modelId, version } = fineTune.output;
          const target = await registry.getModel(tenantId, modelId);
          // The workflow fills model and version in: the version exists only once the fine-tune has run.
          const {
            modelId: _model,
            version: _version,
            ...rollout
          } = rolloutInputOf(
            tenantId,
            childKey,
            version,
            { ...body.rollout, modelId },
            resolveResources(
              body.rollout.resources,
              target?.resources,
              clusters[body.rollout.cluster]?.defaultResources,
            ),
          );
          const input: PipelineInput = {
            tenantId,
            pipelineId: key,
            fineTune: { ...fineTune, fineTuneId: childKey },
            conversion: { cluster: body.conversion.cluster, options: conversionOptionsOf(body.conversion) },
            rollout,
            approvalBeforeRollout: body.approvalBeforeRollout,
            approvalTimeoutSeconds: body.approvalTimeoutSeconds,
          };
          const fineTuneBound = fineTune.jobDeadlineSeconds * (fineTune.maxResumptions + 1) + WEEK_S;
          return {
            options: {
              args: [input],
              typedSearchAttributes: [{ key: ModelIdKey, value: modelId }],
              staticSummary: `Pipeline: fine-tune ${fineTune.base.modelId}@${fineTune.base.version} into ${modelId}@${version}, convert, ${body.approvalBeforeRollout ? 'approve, ' : ''}roll out`,
              // Each child's own bound, the approval wait and the rollout's week, added up.
              workflowExecutionTimeout: `${Math.min(fineTuneBound + 86_400 + body.approvalTimeoutSeconds + WEEK_S, 90 * 86_400)}s`,
            },
          };
        },
      },
      path: '/pipelines/:id',
      read: {
        summary: "Where a pipeline stands: stage, each child's workflow id and outcome, failure reason, approval",
        response: PipelineRead,
      },
      cancel: { summary: 'Cancel a pipeline: the running child workflow is cancelled with it' },
      approvals: {
        summary: 'Approve or deny the rollout of a pipeline waiting at its approval gate',
        body: Approval,
        response: PipelineStatusSchema,
      },
    }),
  );
};
