// Output. Nothing goes to stdout except --help and --version; everything else
// is one line on stderr. Writes are synchronous so that a line is out before
// the process exits.

import { oneLine } from "./path.ts";

const encoder = new TextEncoder();

// At least one write, even of no bytes: see printLine()
function writeBytes(file: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  do {
    const n = file.writeSync(bytes);
    // Nothing taken: stop rather than spin (a quiet line ends here too)
    if (n <= 0) break;
    bytes = bytes.subarray(n);
  } while (bytes.length > 0);
}

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  writeBytes(file, encoder.encode(text));
}

/**
 * One line on stderr, made one line whatever it holds (oneLine() escapes
 * any control character a caller forgot to show()); a failure to write it
 * is not worth dying for. `quiet`: every step is taken, the write too, but
 * of no bytes. That is how priming runs the --verbose line's code without
 * printing it (src/startup.ts): the same calls on the same types, so that
 * V8 compiles them as passt's commands will use them.
 */
export function printLine(line: string, quiet = false): void {
  try {
    const bytes = encoder.encode(`${oneLine(line)}\n`);
    writeBytes(Deno.stderr, bytes.subarray(0, quiet ? 0 : bytes.length));
  } catch {
    // stderr closed: nothing better to do
  }
}

/** One line on stderr (printLine()) */
export function printError(line: string): void {
  printLine(line);
}

/** Text of our own on stderr, as it is (the usage lines) */
export function printErrorText(text: string): void {
  try {
    writeAll(Deno.stderr, text.endsWith("\n") ? text : text + "\n");
  } catch {
    // stderr closed: nothing better to do
  }
}

/** "warning: ..." on stderr */
export function warn(text: string): void {
  printError(`warning: ${text}`);
}

/** Text on stdout, for --help and --version only */
export function printOut(text: string): void {
  writeAll(Deno.stdout, text.endsWith("\n") ? text : text + "\n");
}
