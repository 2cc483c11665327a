// lint-as: activities/example/index.ts
import { startProcess } from '../../deploy/dev/process';

export const start = startProcess;
