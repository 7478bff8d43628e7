// Every message the program can print is explained in the README's
// Troubleshooting section and in the manual page's DIAGNOSTICS. The messages
// are read from the sources (error constructors, warnings, printed lines,
// the launcher's `fail`), so a new message without its explanation fails
// here. Reads files only.

import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));

/** The literal that starts at `text[at]` ("..." or `...`), without its quotes */
function literalAt(text: string, at: number): string | null {
  const quote = text[at];
  if (quote !== '"' && quote !== "`") return null;
  let depth = 0;
  for (let i = at + 1; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\\") {
      i++;
    } else if (quote === "`" && ch === "$" && text[i + 1] === "{") {
      depth++;
      i++;
    } else if (depth > 0 && ch === "}") {
      depth--;
    } else if (depth === 0 && ch === quote) {
      return text.slice(at + 1, i);
    }
  }
  return null;
}

/** Where messages are made, each followed (after optional whitespace) by the message literal */
const MAKERS = [
  /new SyscallError\(\s*"[^"]*",\s*[^,]+,\s*/g,
  /new (?:RuntimeFailure|UsageError|ProtocolError|TimeoutError)\(\s*/g,
  /super\(\s*/g,
  /printError\(\s*/g,
  /\bwarn\(\s*/g,
  /return\s+(?=["`](?:[A-Z]|skipping ))/g,
  /\bfail "?/g,
  /BAD_ANCILLARY = /g,
];

/**
 * What a reader searches for: the first fixed piece of a message (up to a
 * placeholder, a colon, a comma, a quote or a parenthesis), at most its first
 * five words
 */
function key(message: string): string | null {
  const first = message
    .replace(/\$\{(?:[^{}]|\{[^}]*\})*\}|\$\w+/g, ":") // a placeholder splits like a colon
    .split(/[():,";]/)
    .map((p) => p.trim())
    .find((p) => p.length >= 6);
  return first === undefined ? null : first.split(/\s+/).slice(0, 5).join(" ");
}

/** Literals that the scanner takes for messages but that are never printed alone */
const NOT_MESSAGES = new Map([
  ["TCP_REPAIR can be set", "describeRefusal() of a success, never printed"],
  ["OFF_NO_WP", "a command's name, part of other messages"],
  ["Unknown error", "the text of an errno number without a name, part of other messages"],
]);

function messages(): Map<string, string> {
  const files = ["main.ts", "contrib/passt-repair.sh"];
  for (const dir of ["src/", "src/ffi/"]) {
    for (const e of Deno.readDirSync(new URL(dir, root))) {
      if (e.isFile && e.name.endsWith(".ts")) files.push(`${dir}${e.name}`);
    }
  }
  const found = new Map<string, string>();
  for (const file of files) {
    const text = read(file);
    for (const maker of MAKERS) {
      for (const m of text.matchAll(maker)) {
        const literal = literalAt(text, m.index! + m[0].length) ??
          (file.endsWith(".sh") ? text.slice(m.index! + m[0].length).split("\n")[0]! : null);
        if (literal === null) continue;
        const k = key(literal);
        if (k !== null && !NOT_MESSAGES.has(k)) found.set(k, `${file}: ${literal.slice(0, 70)}`);
      }
    }
  }
  return found;
}

/** Roff source as plain words: requests, quotes and font changes gone, one space between words */
function roffPlain(source: string): string {
  return source.split("\n")
    .filter((l) => !l.startsWith('.\\"'))
    .map((l) => l.replace(/^\.[A-Za-z]+\s*/, ""))
    .join(" ")
    .replace(/\\f[BIRP]/g, "")
    .replace(/\\-/g, "-")
    .replace(/\\e/g, "\\")
    .replace(/"/g, "")
    .replace(/\s+/g, " ");
}

const plain = (s: string) => s.replace(/`/g, "").replace(/\s+/g, " ");

const troubleshooting = plain(
  /^## Troubleshooting\n([\s\S]*?)^## /m.exec(read("README.md"))?.[1] ?? "",
);
const diagnostics = roffPlain(
  /^\.SH DIAGNOSTICS\n([\s\S]*?)^\.SH /m.exec(read("passt-repair.1"))?.[1] ?? "",
);

Deno.test("the message scanner finds the program's messages", () => {
  const keys = [...messages().keys()];
  // Known messages from every kind of maker: a scanner that finds none cannot fail
  for (
    const expected of [
      "Failed to connect to",
      "No/bad ancillary data from peer",
      "is not a socket",
      "Timed out after",
      "Setting TCP_REPAIR on a test socket failed",
      "skipping",
      "passt-repair needs Deno's --allow-ffi permission",
      "not found on PATH",
    ]
  ) {
    assert.ok(
      keys.some((k) => k.includes(expected) || expected.includes(k)),
      `${expected} in ${keys.join(" | ")}`,
    );
  }
  assert.ok(troubleshooting.length > 1000 && diagnostics.length > 1000, "both sections found");
});

Deno.test("every message is explained in the README's Troubleshooting and the manual's DIAGNOSTICS", () => {
  const missing: string[] = [];
  for (const [k, where] of messages()) {
    if (!troubleshooting.includes(k)) missing.push(`README: "${k}" (${where})`);
    if (!diagnostics.includes(k)) missing.push(`passt-repair.1: "${k}" (${where})`);
  }
  assert.deepEqual(missing, []);
});
