export default async function globalTeardown(): Promise<void> {
  await Promise.allSettled([globalThis.__llmhubStack?.stop(), globalThis.__llmhubKube?.stop()]);
}
