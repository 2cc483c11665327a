import { readdirSync, readFileSync } from 'node:fs';

// Linux reports utime/stime in clock ticks of USER_HZ, 100 on every mainstream architecture.
const TICKS_PER_S = 100;

interface Stat {
  pid: number;
  ppid: number;
  comm: string;
  ticks: number;
}

function readStat(file: string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // the process or thread ended between the listing and the read
  }
  // comm may hold spaces and parentheses: the fields after it start at the last ')'.
  const close = text.lastIndexOf(')');
  const rest = text.slice(close + 2).split(' ');
  return {
    pid: Number(text.slice(0, text.indexOf(' '))),
    comm: text.slice(text.indexOf('(') + 1, close),
    ppid: Number(rest[1]),
    ticks: Number(rest[11]) + Number(rest[12]),
  };
}

const numeric = (dir: string) => readdirSync(dir).filter((n) => /^\d+$/.test(n));

/**
 * CPU seconds used so far by this process's event loop, its other threads (by name) and its descendant processes
 * (by command name, summed), read from /proc; empty where there is no /proc.
 */
export function cpuSnapshot(): Map<string, number> {
  const out = new Map<string, number>();
  const add = (k: string, ticks: number) => out.set(k, (out.get(k) ?? 0) + ticks / TICKS_PER_S);
  let all: Stat[];
  try {
    all = numeric('/proc').flatMap((p) => readStat(`/proc/${p}/stat`) ?? []);
  } catch {
    return out;
  }
  for (const t of numeric(`/proc/${process.pid}/task`)) {
    const s = readStat(`/proc/${process.pid}/task/${t}/stat`);
    if (s) add(s.pid === process.pid ? 'event loop' : `thread ${s.comm}`, s.ticks);
  }
  const children = new Map<number, Stat[]>();
  for (const s of all) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
  const walk = (pid: number) => {
    for (const c of children.get(pid) ?? []) {
      add(c.comm, c.ticks);
      walk(c.pid);
    }
  };
  walk(process.pid);
  return out;
}

/** CPU seconds per name used between two snapshots, largest first. */
export function cpuDelta(before: Map<string, number>, after: Map<string, number>): [string, number][] {
  return [...after]
    .map(([k, v]): [string, number] => [k, v - (before.get(k) ?? 0)])
    .filter(([, v]) => v > 0)
    .sort((a, b) => b[1] - a[1]);
}
