import { describe, expect, it } from '@jest/globals';
import { createClient, LLMHubError, MockPlatform, ok } from '../../sdk/src';
import { documentedAnswerErrors } from '../support/sdk-example';

/** The call's answer, checked against the route's documented schema for its status. */
async function documented<T>(method: string, template: string, call: Promise<{ data?: T; response: Response }>) {
  const { data, response } = await call;
  expect({ template, errors: await documentedAnswerErrors(method, template, response.status, data) }).toEqual({
    template,
    errors: null,
  });
  return data as NonNullable<T>;
}

const refusal = async (call: Promise<unknown>): Promise<LLMHubError> => {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LLMHubError);
  return err as LLMHubError;
};

describe('the SDK mock', () => {
  const base = { modelId: 'mlp', version: 'base' };

  it('validates requests with the document: a bad field is 400 naming it, as the API names it', async () => {
    const hub = createClient({ mock: true });
    const missing = await refusal(hub.POST('/v1/models/', { body: { id: 'm' } as never }));
    expect([missing.status, missing.type, missing.field]).toEqual([400, 'invalid_request', 'body.name']);
    const limit = await refusal(hub.GET('/v1/models/', { params: { query: { limit: 0 } } }));
    expect([limit.status, limit.field]).toEqual([400, 'querystring.limit']);
    const cluster = await refusal(
      hub.POST('/v1/deploy', { body: { modelId: 'm', cluster: 'nowhere', resources: { cpu: '1', gpu: 0 } } as never }),
    );
    expect(cluster.field).toBe('body.cluster');
    const unknown = await refusal(hub.GET('/v1/fine-tunes/{id}', { params: { path: { id: 'nope' } } }));
    expect([unknown.status, unknown.type]).toEqual([404, 'not_found']);
    const noKey = await refusal(createClient({ mock: true, apiKey: '' }).GET('/v1/models/', {}));
    expect(noKey.status).toBe(401);
  });

  it('fine-tune, conversion and an approved pipeline reach their ends deterministically, in documented shapes', async () => {
    const mock = new MockPlatform({ tenant: 'acme' });
    const hub = createClient({ mock });
    await ok(hub.POST('/v1/models/', { body: { id: 'mlp', name: 'MLP' } }));
    await ok(
      hub.POST('/v1/models/{modelId}/versions', {
        params: { path: { modelId: 'mlp' } },
        body: { version: 'base', artifactUri: 's3://llmhub-t-acme/mlp/base.safetensors' },
      }),
    );
    const fineTune = {
      baseModel: base,
      datasetUri: 's3://llmhub-t-acme/mlp/train.jsonl',
      method: 'lora' as const,
      cluster: 'kube' as const,
      resources: { gpuCount: 1 },
    };
    const ft = await documented('post', '/v1/fine-tunes', hub.POST('/v1/fine-tunes', { body: fineTune }));
    expect(ft.workflowId).toBe(`fine-tune/acme/${ft.fineTuneId}`);
    const read = () =>
      documented(
        'get',
        '/v1/fine-tunes/{id}',
        hub.GET('/v1/fine-tunes/{id}', { params: { path: { id: ft.fineTuneId } } }),
      );
    expect((await read()).phase).toBe('running');
    const done = await read();
    expect(done.phase).toBe('succeeded');

    const conv = await documented(
      'post',
      '/v1/conversions',
      hub.POST('/v1/conversions', {
        params: { header: { 'idempotency-key': 'conv-1' } },
        body: { modelId: 'mlp', version: done.output.version, cluster: 'kube', targets: ['onnx'] },
      }),
    );
    expect(conv.conversionId).toBe('conv-1');
    const readConv = () =>
      documented(
        'get',
        '/v1/conversions/{id}',
        hub.GET('/v1/conversions/{id}', { params: { path: { id: 'conv-1' } } }),
      );
    await readConv();
    expect((await readConv()).state).toBe('succeeded');

    const pipe = await ok(
      hub.POST('/v1/pipelines', {
        body: {
          fineTune,
          conversion: { cluster: 'kube', targets: ['onnx'] },
          rollout: { cluster: 'local' },
          approvalBeforeRollout: true,
        },
      }),
    );
    const readPipe = () =>
      documented(
        'get',
        '/v1/pipelines/{id}',
        hub.GET('/v1/pipelines/{id}', { params: { path: { id: pipe.pipelineId } } }),
      );
    expect((await readPipe()).stage).toBe('fine_tune');
    expect((await readPipe()).stage).toBe('awaiting_approval');
    const approved = await documented(
      'post',
      '/v1/pipelines/{id}/approvals',
      hub.POST('/v1/pipelines/{id}/approvals', {
        params: { path: { id: pipe.pipelineId } },
        body: { decision: 'approve' },
      }),
    );
    expect(approved.stage).toBe('succeeded');
  });

  it('an idempotency key names one start: the same body answers the same run, another body is 422', async () => {
    const hub = createClient({ mock: true });
    await ok(
      hub.PUT('/v1/agents/{id}', {
        params: { path: { id: 'a' } },
        body: { model: 'demo', systemPrompt: 's', tools: ['files__write_file'] },
      }),
    );
    const start = (input: string) =>
      hub.POST('/v1/agent-runs/', {
        params: { header: { 'idempotency-key': 'run-1' } },
        body: { agentId: 'a', input },
      });
    const first = await ok(start('hello'));
    expect(await ok(start('hello'))).toEqual(first);
    const reused = await refusal(start('other'));
    expect([reused.status, reused.type]).toEqual([422, 'idempotency_key_reused']);

    const run = await documented(
      'get',
      '/v1/agent-runs/{id}',
      hub.GET('/v1/agent-runs/{id}', { params: { path: { id: 'run-1' } } }),
    );
    expect(run.phase).toBe('awaiting_approval');
    const stale = await refusal(
      hub.POST('/v1/agent-runs/{id}/approvals', {
        params: { path: { id: 'run-1' } },
        body: { actionHash: '0'.repeat(64), decision: 'approve' },
      }),
    );
    expect(stale.status).toBe(409);
    const answered = await documented(
      'post',
      '/v1/agent-runs/{id}/approvals',
      hub.POST('/v1/agent-runs/{id}/approvals', {
        params: { path: { id: 'run-1' } },
        body: { actionHash: run.pending!.actionHash, decision: 'approve' },
      }),
    );
    expect(answered.phase).toBe('completed');
  });

  it('knowledge: an upload, an ingestion that completes, search and chat citing the matching document', async () => {
    const hub = createClient({ mock: true });
    for (const [name, text] of [
      ['agents.md', 'every tool that is not read-only waits for a person to approve it'],
      ['rollouts.md', 'a deploy starts a canary and promotes it'],
    ] as const)
      await documented(
        'post',
        '/v1/knowledge/{namespace}/files',
        hub.POST('/v1/knowledge/{namespace}/files', {
          params: { path: { namespace: 'docs' }, query: { name } },
          body: text as never,
          bodySerializer: (b: unknown) => b as string,
          headers: { 'content-type': 'application/octet-stream' },
        }),
      );
    const ing = await ok(
      hub.POST('/v1/knowledge/{namespace}/ingestions', {
        params: { path: { namespace: 'docs' } },
        body: { source: { type: 'uploads' } },
      }),
    );
    const readIng = () =>
      documented(
        'get',
        '/v1/knowledge/{namespace}/ingestions/{id}',
        hub.GET('/v1/knowledge/{namespace}/ingestions/{id}', {
          params: { path: { namespace: 'docs', id: ing.ingestionId } },
        }),
      );
    await readIng();
    expect(await readIng()).toMatchObject({ status: 'COMPLETED', total: 2 });
    const search = await documented(
      'post',
      '/v1/knowledge/{namespace}/search',
      hub.POST('/v1/knowledge/{namespace}/search', {
        params: { path: { namespace: 'docs' } },
        body: { query: 'who approves a tool', topK: 1 },
      }),
    );
    expect(search.hits.map((h) => h.documentId)).toEqual(['agents.md']);
    const chat = await documented(
      'post',
      '/v1/knowledge/{namespace}/chat',
      hub.POST('/v1/knowledge/{namespace}/chat', {
        params: { path: { namespace: 'docs' } },
        body: { model: 'demo', question: 'how does a canary deploy promote' },
      }),
    );
    // Not streamed: the JSON answer of the route's two (JSON, or server-sent events).
    expect((chat as { citations: { documentId: string }[] }).citations[0]!.documentId).toBe('rollouts.md');
  });

  it('answers an operation it keeps no state for with its documented shape', async () => {
    const hub = createClient({ mock: true });
    await documented('get', '/v1/quotas/gpu', hub.GET('/v1/quotas/gpu', {}));
    await documented('get', '/v1/api-keys', hub.GET('/v1/api-keys', {}));
  });
});
