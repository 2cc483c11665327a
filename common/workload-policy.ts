/**
 * What a tenant may put into the pods the platform runs for it. Checked by the API (400 naming the field) and again
 * where the manifests are rendered, so a direct activity call cannot bypass it.
 */

// Variables that make a loader or a runtime run other code, and the ones the platform sets itself.
const FORBIDDEN_ENV = new Set([
  'PATH',
  'NODE_OPTIONS',
  'NODE_PATH',
  'PYTHONPATH',
  'PYTHONHOME',
  'PYTHONSTARTUP',
  'PYTHONUSERBASE',
  'PYTHONINSPECT',
  'PERL5OPT',
  'PERL5LIB',
  'PERLLIB',
  'RUBYOPT',
  'RUBYLIB',
  'JAVA_TOOL_OPTIONS',
  '_JAVA_OPTIONS',
  'JDK_JAVA_OPTIONS',
  'CLASSPATH',
  'BASH_ENV',
  'SHELLOPTS',
  'PROMPT_COMMAND',
  'PS4',
  'IFS',
  'GCONV_PATH',
  'GLIBC_TUNABLES',
  'LOCPATH',
  'HOSTALIASES',
  'RES_OPTIONS',
  'LOCALDOMAIN',
]);
// LD_/DYLD_: the dynamic loader; NVIDIA_: the container runtime's device selection (it would bypass the GPU
// allocation); AWS_: object-store credentials come from the platform; LLMHUB_: the platform's own contract;
// KUBERNETES_: service discovery the kubelet sets.
const FORBIDDEN_ENV_PREFIXES = ['LD_', 'DYLD_', 'NVIDIA_', 'AWS_', 'LLMHUB_', 'KUBERNETES_'];

/** A pattern that matches `text` in any letter case, for JSON Schema patterns, which have no flags. */
export const anyCase = (text: string): string =>
  text.replace(/[A-Za-z]/g, (c) => `[${c.toUpperCase()}${c.toLowerCase()}]`);

/** The names forbiddenEnvName refuses, as a JSON Schema pattern (the API's request schemas say it). */
export const FORBIDDEN_ENV_PATTERN = `^(?:(?:${[...FORBIDDEN_ENV].map(anyCase).join('|')})$|${FORBIDDEN_ENV_PREFIXES.map(anyCase).join('|')})`;

/** Why a tenant may not set this environment variable, or undefined when it may. */
export function forbiddenEnvName(name: string): string | undefined {
  const upper = name.toUpperCase();
  if (FORBIDDEN_ENV.has(upper)) return `${name} changes how the runtime loads code`;
  const prefix = FORBIDDEN_ENV_PREFIXES.find((p) => upper.startsWith(p));
  return prefix ? `variables starting with ${prefix} are the platform's or the loader's` : undefined;
}

const QUALIFIED_NAME_PATTERN = '[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?';
const QUALIFIED_NAME = new RegExp(`^${QUALIFIED_NAME_PATTERN}$`);
/** LLMHUB_POD_METADATA_KEYS: comma-separated keys, or prefixes ending in `/`, an operator lets tenants set. */
export const podMetadataKeysOf = (raw: string): string[] =>
  raw
    .split(',')
    .map((k) => k.trim())
    .filter(Boolean);

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The keys forbiddenPodMetadataKey lets through with these `allowed` keys, as a JSON Schema pattern. */
export function podMetadataKeyPattern(allowed: readonly string[]): string {
  const prefixes = allowed.filter((a) => a.endsWith('/')).map(escapeRegExp);
  const exact = allowed.filter((a) => !a.endsWith('/') && forbiddenPodMetadataKey(a, allowed) === undefined);
  const named = prefixes.length ? `(?:${prefixes.join('|')})?${QUALIFIED_NAME_PATTERN}` : QUALIFIED_NAME_PATTERN;
  return `^(?:${[named, ...exact.map(escapeRegExp)].join('|')})$`;
}

/**
 * Why a tenant may not put this label or annotation key on its pods, or undefined when it may. Unprefixed keys are
 * the tenant's; a prefixed one only when the operator allows it (`allowed`: exact keys, or prefixes ending in `/`),
 * because prefixed keys (`*.kubernetes.io/`, service meshes, sidecar injectors, AppArmor) change how a pod is run.
 */
export function forbiddenPodMetadataKey(key: string, allowed: readonly string[]): string | undefined {
  const slash = key.indexOf('/');
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (!QUALIFIED_NAME.test(name)) return `'${key}' is not a valid Kubernetes label or annotation key`;
  if (slash < 0 || allowed.some((a) => (a.endsWith('/') ? key.startsWith(a) : key === a))) return undefined;
  return `'${key}': a prefixed key is allowed on tenant pods only when an operator lists it (LLMHUB_POD_METADATA_KEYS)`;
}
