import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from '@jest/globals';
import { getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import { sandboxedLaunch } from '../../common/mcp-sandbox';

describe('MCP stdio sandbox', () => {
  it('runs a command with only the declared environment, in its own PID namespace it cannot leave by unmounting /proc', async () => {
    const secret = 'llmhub-sandbox-marker-secret';
    process.env.LLMHUB_SANDBOX_TEST_SECRET = secret;
    const launch = await sandboxedLaunch(
      {
        command: '/bin/sh',
        args: [
          '-c',
          'umount /proc 2>/dev/null; umount -l /proc 2>/dev/null; echo "umount:$?"; echo "ppid:$PPID"; id -u; pwd; for f in /proc/*/environ; do tr "\\0" "\\n" < "$f"; done 2>/dev/null; ls "$(dirname "$PWD")" >/dev/null 2>&1; echo "list-parent:$?"',
        ],
        env: { DECLARED: 'yes' },
        network: false,
      },
      'unit',
    );
    try {
      // Spawned as the MCP SDK spawns: its default variables (PATH, HOME, ...) added to the entry's.
      const out = spawnSync(launch.command, launch.args, {
        cwd: launch.cwd,
        env: { ...getDefaultEnvironment(), DECLARED: 'yes' },
        encoding: 'utf8',
      });
      expect(out.status).toBe(0);
      const lines = out.stdout.trim().split('\n');
      expect(lines[0]).not.toBe('umount:0');
      expect(lines[1]).toBe('ppid:0');
      if (process.geteuid?.() === 0) expect(lines[2]).toBe('65534');
      expect(lines[3]).toBe(launch.cwd);
      expect(out.stdout).not.toContain(secret);
      // The shell adds PWD, SHLVL and _ to its own environment; of the spawn's, only the declared variable is left.
      expect([...new Set(lines.slice(4, -1).filter((l) => !/^(PWD|SHLVL|_)=/.test(l)))]).toEqual(['DECLARED=yes']);
      // Its working directory's parent holds every other server's: as nobody it cannot list it.
      if (process.geteuid?.() === 0) expect(lines.at(-1)).toMatch(/^list-parent:[1-9]/);
    } finally {
      delete process.env.LLMHUB_SANDBOX_TEST_SECRET;
      await launch.remove();
    }
    expect(existsSync(launch.cwd)).toBe(false);
  });
});
