// Unit tests run with no permissions at all: that is the proof that the
// module under test is plain TypeScript with no native or file access.

/** Deno.test with every permission denied */
export function unit(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name, permissions: "none", fn });
}
