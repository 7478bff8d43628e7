// Output. Nothing goes to stdout except --help and --version; everything else
// is one line on stderr. Writes are synchronous so that a line is out before
// the process exits.

import { oneLine } from "./path.ts";

const encoder = new TextEncoder();

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) {
    const n = file.writeSync(bytes);
    bytes = bytes.subarray(n);
  }
}

/**
 * One line on stderr, made one line whatever it holds (oneLine() escapes
 * any control character a caller forgot to show()); a failure to write it
 * is not worth dying for
 */
export function printError(line: string): void {
  printErrorText(oneLine(line));
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
