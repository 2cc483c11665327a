import { readFile } from 'node:fs/promises';
import path from 'node:path';

const README = path.join(__dirname, '..', '..', 'README.md');

/** Every code block that follows a `<!-- <marker> -->` line in README.md, in order, exactly as printed. */
export async function readmeBlocks(marker: string): Promise<string[]> {
  const readme = await readFile(README, 'utf8');
  const blocks = [...readme.matchAll(new RegExp(`<!-- ${marker} -->\\n\`\`\`\\w*\\n([\\s\\S]*?)\`\`\``, 'g'))];
  if (!blocks.length) throw new Error(`README.md has no <!-- ${marker} --> block`);
  return blocks.map((b) => b[1]!);
}
