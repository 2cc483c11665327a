import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';

const TICKS_PER_S = 100;

interface Stat {
  pid: number;
  ppid: number;
  name: string;
  /** user + system CPU seconds, its own (not its reaped children's). */
  cpu: number;
}

function statOf(pid: number): Stat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The name is in parentheses and may hold spaces; the fields after it are fixed.
    const close = text.lastIndexOf(')');
    const name = text.slice(text.indexOf('(') + 1, close);
    const f = text.slice(close + 2).split(' ');
    return { pid, ppid: Number(f[1]), name, cpu: (Number(f[11]) + Number(f[12])) / TICKS_PER_S };
  } catch {
    return undefined; // gone between the listing and the read
  }
}

/**
 * CPU seconds used so far by this process and its descendants (the stack's servers), by process name or by the label
 * given for its pid; this process is `bench`. Linux only (/proc); elsewhere just `bench`.
 */
export function cpuByProcess(labels: ReadonlyMap<number, string> = new Map()): Map<string, number> {
  const out = new Map<string, number>();
  let stats: Stat[];
  try {
    stats = readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map((d) => statOf(Number(d)))
      .filter((s): s is Stat => s !== undefined);
  } catch {
    const u = process.cpuUsage();
    return new Map([['bench', (u.user + u.system) / 1e6]]);
  }
  const children = new Map<number, Stat[]>();
  for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
  const walk = (pid: number, name: string | undefined) => {
    for (const c of children.get(pid) ?? []) {
      // A server's own children (postgres backends) count as the server.
      const group = name ?? labels.get(c.pid) ?? c.name;
      out.set(group, (out.get(group) ?? 0) + c.cpu);
      walk(c.pid, group);
    }
  };
  out.set('bench', statOf(process.pid)?.cpu ?? 0);
  walk(process.pid, undefined);
  return out;
}

/** The CPU seconds each process used between two `cpuByProcess` readings, largest first. */
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
