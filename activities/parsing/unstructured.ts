import { UnstructuredClient } from 'unstructured-client';
import { Strategy } from 'unstructured-client/sdk/models/shared';
import { UnparseableDocumentError, type Block } from './parsers';

interface Element {
  type?: string;
  text?: string;
  metadata?: { page_number?: number };
}

/**
 * Parsing through an Unstructured partition endpoint (the hosted API or a self-run unstructured-api),
 * used when UNSTRUCTURED_API_URL is configured and an ingestion asks for `parser: "unstructured"`.
 * Title elements become the heading of the elements that follow them.
 */
export function createUnstructuredParser(serverURL: string, apiKey?: string) {
  const client = new UnstructuredClient({ serverURL, ...(apiKey ? { security: { apiKeyAuth: apiKey } } : {}) });
  return async function parseWithUnstructured(name: string, bytes: Uint8Array): Promise<Block[]> {
    const res = await client.general.partition({
      partitionParameters: { files: { content: bytes, fileName: name }, strategy: Strategy.Fast },
    });
    if (typeof res === 'string')
      throw new UnparseableDocumentError(`Unstructured returned text instead of elements for ${name}`);
    let heading: string | null = null;
    return (res as Element[]).flatMap((e) => {
      const text = e.text?.trim();
      if (!text) return [];
      if (e.type === 'Title') heading = text;
      return [{ text, page: e.metadata?.page_number ?? null, heading }];
    });
  };
}
