import { runPlatformWorker } from '../workers/platform-worker';

/** The worker role (`node dist/roles/worker.js`): polls the task queue TEMPORAL_TASK_QUEUE until SIGTERM. */
runPlatformWorker();
