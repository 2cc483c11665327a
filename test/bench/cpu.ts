import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';

// Linux reports utime/stime in clock ticks of USER_HZ, 100 on every mainstream architecture.
const TICKS_PER_S = 100;

interface Stat {
  pid: number;
  ppid: number;
  name: string;
  /** user + system CPU seconds, its own (not its reaped children's). */
  cpu: number;
}

function readStat(file: string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // the process or thread ended between the listing and the read
  }
  // The name may hold spaces and parentheses: the fields after it start at the last ')'.
  const close = text.lastIndexOf(')');
  const rest = text.slice(close + 2).split(' ');
  return {
    pid: Number(text.slice(0, text.indexOf(' '))),
    name: text.slice(text.indexOf('(') + 1, close),
    ppid: Number(rest[1]),
    cpu: (Number(rest[11]) + Number(rest[12])) / TICKS_PER_S,
  };
}

const numeric = (dir: string) => readdirSync(dir).filter((n) => /^\d+$/.test(n));

/**
 * CPU seconds used so far by this process and its descendants (the stack's servers; a server's own children, such as
 * postgres backends, count as the server), by process name or by the label given for its pid. This process is `bench`,
 * or with `threads` its event loop and each other thread by name. Linux only (/proc); elsewhere just `bench`.
 */
export function cpuByProcess(
  opts: { labels?: ReadonlyMap<number, string>; threads?: boolean } = {},
): Map<string, number> {
  const out = new Map<string, number>();
  const add = (k: string, s: number) => out.set(k, (out.get(k) ?? 0) + s);
  let all: Stat[];
  try {
    all = numeric('/proc').flatMap((p) => readStat(`/proc/${p}/stat`) ?? []);
  } catch {
    const u = process.cpuUsage();
    return new Map([['bench', (u.user + u.system) / 1e6]]);
  }
  if (opts.threads)
    for (const t of numeric(`/proc/${process.pid}/task`)) {
      const s = readStat(`/proc/${process.pid}/task/${t}/stat`);
      if (s) add(s.pid === process.pid ? 'event loop' : `thread ${s.name}`, s.cpu);
    }
  else add('bench', readStat(`/proc/${process.pid}/stat`)?.cpu ?? 0);
  const children = new Map<number, Stat[]>();
  for (const s of all) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
  const walk = (pid: number, group: string | undefined) => {
    for (const c of children.get(pid) ?? []) {
      const name = group ?? opts.labels?.get(c.pid) ?? c.name;
      add(name, c.cpu);
      walk(c.pid, name);
    }
  };
  walk(process.pid, undefined);
  return out;
}

/** The CPU seconds each name used between two `cpuByProcess` readings, largest first. */
export function cpuBetween(before: Map<string, number>, after: Map<string, number>): [string, number][] {
  return [...after.entries()]
    .map(([name, s]): [string, number] => [name, s - (before.get(name) ?? 0)])
    .filter(([, s]) => s > 0)
    .sort(([, a], [, b]) => b - a);
}

/** Runs `fn` under the V8 CPU profiler of this process and writes the profile (Chrome DevTools' .cpuprofile) to `file`. */
export async function profiled<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    await writeFile(file, JSON.stringify(profile));
    session.disconnect();
  }
}
