// Which directory entries are worth a connect() attempt, and when. Pure.
//
// In directory mode (and with --wait) every *.repair socket that appears is
// a candidate. One that refuses connections (bound, not listening yet, or
// stale) is retried with a growing pause, but never blocks the others: a new
// one is tried as soon as it appears, and each candidate has its own schedule. Sockets
// set aside (ambiguous at start, or served by someone who does not own
// them) are remembered by the file they are, not by their name, so renaming
// one does not bring it back (docs/directory-mode.md).

/** First and largest pause between attempts while passt has not listened yet */
export const BACKOFF_FIRST_MS = 1;
export const BACKOFF_MAX_MS = 100;
/**
 * At most this many candidates that refused are kept for another attempt;
 * beyond it, the one refusing longest is forgotten. A name never tried is
 * always taken on (it is tried at once, and dropped at once if it is not a
 * socket), so a flood can never keep a new socket from being tried.
 */
export const MAX_REFUSING = 1024;
/** Sockets set aside are remembered up to this many, the oldest forgotten first */
export const MAX_SET_ASIDE = 4096;
/** Each further this many pending candidates stretch the largest pause by BACKOFF_MAX_MS */
const CANDIDATES_PER_STEP = 64;

/** The next pause: doubles from BACKOFF_FIRST_MS up to `maxMs` */
export function nextBackoff(previousMs: number, maxMs = BACKOFF_MAX_MS): number {
  return Math.min(maxMs, Math.max(BACKOFF_FIRST_MS, previousMs * 2));
}

/** A name worth trying */
export interface Candidate {
  /** The name's bytes, as the directory holds it */
  readonly name: Uint8Array;
  /** Key of the name in the pending map */
  readonly key: string;
  /** Pause before the last retry, 0 before the first attempt */
  backoffMs: number;
  /** When (performance.now() ms) to try next */
  dueAt: number;
  /** Order of arrival: higher is newer */
  serial: number;
}

/** The bytes of a name as a map key (one char per byte) */
function keyOf(name: Uint8Array): string {
  return String.fromCharCode(...name);
}

export class CandidateSet {
  readonly #pending = new Map<string, Candidate>();
  readonly #setAside = new Set<string>();
  #serial = 0;
  /** Candidates that refused at least once */
  #refusing = 0;

  /** How many candidates wait for an attempt */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * Takes on `name`, due now (again, if it was already pending: it may be a
   * new socket under the old name)
   */
  add(name: Uint8Array, now: number): void {
    const key = keyOf(name);
    const known = this.#pending.get(key);
    if (known !== undefined) {
      if (known.backoffMs !== 0) this.#refusing--;
      known.dueAt = now;
      known.backoffMs = 0;
      known.serial = ++this.#serial;
      return;
    }
    this.#pending.set(key, { name, key, backoffMs: 0, dueAt: now, serial: ++this.#serial });
  }

  /** Stops trying `candidate` (it was used, or is not a usable socket) */
  drop(candidate: Candidate): void {
    if (this.#pending.delete(candidate.key) && candidate.backoffMs !== 0) this.#refusing--;
  }

  /**
   * Tries `candidate` again later, after a pause that grows with each
   * refusal. Returns the candidate forgotten to make room, if one was.
   */
  retryLater(candidate: Candidate, now: number): Candidate | null {
    if (candidate.backoffMs === 0) this.#refusing++;
    const steps = Math.max(1, Math.ceil(this.#refusing / CANDIDATES_PER_STEP));
    candidate.backoffMs = nextBackoff(candidate.backoffMs, BACKOFF_MAX_MS * steps);
    candidate.dueAt = now + candidate.backoffMs;
    if (this.#refusing <= MAX_REFUSING) return null;
    let oldest: Candidate | null = null;
    for (const c of this.#pending.values()) {
      if (c.backoffMs !== 0 && c !== candidate && (oldest === null || c.serial < oldest.serial)) {
        oldest = c;
      }
    }
    if (oldest !== null) this.drop(oldest);
    return oldest;
  }

  /**
   * Candidates due at `now`: those never tried first, in the order they
   * came, then those that refused before, newest first
   */
  due(now: number): Candidate[] {
    const due = [...this.#pending.values()].filter((c) => c.dueAt <= now);
    const fresh = due.filter((c) => c.backoffMs === 0).sort((a, b) => a.serial - b.serial);
    const again = due.filter((c) => c.backoffMs !== 0).sort((a, b) => b.serial - a.serial);
    return [...fresh, ...again];
  }

  /** Milliseconds until the next candidate is due (0 if one is), or null if none waits */
  nextDueIn(now: number): number | null {
    let next: number | null = null;
    for (const c of this.#pending.values()) {
      const wait = Math.max(0, c.dueAt - now);
      if (next === null || wait < next) next = wait;
    }
    return next;
  }

  /** Names of the pending candidates, oldest first */
  names(): Uint8Array[] {
    return [...this.#pending.values()].sort((a, b) => a.serial - b.serial).map((c) => c.name);
  }

  /** Never connects to the file `identity` (libc.statx()'s) again */
  setAside(identity: string): void {
    this.#setAside.add(identity);
    if (this.#setAside.size > MAX_SET_ASIDE) {
      // A Set iterates in insertion order: the first is the oldest
      this.#setAside.delete(this.#setAside.values().next().value!);
    }
  }

  isSetAside(identity: string): boolean {
    return this.#setAside.has(identity);
  }
}
