import { runPlatformWorker } from '../../workers/platform-worker';
import { processRuntimesOf } from './local-runtime';

/** The dev stack's worker: the platform worker, plus the clusters LLMHUB_CLUSTERS runs as local processes. */
runPlatformWorker({ modelRuntimeOf: processRuntimesOf(process.env.LLMHUB_CLUSTERS) });
