// The documentation's runnable examples: fenced code blocks whose info
// string is `sh runnable`, in README.md and then docs/*.md (by name), are
// joined, in order, into one bash script that stops at the first failing
// command. tests/system/docs_test.ts runs it as an operator would, so the
// commands the documents give cannot drift from what works.

import { ROOT } from "./artefact.ts";

export interface Block {
  /** "README.md:42", where the block's first command is */
  readonly where: string;
  readonly code: string;
}

/** The runnable blocks of one Markdown text */
export function runnableBlocks(markdown: string, file: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*sh\s+runnable\s*$/.exec(lines[i]!);
    if (open === null) continue;
    const fence = open[2]!;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && lines[j]!.trim() !== fence; j++) body.push(lines[j]!);
    if (j === lines.length) throw new Error(`${file}:${i + 1}: runnable block never closed`);
    blocks.push({ where: `${file}:${i + 2}`, code: body.join("\n") });
    i = j;
  }
  return blocks;
}

/** The documents, in the order they are run: README.md, then docs/ by name */
export function documents(root = ROOT): string[] {
  const docs = [...Deno.readDirSync(`${root}docs`)]
    .filter((e) => e.isFile && e.name.endsWith(".md"))
    .map((e) => `docs/${e.name}`)
    .sort();
  return ["README.md", ...docs];
}

/**
 * One bash script running every block in order. Before each block it says
 * where the block is (on stderr, "### README.md:42"), so a failure names it.
 */
export function script(blocks: readonly Block[]): string {
  const parts = ["set -euo pipefail"];
  for (const b of blocks) parts.push(`echo '### ${b.where}' >&2`, b.code);
  parts.push("echo '### all runnable blocks passed' >&2");
  return parts.join("\n") + "\n";
}
