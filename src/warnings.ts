// Warnings about entries skipped while waiting, bounded.
//
// A directory that anyone running the VM can write to may hold thousands of
// junk *.repair entries. One warning per entry would flood the log and, once
// a stderr pipe nobody reads is full, block the helper in write() while
// passt's real socket waits (docs/security.md). So each distinct reason is
// told once, with the first entry it concerned, and the rest only counted:
// the counts are told when the wait ends. Pure: the printing is passed in.

/** At most this many distinct reasons are told; further ones count as "other" */
export const MAX_REASONS = 16;

export class WarningBudget {
  readonly #emit: (text: string) => void;
  /** reason -> entries not told about */
  readonly #untold = new Map<string, number>();

  constructor(emit: (text: string) => void) {
    this.#emit = emit;
  }

  /**
   * Tells `text` if nothing was told yet for `reason` (a short description,
   * such as "not a socket"), else counts it.
   */
  warn(text: string, reason: string): void {
    const key = this.#untold.has(reason) || this.#untold.size < MAX_REASONS ? reason : "other";
    const untold = this.#untold.get(key);
    if (untold !== undefined) {
      this.#untold.set(key, untold + 1);
      return;
    }
    this.#untold.set(key, 0);
    this.#emit(key === reason ? text : `${text} (and entries skipped for other reasons)`);
  }

  /** The closing lines: one per reason for which entries went untold */
  summary(): string[] {
    const lines: string[] = [];
    for (const [reason, n] of this.#untold) {
      if (n > 0) lines.push(`skipped ${n} more entr${n === 1 ? "y" : "ies"}: ${reason}`);
    }
    return lines;
  }

  /** Tells the closing lines, once */
  flush(): void {
    for (const line of this.summary()) this.#emit(line);
    this.#untold.clear();
  }
}
