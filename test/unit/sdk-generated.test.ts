import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { openApiDocument } from '../../api/cli/openapi-document';
import { generatedFiles } from '../../sdk/scripts/types';

const SDK = path.join(__dirname, '..', '..', 'sdk');
const REGENERATE = 'the SDK was not regenerated: run `npm run sdk:generate` and commit sdk/';

describe('the SDK is generated from the live document', () => {
  it('sdk/openapi.json is the api role’s /openapi.json as it is now', async () => {
    const live = await openApiDocument();
    const snapshot = JSON.parse(readFileSync(path.join(SDK, 'openapi.json'), 'utf8')) as unknown;
    // toEqual prints the differing paths; the message says what to do about them.
    expect({ snapshot, hint: REGENERATE }).toEqual({ snapshot: live, hint: REGENERATE });
  });

  it('sdk/src/generated/ is what the generator writes from the snapshot', async () => {
    const files = await generatedFiles(readFileSync(path.join(SDK, 'openapi.json'), 'utf8'));
    expect(Object.keys(files).length).toBeGreaterThan(0);
    for (const [file, text] of Object.entries(files)) {
      expect({ file, same: readFileSync(path.join(SDK, file), 'utf8') === text }).toEqual({ file, same: true });
    }
  });
});
