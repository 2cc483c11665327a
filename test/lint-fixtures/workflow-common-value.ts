// lint-as: workflows/example.ts
import { PhaseKey } from '../common/search-attributes';

export const phaseKey = PhaseKey;
