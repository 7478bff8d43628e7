// The known byte sequences the two ends of the migrated connection exchange.
//
// A lost, repeated or shifted byte shows up at the first offset where it
// happens: the sequence never repeats within a block, and neighbouring blocks
// differ (a short repeating pattern could hide a shift by its period).
// Pure: no permissions needed.

/** Which way the bytes go; each direction has its own sequence */
export type Direction = "to-remote" | "to-passt";

const SEED: Record<Direction, number> = { "to-remote": 0x5a5a5a5a, "to-passt": 0xa5a5a5a5 };

/** A 32-bit mixing function (the finaliser of MurmurHash3) */
function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

// The stream is made of 64 KiB blocks: a fixed pseudo-random block XORed with
// a word derived from the block's number, so no two neighbouring blocks are
// equal and generating it costs one XOR per 4 bytes.
const BLOCK = 1 << 16;
const BASE = new Uint32Array(BLOCK / 4).map((_, i) => mix(i + 1));

function blockWord(direction: Direction, block: number): number {
  return mix(block ^ SEED[direction]) >>> 0;
}

/** `length` bytes of the stream in `direction`, starting at `offset` */
export function streamBytes(
  direction: Direction,
  offset: number,
  length: number,
): Uint8Array<ArrayBuffer> {
  const first = Math.floor(offset / BLOCK);
  const last = Math.floor((offset + length + BLOCK - 1) / BLOCK);
  const span = new Uint32Array(((last - first) * BLOCK) / 4);
  for (let b = first; b < last; b++) {
    const word = blockWord(direction, b);
    const at = ((b - first) * BLOCK) / 4;
    for (let i = 0; i < BASE.length; i++) span[at + i] = BASE[i]! ^ word;
  }
  const skip = offset - first * BLOCK;
  return new Uint8Array(span.buffer, skip, length);
}

/** Checks received bytes against the expected stream, in order */
export class StreamVerifier {
  /** Bytes received and checked so far */
  received = 0;
  /** The first offset that differed, or null while everything matched */
  firstMismatch: number | null = null;

  constructor(readonly direction: Direction) {}

  /** Checks the next `chunk` of the stream */
  accept(chunk: Uint8Array): void {
    if (this.firstMismatch === null) {
      const want = streamBytes(this.direction, this.received, chunk.length);
      for (let i = 0; i < chunk.length; i++) {
        if (chunk[i] !== want[i]) {
          this.firstMismatch = this.received + i;
          break;
        }
      }
    }
    this.received += chunk.length;
  }
}

/** Produces the stream in `direction` on demand, one chunk at a time */
export class StreamSource {
  /** Bytes asked for so far (the stream's length once everything is written) */
  requested = 0;
  /** Bytes handed out (taken by the kernel) so far */
  produced = 0;
  #chunk = new Uint8Array(0);
  #chunkStart = 0;

  /**
   * Chunks are large (generating one takes milliseconds) so that a burst
   * fills a socket in one go: the time between its first and last write
   * matters to the migration (see scenario.ts).
   */
  constructor(readonly direction: Direction, readonly chunkSize = 1 << 22) {}

  /** Bytes asked for and not yet taken */
  get pending(): number {
    return this.requested - this.produced;
  }

  /** The next bytes to write (empty when nothing is pending) */
  next(): Uint8Array {
    const want = Math.min(this.pending, this.chunkSize);
    const inChunk = this.produced - this.#chunkStart;
    if (inChunk < 0 || inChunk >= this.#chunk.length) {
      this.#chunk = streamBytes(this.direction, this.produced, want);
      this.#chunkStart = this.produced;
      return this.#chunk;
    }
    return this.#chunk.subarray(inChunk, Math.min(this.#chunk.length, inChunk + want));
  }

  /** Records that the kernel took `n` bytes of what next() returned */
  advance(n: number): void {
    this.produced += n;
  }
}
