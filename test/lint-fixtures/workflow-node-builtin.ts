// lint-as: workflows/example.ts
import { readFileSync } from 'node:fs';

export const hostname = (): string => readFileSync('/etc/hostname', 'utf8');
