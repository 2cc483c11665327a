import { runPlatformWorker } from './platform-worker';

/** Entry point of the platform task queue's worker process (node dist/workers/platform.js in production). */
runPlatformWorker();
