// The manual page passt-repair.1: it renders without a warning, and it
// documents exactly the options that --help lists.
//
// groff and man-db are installed by .ci/run when missing.

import assert from "node:assert/strict";
import { helpText } from "../../src/cli.ts";
import { VERSION } from "../../src/version.ts";
import { ROOT } from "../support/artefact.ts";

const PAGE = `${ROOT}passt-repair.1`;
const SOURCE = Deno.readTextFileSync(PAGE);

/** Runs a formatter; a missing tool is a failure that says what to install */
async function render(
  argv: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      // Fixed width and locale, no pager: the same text on every machine
      env: { MANWIDTH: "80", MANPAGER: "cat", PAGER: "cat", LC_ALL: "C.UTF-8" },
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    throw new Error(
      `${argv[0]} is needed to check the manual page (apt-get install groff man-db): ${e}`,
    );
  }
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** The page as man shows it, as plain text with ASCII hyphens */
async function renderedText(): Promise<string> {
  // Through stdin, so that man-db never needs to open a path itself
  const out = await render(["man", "--warnings", "-l", "-"], SOURCE);
  assert.equal(out.code, 0, out.stderr);
  // man strips bold and underline when its output is not a terminal
  return out.stdout.replace(/[\u2010\u2011\u2212]/g, "-"); // typographic hyphens and minus
}

/** One roff request line as text: `.BR \-h ", " \-\-help` -> "-h, --help" */
function roffText(line: string): string {
  const [request, ...rest] = line.match(/"[^"]*"|\S+/g) ?? [];
  const args = rest.map((a) => a.replace(/^"(.*)"$/, "$1"));
  // Font-alternating requests (.BR, .BI, .IR, ...) join their arguments
  // without spaces; .B and .I join them with spaces
  const joined = /^\.[BIR]{2}$/.test(request ?? "") ? args.join("") : args.join(" ");
  return joined.replace(/\\f[BIRP]/g, "").replace(/\\-/g, "-").replace(/\\&/g, "");
}

/** The tags of the .TP paragraphs of the page's "Options" subsection */
function manOptionTags(): string[] {
  const section = /^\.SS Options\n([\s\S]*?)^\.S[SH] /m.exec(SOURCE)?.[1];
  assert.ok(section, "an Options subsection");
  const lines = section.split("\n");
  return lines.flatMap((l, i) => (l === ".TP" ? [roffText(lines[i + 1] ?? "")] : []));
}

/** The option column of --help: "-h, --help", "--timeout SECONDS", ... */
function helpOptionTags(): string[] {
  const options = helpText().split("\nOptions:\n")[1]?.split("\n\n")[0] ?? "";
  return options.split("\n").flatMap((l) => {
    const m = /^\s+(-\S*(?: \S+)*?)(?:\s{2,}|$)/.exec(l);
    return m ? [m[1]!] : [];
  });
}

Deno.test("passt-repair.1 renders with groff -man -Tutf8 -ww without a warning", async () => {
  const out = await render(["groff", "-man", "-Tutf8", "-ww", "-z", PAGE]);
  assert.deepEqual([out.code, out.stderr], [0, ""]);
});

Deno.test("passt-repair.1 renders with man -l without a warning", async () => {
  const out = await render(["man", "--warnings", "-l", "-"], SOURCE);
  assert.deepEqual([out.code, out.stderr], [0, ""]);
  assert.match(out.stdout, /^PASST-REPAIR\(1\)/);
});

Deno.test("the manual page documents exactly the options --help lists", async () => {
  const help = helpOptionTags();
  // The parsers above must have found something to compare
  assert.ok(help.includes("--timeout SECONDS") && help.includes("-h, --help"), help.join(" | "));
  assert.deepEqual(manOptionTags().sort(), help.sort());
  // And each one is in the SYNOPSIS a reader sees
  const text = await renderedText();
  const synopsis = /^SYNOPSIS\n([\s\S]*?)^\S/m.exec(text)?.[1] ?? "";
  for (const option of help.flatMap((t) => t.split(", ")).map((t) => t.split(" ")[0]!)) {
    assert.ok(synopsis.includes(option), `${option} in SYNOPSIS:\n${synopsis}`);
  }
});

Deno.test("the manual page has the sections operators look for, and the program's version", async () => {
  const text = await renderedText();
  const headings = [...text.matchAll(/^([A-Z][A-Z ]+)$/gm)].map((m) => m[1]);
  for (
    const section of [
      "NAME",
      "SYNOPSIS",
      "DESCRIPTION",
      "PROTOCOL",
      "EXIT STATUS",
      "EXAMPLES",
      "DIAGNOSTICS",
      "FILES",
      "ENVIRONMENT",
      "SECURITY",
      "NOTES",
      "SEE ALSO",
    ]
  ) {
    assert.ok(headings.includes(section), `${section} in ${headings.join(", ")}`);
  }
  // Each exit status is explained
  const exit = /^EXIT STATUS\n([\s\S]*?)^\S/m.exec(text)?.[1] ?? "";
  for (const status of ["0", "1", "2"]) {
    assert.match(exit, new RegExp(`^ {7}${status}\\s`, "m"), `status ${status}`);
  }
  assert.match(
    SOURCE,
    new RegExp(
      `^\\.TH PASST-REPAIR 1 "[^"]*" "passt-repair ${VERSION.replaceAll(".", "\\.")}"`,
      "m",
    ),
  );
});
