// lint-as: workflows/example.ts
import { randomUUID } from 'crypto';

export const newId = (): string => randomUUID();
