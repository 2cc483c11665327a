import { afterAll, describe, expect, it } from '@jest/globals';
import { documentedAnswerErrors, removeSdkPackage, runSdkExample, SDK_EXAMPLE_ANSWERS } from '../support/sdk-example';

afterAll(removeSdkPackage);

describe("the README's SDK example against the mock", () => {
  it('runs as printed, the deploy reaching promoted, every answer in its documented shape', async () => {
    const out = await runSdkExample({ LLMHUB_MOCK: '1' });
    for (const [name, method, template, status] of SDK_EXAMPLE_ANSWERS) {
      expect({ name, errors: await documentedAnswerErrors(method, template, status, out[name]) }).toEqual({
        name,
        errors: null,
      });
    }
    expect(out.version).toMatchObject({ state: 'ready', version: '1' });
    expect(out.deployment).toMatchObject({ phase: 'promoted', workflowStatus: 'COMPLETED' });
    expect((out.deploy as { workflowId: string }).workflowId).toMatch(/^rollout\/demo\/.+/);
  });
});
