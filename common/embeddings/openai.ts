import { request } from 'undici';
import { l2Normalize, type Embedder } from './index';

/** Any OpenAI-compatible `/v1/embeddings` endpoint (vLLM, TEI, the LLMHub gateway itself). */
export class OpenAiEmbedder implements Embedder {
  constructor(
    readonly id: string,
    readonly dimensions: number,
    private readonly baseUrl: string,
    private readonly model: string,
    private readonly apiKey?: string,
  ) {}

  static async connect(baseUrl: string, model: string, apiKey?: string): Promise<OpenAiEmbedder> {
    const probe = new OpenAiEmbedder(`openai:${model}`, 0, baseUrl, model, apiKey);
    const [v] = await probe.embed(['dimension probe']);
    return new OpenAiEmbedder(probe.id, v!.length, baseUrl, model, apiKey);
  }

  async embed(texts: string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    const res = await request(`${this.baseUrl.replace(/\/$/, '')}/v1/embeddings`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
      },
      body: JSON.stringify({ model: this.model, input: texts }),
    });
    const body = (await res.body.json()) as {
      data?: { index: number; embedding: number[] }[];
      error?: { message?: string };
    };
    if (res.statusCode >= 400 || !body.data)
      throw new Error(`embeddings endpoint answered ${res.statusCode}: ${body.error?.message ?? 'no data'}`);
    return body.data.sort((a, b) => a.index - b.index).map((d) => l2Normalize(Float32Array.from(d.embedding)));
  }
}
