/**
 * Steady chat traffic through a gateway, from its own process (so the rollout's analysis judges real
 * gateway metrics of traffic it did not generate in-process). Runs until SIGTERM, then prints the status
 * code of every answer as JSON on stdout.
 *
 *   node --import tsx test/support/load-generator.ts <baseURL .../v1> <apiKey> <model> [concurrency]
 */
const [baseURL, apiKey, model, concurrency = '3'] = process.argv.slice(2);
let running = true;
const statuses: number[] = [];

async function loop(): Promise<void> {
  while (running) {
    const res = await fetch(`${baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello' }] }),
    }).catch(() => undefined);
    statuses.push(res?.status ?? 0);
    await res?.arrayBuffer();
  }
}

const done = Promise.all(Array.from({ length: Number(concurrency) }, loop));
process.once('SIGTERM', () => {
  running = false;
  void done.then(() => {
    // Exits once the write is flushed to the pipe: the statuses of a long run are larger than the pipe's buffer.
    process.stdout.write(JSON.stringify({ statuses }), () => process.exit(0));
  });
});
process.stdout.write('ready\n');
